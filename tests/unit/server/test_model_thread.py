"""ModelThread: calls run one at a time, in order, off the event loop; results and errors come back;
calls whose caller left or whose deadline passed while queued never start."""

from __future__ import annotations

import asyncio
import threading
import time

import grpc
import pytest

from rnn_sentiment.server.errors import ServiceError
from rnn_sentiment.server.model_thread import ModelThread


def test_calls_run_in_order_on_one_other_thread() -> None:
    async def scenario() -> None:
        model_thread = ModelThread("test-model")
        seen: list[tuple[int, str]] = []

        def record(index: int) -> int:
            seen.append((index, threading.current_thread().name))
            return index * 10

        results = await asyncio.gather(*(model_thread.run(record, i) for i in range(20)))
        model_thread.shutdown()
        assert results == [i * 10 for i in range(20)]
        assert [index for index, _ in seen] == list(range(20))
        assert {name for _, name in seen} == {"test-model"}

    asyncio.run(scenario())


def test_an_error_reaches_its_caller_and_the_thread_goes_on() -> None:
    async def scenario() -> None:
        model_thread = ModelThread("test-model")

        def fail() -> None:
            raise ValueError("broken batch")

        with pytest.raises(ValueError, match="broken batch"):
            await model_thread.run(fail)
        assert await model_thread.run(lambda: "still serving") == "still serving"
        model_thread.shutdown()

    asyncio.run(scenario())


def test_a_cancelled_caller_does_not_stop_the_calls_behind_it() -> None:
    async def scenario() -> None:
        model_thread = ModelThread("test-model")
        started, release = threading.Event(), threading.Event()

        def hold() -> None:
            started.set()
            release.wait(10)

        first = asyncio.ensure_future(model_thread.run(hold))
        second = asyncio.ensure_future(model_thread.run(lambda: "second"))
        await asyncio.to_thread(started.wait, 10)  # the first call is on the model thread now
        first.cancel()
        release.set()
        assert await second == "second"
        with pytest.raises(asyncio.CancelledError):
            await first
        model_thread.shutdown()

    asyncio.run(scenario())


def test_shutdown_finishes_what_is_queued_then_refuses_new_calls() -> None:
    async def scenario() -> None:
        model_thread = ModelThread("test-model")
        release = threading.Event()
        done: list[int] = []
        pending = [asyncio.ensure_future(model_thread.run(lambda i=i: release.wait(10) and done.append(i)))
                   for i in range(3)]
        await asyncio.sleep(0)  # one loop turn: the three calls are queued (the first one blocked)
        stopping = asyncio.ensure_future(asyncio.to_thread(model_thread.shutdown))
        await asyncio.sleep(0.05)
        assert not stopping.done()  # shutdown blocks while calls are queued
        release.set()
        await stopping
        assert done == [0, 1, 2]  # ...and returns only once they have run
        await asyncio.gather(*pending)
        with pytest.raises(RuntimeError, match="shut down"):
            await model_thread.run(lambda: None)

    asyncio.run(scenario())


def test_a_queued_call_whose_caller_cancelled_is_never_started() -> None:
    async def scenario() -> None:
        model_thread = ModelThread("test-model")
        started, release = threading.Event(), threading.Event()
        ran: list[str] = []

        def hold() -> None:
            started.set()
            release.wait(10)

        first = asyncio.ensure_future(model_thread.run(hold))
        await asyncio.to_thread(started.wait, 10)  # the model thread is busy with `hold`
        abandoned = asyncio.ensure_future(model_thread.run(ran.append, "abandoned"))
        await asyncio.sleep(0)  # queued behind `hold`
        abandoned.cancel()
        await asyncio.sleep(0)
        release.set()
        assert await model_thread.run(ran.append, "next") is None
        await first
        assert ran == ["next"]
        model_thread.shutdown()

    asyncio.run(scenario())


def test_a_queued_call_whose_deadline_passed_is_never_started() -> None:
    async def scenario() -> None:
        model_thread = ModelThread("test-model")
        started, release = threading.Event(), threading.Event()
        ran: list[str] = []

        def hold() -> None:
            started.set()
            release.wait(10)

        first = asyncio.ensure_future(model_thread.run(hold))
        await asyncio.to_thread(started.wait, 10)
        # Its deadline is now: by the time the thread is free of `hold`, it has passed.
        expired = asyncio.ensure_future(model_thread.run(ran.append, "expired", deadline=time.monotonic()))
        alive = asyncio.ensure_future(model_thread.run(ran.append, "alive", deadline=time.monotonic() + 3600))
        await asyncio.sleep(0)
        release.set()
        with pytest.raises(ServiceError) as raised:
            await expired
        assert raised.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        await alive
        await first
        assert ran == ["alive"]
        model_thread.shutdown()

    asyncio.run(scenario())
