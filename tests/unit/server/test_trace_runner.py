"""Traces run slice by slice on the model thread: other calls run between slices, a passed deadline
stops the trace before its next slice, and one trace per model works while a few wait."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Coroutine, Generator, TypeVar

import grpc
import pytest

from rnn_sentiment.server.errors import ServiceError
from rnn_sentiment.server.model_thread import ModelThread
from rnn_sentiment.server.trace_runner import UNPAUSED_SECONDS, SliceClock, TraceAdmission, run_slices_on


T = TypeVar("T")
LIMIT_SECONDS = 20.0  # far above any scenario here, far below the per-test timeout


def run_limited(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run, failing after LIMIT_SECONDS: a caller whose answer is lost fails the test at
    once instead of hanging it."""
    return asyncio.run(asyncio.wait_for(main, LIMIT_SECONDS))


def counted_slices(ran: list[int], count: int):
    for index in range(count):
        ran.append(index)
        yield
    return "done"


def timed_slices(count: int, seconds: float, spans: list[tuple[float, float]]) -> Generator[None, None, str]:
    """A trace of `count` slices, each busy `seconds` on the model thread, its span recorded in `spans`."""
    for _ in range(count):
        started = time.monotonic()
        time.sleep(seconds)
        spans.append((started, time.monotonic()))
        yield
    return "traced"


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

    run_limited(scenario())


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

    run_limited(scenario())


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

    run_limited(scenario())


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

    run_limited(scenario())


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

    run_limited(scenario())


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

    run_limited(scenario())


def test_a_trace_past_its_deadline_is_told_how_to_fit() -> None:
    async def scenario() -> None:
        model_thread = ModelThread("test-model")
        ran: list[int] = []
        with pytest.raises(ServiceError) as raised:
            await run_slices_on(model_thread, counted_slices(ran, 10), lambda: 0.0, SliceClock())
        assert raised.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        # The caller learns the trace was stopped and what would make it fit.
        assert "stopped" in raised.value.message and "longer deadline" in raised.value.message
        assert ran == []
        model_thread.shutdown()

    run_limited(scenario())


def test_by_default_one_trace_works_four_wait_and_the_next_is_refused() -> None:
    """README: RESOURCE_EXHAUSTED when "a Trace finds one trace running and 4 waiting on its model"."""

    async def scenario() -> None:
        admission = TraceAdmission()
        release = asyncio.Event()
        entered: list[int] = []

        async def trace(index: int) -> None:
            async with admission.admitted(None):
                entered.append(index)
                await release.wait()

        traces = []
        for index in range(5):
            traces.append(asyncio.ensure_future(trace(index)))
            await asyncio.sleep(0)
        assert entered == [0]  # one at work, four waiting
        with pytest.raises(ServiceError) as refused:
            await trace(5)
        assert refused.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "4 more waiting (limit 4)" in refused.value.message
        release.set()
        await asyncio.gather(*traces)
        assert entered == [0, 1, 2, 3, 4]

    run_limited(scenario())


def test_a_waiter_that_gave_up_frees_its_place_in_the_queue() -> None:
    async def scenario() -> None:
        admission = TraceAdmission(concurrent=1, waiting=1)
        release = asyncio.Event()
        entered: list[str] = []

        async def trace(name: str, timeout: float | None) -> None:
            async with admission.admitted(timeout):
                entered.append(name)
                await release.wait()

        holder = asyncio.ensure_future(trace("holder", None))
        await asyncio.sleep(0)
        with pytest.raises(ServiceError) as late:
            await trace("impatient", 0.01)  # waits, then its deadline passes
        assert late.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        patient = asyncio.ensure_future(trace("patient", None))  # the one waiting place is free again
        await asyncio.sleep(0)
        with pytest.raises(ServiceError) as full:  # and taken again: the limit still holds
            await trace("one too many", None)
        assert full.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        release.set()
        await asyncio.gather(holder, patient)
        assert entered == ["holder", "patient"]

    run_limited(scenario())


def test_a_heavy_trace_pauses_as_long_as_each_slice_took() -> None:
    """After UNPAUSED_SECONDS of slices, a trace waits as long as each slice took before the
    next: it takes at most half of the model thread (docs/reliability.md)."""
    slice_seconds = 0.08
    spans: list[tuple[float, float]] = []

    slices = timed_slices(4, slice_seconds, spans)

    async def scenario() -> SliceClock:
        model_thread = ModelThread("test-model")
        clock = SliceClock()
        assert await run_slices_on(model_thread, slices, lambda: None, clock) == "traced"
        model_thread.shutdown()
        return clock

    clock = run_limited(scenario())
    busy = [end - start for start, end in spans]
    gaps = [spans[i + 1][0] - spans[i][1] for i in range(len(spans) - 1)]
    ratios = [gap / took for took, gap in zip(busy, gaps)]
    # A pause never ends early; a loaded machine can only make one late, so the closest pause
    # shows the factor: as long as the slice, not twice as long.
    assert min(ratios) >= 0.9, f"paused {ratios} times as long as the slices took"
    assert min(ratios) < 1.6, f"paused {ratios} times as long as the slices took"
    # The clock holds the model-thread time (Trace's rnn_sentiment_model_seconds{kind="trace"}).
    assert clock.count == 5  # four slices and the call that found the trace finished
    assert sum(busy) <= clock.total < sum(busy) + 1.0


async def _one_trace_at_a_time(admission: TraceAdmission) -> None:
    """Exactly one slot: a trace gets in, and a second one beside it waits (here: times out)."""
    async with admission.admitted(1.0):
        with pytest.raises(ServiceError) as second:
            async with admission.admitted(0.01):
                pass
        assert second.value.code == grpc.StatusCode.DEADLINE_EXCEEDED


def test_a_waiter_cancelled_at_any_moment_of_its_wake_up_leaves_exactly_one_slot() -> None:
    # The slot is handed to the waiter over a few loop turns; a cancellation landing at any of
    # them must neither keep the slot (no trace ever runs again) nor give back one it never got
    # (two traces at once).
    async def scenario(turns: int) -> None:
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
        waiter = asyncio.ensure_future(wait_forever())
        await asyncio.sleep(0)
        release.set()
        for _ in range(turns):
            await asyncio.sleep(0)
        waiter.cancel()
        await asyncio.gather(holder, waiter, return_exceptions=True)
        await _one_trace_at_a_time(admission)

    for turns in range(8):
        run_limited(scenario(turns))


def test_a_waiter_whose_deadline_ends_as_the_slot_frees_leaves_exactly_one_slot() -> None:
    async def scenario(turns: int) -> None:
        admission = TraceAdmission(concurrent=1, waiting=1)
        release = asyncio.Event()

        async def hold() -> None:
            async with admission.admitted(None):
                await release.wait()

        async def wait_briefly() -> None:
            async with admission.admitted(0.0):
                await asyncio.Event().wait()  # if it got in, it never leaves: no slot for others

        holder = asyncio.ensure_future(hold())
        await asyncio.sleep(0)
        waiter = asyncio.ensure_future(wait_briefly())
        for _ in range(turns):
            await asyncio.sleep(0)
        release.set()
        await holder
        done, _ = await asyncio.wait((waiter,), timeout=0.05)
        if done:  # it timed out: DEADLINE_EXCEEDED, and the slot is free
            assert isinstance(waiter.exception(), ServiceError)
            await _one_trace_at_a_time(admission)
        else:  # it got the slot before its deadline was noticed
            waiter.cancel()
            await asyncio.gather(waiter, return_exceptions=True)
            await _one_trace_at_a_time(admission)

    for turns in range(6):
        run_limited(scenario(turns))


def test_a_light_trace_runs_its_slices_back_to_back() -> None:
    """Light traces (all slices together under UNPAUSED_SECONDS) are never paused, whatever the
    pause factor: a 20-word trace answers in milliseconds (docs/reliability.md)."""
    spans: list[tuple[float, float]] = []

    slices = timed_slices(2, 0.002, spans)  # two slices far below UNPAUSED_SECONDS together

    async def scenario() -> SliceClock:
        model_thread = ModelThread("test-model")
        clock = SliceClock()
        # A factor this large would pause a second after each slice: any pause shows.
        assert await run_slices_on(model_thread, slices, lambda: None, clock,
                                   pause_per_slice_second=500.0) == "traced"
        model_thread.shutdown()
        return clock

    clock = run_limited(scenario())
    assert clock.total < UNPAUSED_SECONDS, "the slices themselves were too slow for this test"
    gap = spans[1][0] - spans[0][1]
    assert gap < 0.5, f"a light trace was paused {gap:.3f} s between its slices"


def test_a_trace_with_time_left_runs_to_its_result() -> None:
    """Only a passed deadline stops a trace: with half a second left, every slice runs."""

    async def scenario() -> None:
        model_thread = ModelThread("test-model")
        ran: list[int] = []
        clock = SliceClock()
        assert await run_slices_on(model_thread, counted_slices(ran, 3), lambda: 0.5, clock) == "done"
        assert ran == [0, 1, 2] and clock.count == 4
        model_thread.shutdown()

    run_limited(scenario())
