"""The signal state machine (server/lifecycle.py), phase by phase: the phases without real
signals, stopped() with real ones in a child process (tests/integration/test_signals.py sends
them to real servers)."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys

import pytest

from rnn_sentiment.server.lifecycle import Lifecycle, Phase


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


# stopped() is run in a child process: its signals are real, and a SIGTERM whose default action
# was restored kills that child, not pytest.
_STOPPED_THEN_SIGNALLED = """
import asyncio, json, os, signal, sys
from rnn_sentiment.server.event_loop import run
from rnn_sentiment.server.lifecycle import HANDLED_SIGNALS, Lifecycle

seen = {}

async def main() -> None:
    loop = asyncio.get_running_loop()
    lifecycle = Lifecycle("server")
    lifecycle.install(loop)
    lifecycle.stopped()
    seen["phase"] = lifecycle.phase.value
    seen["ignored"] = [signal.getsignal(sig) == signal.SIG_IGN for sig in HANDLED_SIGNALS]
    for sig in HANDLED_SIGNALS:
        os.kill(os.getpid(), sig)
    await asyncio.sleep(0.05)
    if sys.argv[1] == "uvloop":
        # True: the loop still holds its handler, so it never restored SIG_DFL in between.
        seen["loop_kept_its_handlers"] = [loop.remove_signal_handler(sig) for sig in HANDLED_SIGNALS]

run(main(), sys.argv[1])  # as the server runs: asyncio.run or uvloop.run
if sys.argv[1] == "asyncio":  # the loop is closed now: nothing it did on closing may matter
    for sig in HANDLED_SIGNALS:
        os.kill(os.getpid(), sig)
print(json.dumps(seen))
"""


def _stopped_then_signalled(loop: str) -> dict:
    child = subprocess.run([sys.executable, "-c", _STOPPED_THEN_SIGNALLED, loop],
                           capture_output=True, text=True, timeout=60)
    assert child.returncode == 0, (child.returncode, child.stderr)
    return json.loads(child.stdout)


def test_stopped_on_asyncio_loop_ignores_the_signals_even_after_the_loop_closes() -> None:
    """asyncio's loop restores SIG_DFL on closing for every handler it still holds: stopped()
    takes them from it, so a SIGTERM after the close is ignored, not fatal."""
    seen = _stopped_then_signalled("asyncio")
    assert seen == {"phase": "stopped", "ignored": [True, True, True]}


def test_stopped_on_uvloop_ignores_the_signals_without_removing_the_loop_handlers() -> None:
    """Removing a loop's handler restores SIG_DFL for a moment (a SIGTERM in it killed the
    process): on uvloop SIG_IGN replaces the handler directly, the loop keeps its registration."""
    pytest.importorskip("uvloop")
    seen = _stopped_then_signalled("uvloop")
    assert seen == {"phase": "stopped", "ignored": [True, True, True], "loop_kept_its_handlers": [True, True, True]}
