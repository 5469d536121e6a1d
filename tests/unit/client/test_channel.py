"""The SDK's channel settings: arguments over RNN_SENTIMENT_* variables, TLS files, token, retries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rnn_sentiment.client.channel import DEFAULT_RETRY_POLICY, RetryPolicy, channel_settings
from tests.certificates import CertificateAuthority


def _option(settings, name):  # type: ignore[no-untyped-def]
    return dict(settings.options).get(name)


def test_plaintext_with_the_default_retry_policy_by_default() -> None:
    settings = channel_settings(environ={})
    assert settings.credentials is None and settings.metadata == ()
    assert _option(settings, "grpc.enable_retries") == 1
    policy = json.loads(_option(settings, "grpc.service_config"))["methodConfig"][0]["retryPolicy"]
    assert policy["retryableStatusCodes"] == ["UNAVAILABLE"]  # never RESOURCE_EXHAUSTED by default
    assert policy["maxAttempts"] == DEFAULT_RETRY_POLICY.max_attempts


def test_retries_can_be_turned_off_or_replaced() -> None:
    off = channel_settings(retry=False, environ={})
    assert _option(off, "grpc.enable_retries") == 0 and _option(off, "grpc.service_config") is None
    assert _option(channel_settings(environ={"RNN_SENTIMENT_RETRY": "false"}), "grpc.enable_retries") == 0
    custom = channel_settings(retry=RetryPolicy(max_attempts=2), environ={})
    assert json.loads(_option(custom, "grpc.service_config"))["methodConfig"][0]["retryPolicy"]["maxAttempts"] == 2
    # A caller's own service config wins.
    own = channel_settings(options=[("grpc.service_config", "{}")], environ={})
    assert [v for k, v in own.options if k == "grpc.service_config"] == ["{}"]


def test_token_becomes_bearer_metadata_from_argument_or_environment() -> None:
    assert channel_settings(token="abc", environ={}).metadata == (("authorization", "Bearer abc"),)
    assert channel_settings(environ={"RNN_SENTIMENT_TOKEN": "xyz"}).metadata == (("authorization", "Bearer xyz"),)
    # An argument beats the variable; an empty argument means "no token".
    assert channel_settings(token="", environ={"RNN_SENTIMENT_TOKEN": "xyz"}).metadata == ()
    with_id = channel_settings(token="t", metadata=[("x-request-id", "1")], environ={})
    assert with_id.metadata == (("x-request-id", "1"), ("authorization", "Bearer t"))


def test_tls_from_arguments_and_environment(tmp_path: Path) -> None:
    ca = CertificateAuthority.create(tmp_path)
    client = ca.issue(tmp_path, "client", client=True)
    assert channel_settings(root_ca=ca.cert, environ={}).credentials is not None
    assert channel_settings(tls=True, environ={}).credentials is not None  # the system's roots
    from_env = channel_settings(environ={
        "RNN_SENTIMENT_TLS_CA": str(ca.cert), "RNN_SENTIMENT_TLS_CLIENT_CERT": str(client.cert),
        "RNN_SENTIMENT_TLS_CLIENT_KEY": str(client.key), "RNN_SENTIMENT_TLS_SERVER_NAME": "rnn.internal",
    })
    assert from_env.credentials is not None
    assert _option(from_env, "grpc.ssl_target_name_override") == "rnn.internal"


def test_unusable_tls_settings_name_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="root_ca .*missing.pem"):
        channel_settings(root_ca=tmp_path / "missing.pem", environ={})
    with pytest.raises(ValueError, match="client_cert and client_key go together"):
        channel_settings(client_cert=tmp_path / "c.pem", environ={})
    with pytest.raises(ValueError, match="RNN_SENTIMENT_TLS='maybe'"):
        channel_settings(environ={"RNN_SENTIMENT_TLS": "maybe"})
