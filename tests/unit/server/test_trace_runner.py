"""Traces run slice by slice on the model thread: other calls run between slices, a passed deadline
stops the trace before its next slice, and one trace per model works while a few wait."""

from __future__ import annotations

import asyncio
import threading

import grpc
import pytest

from rnn_sentiment.server.errors import ServiceError
from rnn_sentiment.server.model_thread import ModelThread
from rnn_sentiment.server.trace_runner import SliceClock, TraceAdmission, run_slices_on


def counted_slices(ran: list[int], count: int):
    for index in range(count):
        ran.append(index)
        yield
    return "done"


def test_calls_queued_during_a_slice_run_before_the_next_slice() -> None:
    async def scenario() -> None:
        model_thread = ModelThread("test-model")
        order: list[str] = []
        gate = threading.Event()

        def slices():
            for index in range(3):
                gate.wait(10)
                order.append(f"slice {index}")
                yield
            return "traced"

        trace = asyncio.ensure_future(run_slices_on(model_thread, slices(), lambda: None, SliceClock()))
        await asyncio.sleep(0)  # the first slice is queued (and waits on the gate)
        predict = asyncio.ensure_future(model_thread.run(order.append, "predict"))
        await asyncio.sleep(0)
        gate.set()
        assert await trace == "traced"
        await predict
        assert order == ["slice 0", "predict", "slice 1", "slice 2"]
        model_thread.shutdown()

    asyncio.run(scenario())


def test_a_passed_deadline_stops_the_trace_before_its_next_slice() -> None:
    async def scenario() -> None:
        model_thread = ModelThread("test-model")
        ran: list[int] = []
        remaining = iter([10.0, 10.0, 0.0])  # seconds left before each slice: out after two
        clock = SliceClock()
        with pytest.raises(ServiceError) as raised:
            await run_slices_on(model_thread, counted_slices(ran, 100), lambda: next(remaining), clock)
        assert raised.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert ran == [0, 1] and clock.count == 2
        model_thread.shutdown()

    asyncio.run(scenario())


def test_one_trace_works_a_few_wait_and_the_rest_are_refused() -> None:
    async def scenario() -> None:
        admission = TraceAdmission(concurrent=1, waiting=1)
        release = asyncio.Event()
        entered: list[str] = []

        async def trace(name: str, timeout: float | None = None) -> None:
            async with admission.admitted(timeout):
                entered.append(name)
                await release.wait()

        first = asyncio.ensure_future(trace("first"))
        await asyncio.sleep(0)
        second = asyncio.ensure_future(trace("second"))  # waits for the slot
        await asyncio.sleep(0)
        with pytest.raises(ServiceError) as refused:
            await trace("third")
        assert refused.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert refused.value.retry_delay_seconds is not None  # RetryInfo tells the caller when
        assert entered == ["first"]
        release.set()
        await asyncio.gather(first, second)
        assert entered == ["first", "second"]

    asyncio.run(scenario())


def test_a_trace_whose_deadline_passes_while_waiting_gives_its_place_back() -> None:
    async def scenario() -> None:
        admission = TraceAdmission(concurrent=1, waiting=1)
        release = asyncio.Event()

        async def hold() -> None:
            async with admission.admitted(None):
                await release.wait()

        holder = asyncio.ensure_future(hold())
        await asyncio.sleep(0)
        with pytest.raises(ServiceError) as raised:
            async with admission.admitted(0.0):
                pass
        assert raised.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        release.set()
        await holder
        async with admission.admitted(0.5):  # both places free again
            pass

    asyncio.run(scenario())


def test_a_cancelled_trace_submits_no_further_slice() -> None:
    async def scenario() -> None:
        model_thread = ModelThread("test-model")
        ran: list[int] = []
        started, gate = threading.Event(), threading.Event()

        def slices():
            for index in range(100):
                started.set()
                gate.wait(10)
                ran.append(index)
                yield

        trace = asyncio.ensure_future(run_slices_on(model_thread, slices(), lambda: None, SliceClock()))
        await asyncio.to_thread(started.wait, 10)  # the first slice is on the thread, held by the gate
        trace.cancel()  # as gRPC does when the caller cancels
        gate.set()
        with pytest.raises(asyncio.CancelledError):
            await trace
        await model_thread.run(lambda: None)  # the thread has finished whatever it had
        assert ran == [0]
        model_thread.shutdown()

    asyncio.run(scenario())


def test_a_caller_cancelled_while_waiting_leaves_no_slot_taken() -> None:
    async def scenario() -> None:
        admission = TraceAdmission(concurrent=1, waiting=1)
        release = asyncio.Event()

        async def hold() -> None:
            async with admission.admitted(None):
                await release.wait()

        async def wait_forever() -> None:
            async with admission.admitted(None):
                await asyncio.Event().wait()

        holder = asyncio.ensure_future(hold())
        await asyncio.sleep(0)
        waiter = asyncio.ensure_future(wait_forever())  # queued for the slot
        await asyncio.sleep(0)
        waiter.cancel()  # the caller went away: its place in the queue and any slot it won go back
        release.set()  # wakes the queue as the cancellation lands
        await asyncio.gather(holder, waiter, return_exceptions=True)
        assert waiter.cancelled()
        async with admission.admitted(0.5):  # admitted: no slot leaked to the cancelled waiter
            pass

    asyncio.run(scenario())
