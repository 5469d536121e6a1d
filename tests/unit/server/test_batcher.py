"""MicroBatcher with a real (pure-Python) batch function on a real thread."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Coroutine, TypeVar

import grpc
import pytest

from rnn_sentiment.server.batcher import MicroBatcher
from rnn_sentiment.server.metrics import ServerMetrics
from rnn_sentiment.server.model_thread import ModelThread
from rnn_sentiment.server.errors import ServiceError


T = TypeVar("T")
LIMIT_SECONDS = 20.0  # far above any scenario here, far below the per-test timeout


def run_limited(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run, failing after LIMIT_SECONDS: a caller whose answer is lost fails the test at
    once instead of hanging it."""
    return asyncio.run(asyncio.wait_for(main, LIMIT_SECONDS))


class Recorder:
    """Doubles numbers, records batch sizes, and can hold a batch until released."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = threading.Event()
        self.release.set()
        self.started = threading.Event()

    def __call__(self, items: list[int]) -> list[int]:
        self.started.set()
        self.release.wait(10)
        self.batches.append(list(items))
        if any(i < 0 for i in items):
            raise RuntimeError("negative input")
        return [2 * i for i in items]


def _batcher(recorder: Recorder, **kwargs: object) -> MicroBatcher[int, int]:
    options = {"max_batch_size": 4, "max_queue": 100, **kwargs}
    return MicroBatcher(recorder, ModelThread("test-model"), **options)  # type: ignore[arg-type]


def test_idle_batcher_runs_a_lone_request_at_once_and_keeps_order() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        batcher = _batcher(recorder)
        batcher.start()
        assert await batcher.submit([1, 2, 3]) == [2, 4, 6]
        await batcher.close()
        assert recorder.batches == [[1, 2, 3]]

    run_limited(scenario())


def test_an_idle_batcher_answers_a_lone_text_without_waiting() -> None:
    """Adaptive by default: no wait for a batch to fill, one loop turn only (server/batcher.py)."""

    async def scenario() -> list[float]:
        batcher = _batcher(Recorder())
        batcher.start()
        took = []
        for item in range(3):
            began = time.monotonic()
            assert await batcher.submit([item]) == [2 * item]
            took.append(time.monotonic() - began)
        await batcher.close()
        return took

    took = run_limited(scenario())
    assert min(took) < 0.5, f"a lone text took {took} s"


def test_a_text_one_loop_turn_behind_joins_the_idle_batch() -> None:
    """gRPC wakes handlers a few awaits apart; the batcher gives them one turn of the loop."""

    async def scenario() -> None:
        recorder = Recorder()
        batcher = _batcher(recorder)
        batcher.start()
        await asyncio.sleep(0)  # the batcher is now idle, waiting for work

        async def one_turn_behind() -> list[int]:
            await asyncio.sleep(0)
            return await batcher.submit([2])

        results = await asyncio.gather(batcher.submit([1]), one_turn_behind())
        await batcher.close()
        assert results == [[2], [4]]
        assert recorder.batches == [[1, 2]]

    run_limited(scenario())


def test_arrivals_during_a_forward_pass_form_the_next_batch() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        recorder.release.clear()
        batcher = _batcher(recorder, max_batch_size=4)
        batcher.start()
        first = asyncio.ensure_future(batcher.submit([0]))
        await asyncio.to_thread(recorder.started.wait, 10)  # the model is now busy with [0]
        rest = [asyncio.ensure_future(batcher.submit([i])) for i in range(1, 7)]
        await asyncio.sleep(0)
        recorder.release.set()
        assert await first == [0]
        assert [await r for r in rest] == [[2 * i] for i in range(1, 7)]
        await batcher.close()
        # [0] alone, then the six waiting texts in batches of at most four, in arrival order.
        assert recorder.batches == [[0], [1, 2, 3, 4], [5, 6]]

    run_limited(scenario())


def test_a_full_queue_is_resource_exhausted() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        recorder.release.clear()
        batcher = _batcher(recorder, max_queue=3)
        batcher.start()
        busy = asyncio.ensure_future(batcher.submit([1]))
        await asyncio.to_thread(recorder.started.wait, 10)
        waiting = asyncio.ensure_future(batcher.submit([2, 3, 4]))
        await asyncio.sleep(0)
        with pytest.raises(ServiceError) as raised:
            await batcher.submit([5])
        assert raised.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        recorder.release.set()
        assert await busy == [2] and await waiting == [4, 6, 8]
        await batcher.close()

    run_limited(scenario())


def test_expired_requests_are_dropped_before_compute() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        recorder.release.clear()
        batcher = _batcher(recorder)
        batcher.start()
        busy = asyncio.ensure_future(batcher.submit([1]))
        await asyncio.to_thread(recorder.started.wait, 10)
        expired = asyncio.ensure_future(batcher.submit([7], timeout=0.0))
        await asyncio.sleep(0.01)
        recorder.release.set()
        with pytest.raises(ServiceError) as raised:
            await expired
        assert raised.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert await busy == [2]
        await batcher.close()
        assert [7] not in recorder.batches and all(7 not in b for b in recorder.batches)

    run_limited(scenario())


def test_cancelled_callers_are_not_computed() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        recorder.release.clear()
        batcher = _batcher(recorder)
        batcher.start()
        busy = asyncio.ensure_future(batcher.submit([1]))
        await asyncio.to_thread(recorder.started.wait, 10)
        cancelled = asyncio.ensure_future(batcher.submit([9, 9]))
        await asyncio.sleep(0)
        cancelled.cancel()
        await asyncio.sleep(0)
        recorder.release.set()
        await busy
        await batcher.close()
        assert all(9 not in b for b in recorder.batches)

    run_limited(scenario())


def test_a_failing_batch_fails_its_callers_and_the_batcher_keeps_going() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        batcher = _batcher(recorder)
        batcher.start()
        with pytest.raises(RuntimeError, match="negative input"):
            await batcher.submit([-1])
        assert await batcher.submit([5]) == [10]
        await batcher.close()

    run_limited(scenario())


def test_batch_delay_collects_requests_that_arrive_while_idle() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        batcher = _batcher(recorder, max_batch_size=3, max_batch_delay=5.0)
        batcher.start()
        # Three arrivals fill the batch, which then runs without waiting out the 5 s delay.
        results = await asyncio.wait_for(asyncio.gather(*(batcher.submit([i]) for i in (1, 2, 3))), 4.0)
        assert results == [[2], [4], [6]]
        await batcher.close()
        assert recorder.batches == [[1, 2, 3]]

    run_limited(scenario())


def test_a_text_with_time_left_is_computed() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        batcher = _batcher(recorder)
        batcher.start()
        assert await batcher.submit([3], timeout=30.0) == [6]
        assert await batcher.submit([4, 5], timeout=30.0) == [8, 10]
        await batcher.close()

    run_limited(scenario())


def test_batch_delay_waits_for_texts_arriving_later_but_no_longer_than_the_delay() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        batcher = _batcher(recorder, max_batch_size=4, max_batch_delay=0.4)
        batcher.start()
        started = time.monotonic()

        async def later(item: int) -> list[int]:
            await asyncio.sleep(0.05)
            return await batcher.submit([item])

        # The batch never fills: it runs once the delay is up, with both texts in it.
        results = await asyncio.wait_for(asyncio.gather(batcher.submit([1]), later(2)), 10.0)
        waited = time.monotonic() - started
        await batcher.close()
        assert results == [[2], [4]]
        assert recorder.batches == [[1, 2]]
        assert 0.3 <= waited < 5.0

    run_limited(scenario())


def test_close_finishes_the_queued_texts_then_refuses_new_ones() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        recorder.release.clear()
        batcher = _batcher(recorder, max_batch_size=2)
        batcher.start()
        busy = asyncio.ensure_future(batcher.submit([1]))
        await asyncio.to_thread(recorder.started.wait, 10)
        queued = [asyncio.ensure_future(batcher.submit([i])) for i in (2, 3, 4)]
        await asyncio.sleep(0)
        closing = asyncio.ensure_future(batcher.close())
        await asyncio.sleep(0)
        recorder.release.set()
        await asyncio.wait_for(closing, 10.0)
        # close() returned only once every queued text had its answer.
        assert busy.done() and all(q.done() for q in queued)
        assert [q.result() for q in queued] == [[4], [6], [8]]
        assert recorder.batches == [[1], [2, 3], [4]]
        with pytest.raises(RuntimeError, match="closed"):
            await batcher.submit([5])

    run_limited(scenario())


def test_close_does_not_wait_out_the_batch_delay() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        batcher = _batcher(recorder, max_batch_size=4, max_batch_delay=3600.0)
        batcher.start()
        lone = asyncio.ensure_future(batcher.submit([1]))
        await asyncio.sleep(0.01)  # the batcher waits for company
        await asyncio.wait_for(batcher.close(), 10.0)
        assert lone.result() == [2]

    run_limited(scenario())


def test_a_failed_request_frees_its_texts_still_queued() -> None:
    """A three-text request split over two batches: the first batch fails, so its third text
    (waiting for the next batch) is never computed: the caller already has its error."""

    async def scenario() -> None:
        recorder = Recorder()
        batcher = _batcher(recorder, max_batch_size=2, max_batch_delay=3600.0)
        batcher.start()
        with pytest.raises(RuntimeError, match="negative input"):
            await asyncio.wait_for(batcher.submit([-1, 2, 3]), 10.0)
        await asyncio.wait_for(batcher.close(), 10.0)
        assert recorder.batches == [[-1, 2]]

    run_limited(scenario())


@pytest.mark.parametrize("dropped", ["cancelled", "expired"])
def test_a_dropped_text_does_not_split_the_batch_around_it(dropped: str) -> None:
    async def scenario() -> None:
        recorder = Recorder()
        recorder.release.clear()
        batcher = _batcher(recorder, max_batch_size=4)
        batcher.start()
        busy = asyncio.ensure_future(batcher.submit([1]))
        await asyncio.to_thread(recorder.started.wait, 10)
        before = asyncio.ensure_future(batcher.submit([2]))
        gone = asyncio.ensure_future(batcher.submit([9], timeout=0.0 if dropped == "expired" else None))
        after = asyncio.ensure_future(batcher.submit([3]))
        await asyncio.sleep(0.01)
        if dropped == "cancelled":
            gone.cancel()
        recorder.release.set()
        assert await before == [4] and await after == [6]
        await asyncio.gather(busy, gone, return_exceptions=True)
        await batcher.close()
        assert recorder.batches == [[1], [2, 3]]

    run_limited(scenario())


def _sample(metrics: ServerMetrics, name: str, **labels: str) -> float:
    metrics.buffer.flush()
    value = metrics.registry.get_sample_value(name, {"model": "tiny", **labels})
    return 0.0 if value is None else value


def test_queue_batch_and_model_metrics_follow_the_batches() -> None:
    """rnn_sentiment_queue_depth, _queue_seconds, _batch_size and _model_seconds{kind="predict"}:
    what the operator's dashboard reads about the model queue."""

    async def scenario() -> None:
        metrics = ServerMetrics.create()
        recorder = Recorder()
        recorder.release.clear()
        batcher = MicroBatcher(recorder, ModelThread("test-model"), max_batch_size=4, max_queue=100,  # type: ignore[arg-type]
                               metrics=metrics.for_model("tiny", ["negative", "positive"]))
        batcher.start()
        busy = asyncio.ensure_future(batcher.submit([1]))
        await asyncio.to_thread(recorder.started.wait, 10)
        waiting = asyncio.ensure_future(batcher.submit([2, 3, 4]))
        await asyncio.sleep(0)
        assert _sample(metrics, "rnn_sentiment_queue_depth") == 3  # three texts wait behind the busy batch
        await asyncio.sleep(0.2)
        recorder.release.set()
        assert await busy == [2] and await waiting == [4, 6, 8]
        await batcher.close()
        assert _sample(metrics, "rnn_sentiment_queue_depth") == 0
        # Two forward passes: one text, then three.
        assert _sample(metrics, "rnn_sentiment_batch_size_count") == 2
        assert _sample(metrics, "rnn_sentiment_batch_size_sum") == 4
        # Each text's wait is counted once; the three behind the busy batch waited 0.2 s or more.
        assert _sample(metrics, "rnn_sentiment_queue_seconds_count") == 4
        assert 0.6 <= _sample(metrics, "rnn_sentiment_queue_seconds_sum") < 20
        # Model time per pass; the first pass was held 0.2 s or more.
        assert _sample(metrics, "rnn_sentiment_model_seconds_count", kind="predict") == 2
        assert 0.2 <= _sample(metrics, "rnn_sentiment_model_seconds_sum", kind="predict") < 20

    run_limited(scenario())


def test_a_failed_pass_is_timed_too() -> None:
    async def scenario() -> None:
        metrics = ServerMetrics.create()
        batcher = MicroBatcher(Recorder(), ModelThread("test-model"), max_batch_size=4, max_queue=100,  # type: ignore[arg-type]
                               metrics=metrics.for_model("tiny", ["negative", "positive"]))
        batcher.start()
        with pytest.raises(RuntimeError):
            await batcher.submit([-1])
        await batcher.close()
        assert _sample(metrics, "rnn_sentiment_model_seconds_count", kind="predict") == 1
        assert _sample(metrics, "rnn_sentiment_batch_size_count") == 1

    run_limited(scenario())


def test_a_batch_function_that_miscounts_fails_its_callers_and_the_batcher_goes_on() -> None:
    """A run_batch returning fewer results than texts is a model error for that batch's callers
    only: later calls are still answered (the loop must not die and strand them)."""

    class DropsTheLastOfThree(Recorder):
        def __call__(self, items: list[int]) -> list[int]:
            doubled = super().__call__(items)
            return doubled[:-1] if len(items) == 3 else doubled

    async def scenario() -> None:
        batcher = _batcher(DropsTheLastOfThree())
        batcher.start()
        with pytest.raises(ValueError):
            await batcher.submit([1, 2, 3])
        assert await batcher.submit([4]) == [8]
        await batcher.close()

    run_limited(scenario())


def test_an_empty_submission_is_answered_with_no_results_and_computes_nothing() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        batcher = _batcher(recorder)
        batcher.start()
        assert await batcher.submit([]) == []
        assert await batcher.submit([1]) == [2]
        await batcher.close()
        assert recorder.batches == [[1]]

    run_limited(scenario())


def test_depth_counts_the_texts_waiting_for_the_model() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        recorder.release.clear()
        batcher = _batcher(recorder)
        batcher.start()
        assert batcher.depth == 0
        busy = asyncio.ensure_future(batcher.submit([1]))
        await asyncio.to_thread(recorder.started.wait, 10)
        waiting = asyncio.ensure_future(batcher.submit([2, 3, 4]))
        await asyncio.sleep(0)
        assert batcher.depth == 3  # behind the busy batch
        recorder.release.set()
        assert await busy == [2] and await waiting == [4, 6, 8]
        assert batcher.depth == 0
        await batcher.close()

    run_limited(scenario())


def test_the_limits_are_keyword_only_so_they_cannot_be_swapped_by_position() -> None:
    with pytest.raises(TypeError):
        MicroBatcher(Recorder(), ModelThread("test-model"), 4, 100)  # type: ignore[misc]


def test_a_batch_delay_already_over_adds_no_turn_of_the_loop() -> None:
    """A delay shorter than the batcher's own step is over before it looks: the batch goes at
    once, as with no delay, and a text two loop turns behind forms the next batch."""

    async def scenario() -> None:
        recorder = Recorder()
        batcher = _batcher(recorder, max_batch_delay=1e-9)
        batcher.start()
        await asyncio.sleep(0)  # the batcher is now idle, waiting for work

        async def two_turns_behind() -> list[int]:
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            return await batcher.submit([2])

        results = await asyncio.gather(batcher.submit([1]), two_turns_behind())
        await batcher.close()
        assert results == [[2], [4]]
        assert recorder.batches == [[1], [2]]

    run_limited(scenario())


def test_a_batch_that_fills_while_the_delay_runs_goes_at_once() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        batcher = _batcher(recorder, max_batch_size=2, max_batch_delay=3600.0)
        batcher.start()
        first = asyncio.ensure_future(batcher.submit([1]))
        await asyncio.sleep(0.01)  # the batcher waits for company
        assert not first.done()
        # The second text fills the batch: both are answered long before the hour is up.
        assert await asyncio.wait_for(batcher.submit([2]), 10.0) == [4]
        assert await first == [2]
        await batcher.close()
        assert recorder.batches == [[1, 2]]

    run_limited(scenario())
