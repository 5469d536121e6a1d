"""The gRPC options behind `--max-connection-age-seconds`, `--max-connection-age-grace-seconds` and
`--keepalive-seconds` (docs/configuration.md): seconds on the command line, milliseconds in gRPC,
0 turning each off. tests/integration/test_workers.py watches real connections age out."""

from __future__ import annotations

from dataclasses import replace

from rnn_sentiment.server.config import ServerConfig
from rnn_sentiment.server.connections import grpc_server_options


def _options(**knobs: float) -> dict[str, int]:
    return dict(grpc_server_options(replace(ServerConfig(), **knobs)))


def test_each_knob_reaches_grpc_in_milliseconds_with_the_documented_20_s_ping_timeout() -> None:
    assert _options(max_connection_age_seconds=30.0, max_connection_age_grace_seconds=10.0,
                    keepalive_seconds=60.0) == {
        "grpc.max_connection_age_ms": 30_000,
        "grpc.max_connection_age_grace_ms": 10_000,
        "grpc.keepalive_time_ms": 60_000,
        "grpc.keepalive_timeout_ms": 20_000,
    }


def test_fractions_of_a_second_are_kept() -> None:
    assert _options(max_connection_age_seconds=1.5, max_connection_age_grace_seconds=0.25,
                    keepalive_seconds=2.5) == {
        "grpc.max_connection_age_ms": 1_500,
        "grpc.max_connection_age_grace_ms": 250,
        "grpc.keepalive_time_ms": 2_500,
        "grpc.keepalive_timeout_ms": 20_000,
    }


def test_zero_turns_each_off_alone() -> None:
    no_age = _options(max_connection_age_seconds=0.0, keepalive_seconds=60.0)
    assert set(no_age) == {"grpc.keepalive_time_ms", "grpc.keepalive_timeout_ms"}
    no_keepalive = _options(max_connection_age_seconds=30.0, keepalive_seconds=0.0)
    assert set(no_keepalive) == {"grpc.max_connection_age_ms", "grpc.max_connection_age_grace_ms"}
    assert _options(max_connection_age_seconds=0.0, keepalive_seconds=0.0) == {}
