"""The SDK's channel settings: arguments over RNN_SENTIMENT_* variables, TLS files, token, retries."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import grpc
import pytest

from rnn_sentiment.client.channel import DEFAULT_RETRY_POLICY, OVERLOAD_RETRY_POLICY, RetryPolicy, channel_settings
from rnn_sentiment.client.targets import KEEPALIVE_OPTIONS
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


def _retry_policy(settings):  # type: ignore[no-untyped-def]
    config = json.loads(_option(settings, "grpc.service_config"))["methodConfig"][0]
    return config["name"], config["retryPolicy"]


def test_the_default_policy_is_the_documented_one_and_covers_our_service_and_health_checks() -> None:
    # docs/sdk.md: up to 5 attempts, random waits up to 0.1 s, x2 each, at most 2 s; UNAVAILABLE only.
    names, policy = _retry_policy(channel_settings(environ={}))
    assert policy == {"maxAttempts": 5, "initialBackoff": "0.1s", "maxBackoff": "2.0s", "backoffMultiplier": 2.0,
                      "retryableStatusCodes": ["UNAVAILABLE"]}
    assert names == [{"service": "rnn_sentiment.v1.SentimentService"},
                     {"service": "grpc.health.v1.Health", "method": "Check"}]
    _, overload = _retry_policy(channel_settings(retry=OVERLOAD_RETRY_POLICY, environ={}))
    assert overload == {**policy, "retryableStatusCodes": ["UNAVAILABLE", "RESOURCE_EXHAUSTED"]}


def test_the_shared_default_policies_cannot_be_changed_by_one_caller() -> None:
    # Every client built afterwards reads DEFAULT_RETRY_POLICY: an assignment must fail, not leak.
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULT_RETRY_POLICY.max_attempts = 1  # type: ignore[misc]
    assert {DEFAULT_RETRY_POLICY, RetryPolicy()} == {RetryPolicy()}  # values, usable as keys


@pytest.mark.parametrize("word, on", [("1", True), ("true", True), (" Yes ", True), ("ON", True),
                                      ("0", False), ("false", False), ("no", False), ("off", False)])
def test_the_retry_variable_accepts_the_usual_spellings(word: str, on: bool) -> None:
    settings = channel_settings(environ={"RNN_SENTIMENT_RETRY": word})
    assert _option(settings, "grpc.enable_retries") == (1 if on else 0)
    assert (_option(settings, "grpc.service_config") is not None) is on
    # The argument beats the variable, both ways.
    assert _option(channel_settings(retry=not on, environ={"RNN_SENTIMENT_RETRY": word}),
                   "grpc.enable_retries") == (0 if on else 1)


def test_retry_true_means_the_default_policy() -> None:
    assert channel_settings(retry=True, environ={}).options == channel_settings(environ={}).options
    assert _retry_policy(channel_settings(retry=True, environ={}))[1]["maxAttempts"] == 5


def test_a_callers_own_channel_options_win_over_the_sdks() -> None:
    own = [("grpc.enable_retries", 0), ("grpc.keepalive_time_ms", 1000)]
    options = channel_settings(options=own, environ={}).options
    for name, value in own:
        assert [v for k, v in options if k == name] == [value]  # given once, as the caller gave it
    # The keepalive settings the caller did not give keep the SDK's values.
    assert dict(options)["grpc.keepalive_timeout_ms"] == dict(KEEPALIVE_OPTIONS)["grpc.keepalive_timeout_ms"]
    assert all(name in dict(channel_settings(environ={}).options) for name, _ in KEEPALIVE_OPTIONS)


def test_given_credentials_are_used_as_they_are_and_tls_false_is_plaintext(tmp_path: Path) -> None:
    ca = CertificateAuthority.create(tmp_path)
    credentials = grpc.ssl_channel_credentials(root_certificates=ca.cert.read_bytes())
    assert channel_settings(credentials=credentials, environ={}).credentials is credentials
    assert channel_settings(credentials=credentials, tls=True, environ={}).credentials is credentials
    assert channel_settings(tls=False, environ={"RNN_SENTIMENT_TLS": "true"}).credentials is None
    assert channel_settings(environ={"RNN_SENTIMENT_TLS": "false"}).credentials is None
    with pytest.raises(ValueError, match="tls=False contradicts root_ca/client_cert"):
        channel_settings(tls=False, root_ca=ca.cert, environ={})
    client = ca.issue(tmp_path, "client", client=True)
    with pytest.raises(ValueError, match="tls=False contradicts"):
        channel_settings(tls=False, client_cert=client.cert, client_key=client.key, environ={})


def test_an_unreadable_tls_file_is_named_with_the_systems_reason(tmp_path: Path) -> None:
    # The message a caller reads: the setting, the path, and why, without Python's "[Errno 2]".
    missing = tmp_path / "missing.pem"
    with pytest.raises(ValueError) as raised:
        channel_settings(root_ca=missing, environ={})
    assert str(raised.value) == f"root_ca {str(missing)!r}: No such file or directory"
    with pytest.raises(ValueError) as raised:
        channel_settings(client_cert=tmp_path, client_key=tmp_path, environ={})  # a folder, not a file
    assert str(raised.value) == f"client_key {str(tmp_path)!r}: Is a directory"


def test_the_sdks_keepalive_is_the_documented_one_a_default_server_accepts() -> None:
    """docs/sdk.md: pings every 5 minutes (`grpc.keepalive_time_ms` 300000), only while calls are
    open, dropped after 20 s unanswered: a default gRPC server answers more frequent pings with
    GOAWAY ("too_many_pings")."""
    assert dict(KEEPALIVE_OPTIONS) == {"grpc.keepalive_time_ms": 300_000, "grpc.keepalive_timeout_ms": 20_000,
                                       "grpc.keepalive_permit_without_calls": 0}
