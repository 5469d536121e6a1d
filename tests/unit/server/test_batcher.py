"""MicroBatcher with a real (pure-Python) batch function on a real thread."""

from __future__ import annotations

import asyncio
import threading

import grpc
import pytest

from rnn_sentiment.server.batcher import MicroBatcher
from rnn_sentiment.server.model_thread import ModelThread
from rnn_sentiment.server.errors import ServiceError


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

    asyncio.run(scenario())


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

    asyncio.run(scenario())


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

    asyncio.run(scenario())


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

    asyncio.run(scenario())


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

    asyncio.run(scenario())


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

    asyncio.run(scenario())


def test_a_failing_batch_fails_its_callers_and_the_batcher_keeps_going() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        batcher = _batcher(recorder)
        batcher.start()
        with pytest.raises(RuntimeError, match="negative input"):
            await batcher.submit([-1])
        assert await batcher.submit([5]) == [10]
        await batcher.close()

    asyncio.run(scenario())


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

    asyncio.run(scenario())
