"""The signal state machine (server/lifecycle.py), phase by phase, without sending real signals
(tests/integration/test_signals.py sends them to real servers)."""

from __future__ import annotations

import asyncio
import signal

import pytest

from rnn_sentiment.server.lifecycle import Lifecycle, Phase
from rnn_sentiment.server.restart_backoff import RestartBackoff


def test_sighup_reloads_only_while_serving_and_stop_signals_drain_once() -> None:
    async def scenario() -> None:
        reloads: list[int] = []
        lifecycle = Lifecycle("server")
        lifecycle.handle(signal.SIGHUP)  # loading: ignored
        assert lifecycle.phase is Phase.LOADING and not lifecycle.drain_requested.is_set()
        lifecycle.serving(on_hangup=lambda: reloads.append(1))
        lifecycle.handle(signal.SIGHUP)
        assert reloads == [1]
        lifecycle.handle(signal.SIGTERM)
        assert lifecycle.phase is Phase.DRAINING and lifecycle.drain_requested.is_set()
        lifecycle.handle(signal.SIGHUP)  # draining: ignored
        lifecycle.handle(signal.SIGINT)  # already draining: ignored
        assert reloads == [1] and lifecycle.phase is Phase.DRAINING

    asyncio.run(scenario())


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_while_loading_drains_and_serving_comes_too_late(sig: int) -> None:
    async def scenario() -> None:
        lifecycle = Lifecycle("server")
        lifecycle.handle(sig)
        lifecycle.serving(on_hangup=lambda: pytest.fail("no reload once draining"))
        assert lifecycle.phase is Phase.DRAINING
        lifecycle.handle(signal.SIGHUP)

    asyncio.run(scenario())


def test_restart_backoff_doubles_to_its_cap_and_resets_after_a_healthy_run() -> None:
    backoff = RestartBackoff(initial_seconds=0.5, max_seconds=4.0, healthy_after_seconds=60.0)
    assert [backoff.delay_after_crash(ran_seconds=1.0) for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert backoff.delay_after_crash(ran_seconds=61.0) == 0.5  # it had run healthily
    assert backoff.delay_after_crash(ran_seconds=1.0) == 1.0
    for _ in range(10_000):  # forever, never an overflow
        assert backoff.delay_after_crash(ran_seconds=0.0) <= 4.0
