"""The channel targets and default channel options predict_many's callers get (client/targets.py)."""

from __future__ import annotations

import doctest

import pytest

from rnn_sentiment.client import SentimentClient, predict_many, targets
from rnn_sentiment.client.channel import channel_settings
from rnn_sentiment.client.targets import channel_target


def test_the_modules_examples_hold() -> None:
    for module in (targets, predict_many):
        assert doctest.testmod(module).failed == 0


def test_several_addresses_become_one_round_robin_target() -> None:
    v6 = channel_target(["[::1]:1", "[::1]:2"])
    assert v6.target == "ipv6:[::1]:1,[::1]:2" and dict(v6.options)["grpc.lb_policy_name"] == "round_robin"
    assert channel_target(["127.0.0.1:1"]).target == "127.0.0.1:1"
    with pytest.raises(ValueError, match="dns:///"):
        channel_target(["replica-a:50051", "replica-b:50051"])
    with pytest.raises(ValueError, match="one family"):
        channel_target(["127.0.0.1:1", "[::1]:2"])
    with pytest.raises(ValueError, match="no target"):
        channel_target([])


def test_channels_get_keepalive_a_default_server_accepts_unless_overridden() -> None:
    options = dict(channel_settings(environ={}).options)
    # Below 5 minutes a default gRPC server answers pings with GOAWAY too_many_pings.
    assert options["grpc.keepalive_time_ms"] >= 300_000 and options["grpc.keepalive_permit_without_calls"] == 0
    own = dict(channel_settings(options=[("grpc.keepalive_time_ms", 600_000)], environ={}).options)
    assert own["grpc.keepalive_time_ms"] == 600_000


def test_a_client_reports_the_target_it_connects_to() -> None:
    with SentimentClient(["127.0.0.1:1", "127.0.0.1:2"]) as client:
        assert client.target == "ipv4:127.0.0.1:1,127.0.0.1:2"
