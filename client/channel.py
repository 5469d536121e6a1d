"""How the SDK's channels are secured and retried: TLS, mutual TLS, a bearer token, a retry policy.

Every setting comes from an argument or, when the argument is left out, from an environment
variable, so a deployed caller is configured without code:

| argument        | environment variable             | meaning                                            |
| --------------- | -------------------------------- | -------------------------------------------------- |
| `tls`           | `RNN_SENTIMENT_TLS` (true/false) | TLS with the system's root CAs                     |
| `root_ca`       | `RNN_SENTIMENT_TLS_CA`           | PEM file of the CA that signed the server (TLS on) |
| `client_cert`   | `RNN_SENTIMENT_TLS_CLIENT_CERT`  | PEM client certificate, for mutual TLS (TLS on)    |
| `client_key`    | `RNN_SENTIMENT_TLS_CLIENT_KEY`   | its PEM private key                                |
| `server_name`   | `RNN_SENTIMENT_TLS_SERVER_NAME`  | the name to verify the server's certificate for    |
| `token`         | `RNN_SENTIMENT_TOKEN`            | bearer token, sent as `authorization: Bearer ...`  |
| `retry`         | `RNN_SENTIMENT_RETRY` (true/false) | the default retry policy (on)                    |
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import grpc

from .targets import KEEPALIVE_OPTIONS

ENV_TLS = "RNN_SENTIMENT_TLS"
ENV_TLS_CA = "RNN_SENTIMENT_TLS_CA"
ENV_TLS_CLIENT_CERT = "RNN_SENTIMENT_TLS_CLIENT_CERT"
ENV_TLS_CLIENT_KEY = "RNN_SENTIMENT_TLS_CLIENT_KEY"
ENV_TLS_SERVER_NAME = "RNN_SENTIMENT_TLS_SERVER_NAME"
ENV_TOKEN = "RNN_SENTIMENT_TOKEN"
ENV_RETRY = "RNN_SENTIMENT_RETRY"

SENTIMENT_SERVICE = "rnn_sentiment.v1.SentimentService"
HEALTH_SERVICE = "grpc.health.v1.Health"


@dataclass(frozen=True)
class RetryPolicy:
    """gRPC's own retries (the channel's service config), for calls the server did not run.

    UNAVAILABLE means the call was not run (a replica starting, draining or gone), so every
    method is safe to retry on it; all four of ours are read-only besides. RESOURCE_EXHAUSTED
    is left out: retrying an overloaded server at once adds load; its RetryInfo says when.
    """

    # The first try and four retries: gRPC's most. Behind a round-robin balancer each retry may
    # land on the draining replica again; five tries make that 1 in 32 during a drain window.
    max_attempts: int = 5
    initial_backoff_seconds: float = 0.1
    max_backoff_seconds: float = 2.0
    backoff_multiplier: float = 2.0   # each wait is random up to the current backoff (gRPC's jitter)
    retryable_codes: tuple[str, ...] = ("UNAVAILABLE",)

    def service_config(self) -> str:
        """The JSON service config naming our service and health checks."""
        return json.dumps({
            "methodConfig": [{
                "name": [{"service": SENTIMENT_SERVICE}, {"service": HEALTH_SERVICE, "method": "Check"}],
                "retryPolicy": {
                    "maxAttempts": self.max_attempts,
                    "initialBackoff": f"{self.initial_backoff_seconds}s",
                    "maxBackoff": f"{self.max_backoff_seconds}s",
                    "backoffMultiplier": self.backoff_multiplier,
                    "retryableStatusCodes": list(self.retryable_codes),
                },
            }],
        })


DEFAULT_RETRY_POLICY = RetryPolicy()
# Opt-in: also retry calls refused for overload. The server's RESOURCE_EXHAUSTED carries RetryInfo
# and its `grpc-retry-pushback-ms` twin, and gRPC waits exactly that long before the retry.
OVERLOAD_RETRY_POLICY = RetryPolicy(retryable_codes=("UNAVAILABLE", "RESOURCE_EXHAUSTED"))


@dataclass(frozen=True)
class ChannelSettings:
    """What a client's channel needs: credentials (None: plaintext), options, per-call metadata."""

    credentials: grpc.ChannelCredentials | None
    options: tuple[tuple[str, Any], ...]
    metadata: tuple[tuple[str, str], ...]


def _env_flag(environ: Mapping[str, str], name: str) -> bool | None:
    raw = environ.get(name, "").strip().lower()
    if not raw:
        return None
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name}={raw!r}: expected true or false")


def _read_pem(path: str | Path | None, what: str) -> bytes | None:
    if not path:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise ValueError(f"{what} {str(path)!r}: {error.strerror or error}") from None


def channel_settings(
    *,
    credentials: grpc.ChannelCredentials | None = None,
    tls: bool | None = None,
    root_ca: str | Path | None = None,
    client_cert: str | Path | None = None,
    client_key: str | Path | None = None,
    server_name: str | None = None,
    token: str | None = None,
    retry: bool | RetryPolicy | None = None,
    metadata: Sequence[tuple[str, str]] = (),
    options: Sequence[tuple[str, Any]] = (),
    environ: Mapping[str, str] | None = None,
) -> ChannelSettings:
    """Resolve arguments (or, for those left None, the environment variables) into settings.

    Raises ValueError naming the setting when a file cannot be read or a pair is incomplete.
    """
    environ = os.environ if environ is None else environ
    root_ca = root_ca if root_ca is not None else environ.get(ENV_TLS_CA) or None
    client_cert = client_cert if client_cert is not None else environ.get(ENV_TLS_CLIENT_CERT) or None
    client_key = client_key if client_key is not None else environ.get(ENV_TLS_CLIENT_KEY) or None
    server_name = server_name if server_name is not None else environ.get(ENV_TLS_SERVER_NAME, "")
    token = token if token is not None else environ.get(ENV_TOKEN, "")
    tls = tls if tls is not None else _env_flag(environ, ENV_TLS)
    retry = retry if retry is not None else _env_flag(environ, ENV_RETRY)

    if bool(client_cert) != bool(client_key):
        raise ValueError("client_cert and client_key go together (mutual TLS needs both)")
    if tls is False and (root_ca or client_cert):
        raise ValueError("tls=False contradicts root_ca/client_cert: drop one")
    if credentials is None and (tls or root_ca or client_cert):
        credentials = grpc.ssl_channel_credentials(
            root_certificates=_read_pem(root_ca, "root_ca"),
            private_key=_read_pem(client_key, "client_key"),
            certificate_chain=_read_pem(client_cert, "client_cert"),
        )

    channel_options = list(options)
    if server_name:
        channel_options.append(("grpc.ssl_target_name_override", server_name))
    policy = DEFAULT_RETRY_POLICY if retry is None or retry is True else retry or None
    given = {name for name, _ in channel_options}
    if policy is not None and "grpc.service_config" not in given:
        channel_options.append(("grpc.service_config", policy.service_config()))
    if "grpc.enable_retries" not in given:
        channel_options.append(("grpc.enable_retries", 1 if policy is not None else 0))
    channel_options += [(name, value) for name, value in KEEPALIVE_OPTIONS if name not in given]

    call_metadata = list(metadata)
    if token:
        # Metadata rather than call credentials, which gRPC refuses to send without TLS: a
        # caller beside the server (loopback, a sidecar) may use a plaintext channel.
        call_metadata.append(("authorization", f"Bearer {token}"))
    return ChannelSettings(credentials, tuple(channel_options), tuple(call_metadata))
