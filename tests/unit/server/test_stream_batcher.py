"""StreamBatcher on a real tiny model and a real model thread (StreamRegistry: test_stream_sessions.py)."""

from __future__ import annotations

import asyncio
import gc
import time
import weakref
from typing import Any, Coroutine, TypeVar

import pytest

from rnn_sentiment.model.checkpoint import load_checkpoint
from rnn_sentiment.model.streaming import StreamStepper, make_stream_stepper
from rnn_sentiment.server.metrics import ServerMetrics
from rnn_sentiment.server.model_thread import ModelThread
from rnn_sentiment.server.stream_batcher import StreamBatcher
from tests.support import write_untrained_checkpoint


T = TypeVar("T")
LIMIT_SECONDS = 20.0  # far above any scenario here, far below the per-test timeout


def run_limited(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run, failing after LIMIT_SECONDS: a caller whose answer is lost fails the test at
    once instead of hanging it."""
    return asyncio.run(asyncio.wait_for(main, LIMIT_SECONDS))


WORDS = [["a", "good"], ["film"], ["not", "bad", "."], ["a"], [","], ["bad", "film", "good"]]


class RecordingStepper:
    """The real stepper; remembers how many sessions each call advanced."""

    def __init__(self, stepper: StreamStepper) -> None:
        self.stepper = stepper
        self.calls: list[int] = []

    def start(self):
        return self.stepper.start()

    def advance(self, states, chunks, want_steps):
        self.calls.append(len(states))
        return self.stepper.advance(states, chunks, want_steps)


@pytest.fixture(scope="module")
def stepper(tmp_path_factory: pytest.TempPathFactory) -> StreamStepper:
    directory = write_untrained_checkpoint(tmp_path_factory.mktemp("m") / "tiny", "tiny", "1")
    return make_stream_stepper(load_checkpoint(directory), "torch", 1)


def make_batcher(stepper: StreamStepper, max_batch: int = 256,
                 gather_seconds: float = 0.0) -> tuple[StreamBatcher, RecordingStepper, ModelThread]:
    metrics = ServerMetrics.create()
    recording = RecordingStepper(stepper)
    thread = ModelThread("test-model")
    histogram = metrics.buffer.histogram(metrics.model_seconds.labels("tiny", "stream"))
    batcher = StreamBatcher(recording, thread, histogram, max_batch=max_batch,  # type: ignore[arg-type]
                            gather_seconds=gather_seconds)
    return batcher, recording, thread


@pytest.mark.parametrize("max_batch, expected_calls", [(256, [len(WORDS)]), (4, [4, 2])])
def test_chunks_ready_together_advance_in_one_model_thread_call(stepper, max_batch, expected_calls) -> None:
    batcher, recording, thread = make_batcher(stepper, max_batch)

    async def main():
        states = [batcher.start_state() for _ in WORDS]
        return await asyncio.gather(*(batcher.advance(s, w, False) for s, w in zip(states, WORDS)))

    try:
        answers = run_limited(main())
    finally:
        thread.shutdown()
    assert recording.calls == expected_calls
    for words, (state, result) in zip(WORDS, answers):
        ((alone_state, alone), ) = stepper.advance([stepper.start()], [words], [False])
        assert result.prediction.probabilities == pytest.approx(alone.prediction.probabilities, abs=1e-6)
        assert state.tokens_read == len(words)


def test_chunks_arriving_within_the_gather_window_share_one_call(stepper) -> None:
    # Streams' words arrive spread over time, not in one loop turn: without the window each of
    # these would be a model-thread call of its own.
    batcher, recording, thread = make_batcher(stepper, gather_seconds=0.5)

    async def main():
        start = batcher.start_state()
        first = asyncio.ensure_future(batcher.advance(start, ["a"], False))
        for _ in range(5):  # a few loop turns later
            await asyncio.sleep(0)
        second = asyncio.ensure_future(batcher.advance(start, ["good"], False))
        for _ in range(5):
            await asyncio.sleep(0)
        third = asyncio.ensure_future(batcher.advance(start, ["film"], False))
        return await asyncio.gather(first, second, third)

    try:
        answers = run_limited(main())
    finally:
        thread.shutdown()
    assert recording.calls == [3]
    assert [state.tokens_read for state, _ in answers] == [1, 1, 1]


def test_a_full_batch_does_not_wait_out_the_gather_window(stepper) -> None:
    batcher, recording, thread = make_batcher(stepper, max_batch=4, gather_seconds=3600.0)

    async def main():
        start = batcher.start_state()
        # wait_for gives up long before the window would end: only a batch that does not wait passes
        return await asyncio.wait_for(asyncio.gather(*(batcher.advance(start, ["a"], False) for _ in range(4))), 60)

    try:
        run_limited(main())
    finally:
        thread.shutdown()
    assert recording.calls == [4]


def test_a_cancelled_chunk_does_not_stop_the_others(stepper) -> None:
    batcher, recording, thread = make_batcher(stepper)

    async def main():
        start = batcher.start_state()
        cancelled = asyncio.ensure_future(batcher.advance(start, ["a"], False))
        kept = asyncio.ensure_future(batcher.advance(start, ["good"], True))
        await asyncio.sleep(0)
        cancelled.cancel()
        return await kept

    try:
        state, result = run_limited(main())
    finally:
        thread.shutdown()
    assert recording.calls == [1]
    assert [step.token for step in result.steps] == ["good"]


def test_a_batcher_does_not_keep_a_retired_model_thread_alive(stepper) -> None:
    # The server caches batchers by model thread (weakly): a batcher holding its thread would
    # keep every retired version's model and stream executor in memory after a hot reload.
    batcher, _, thread = make_batcher(stepper)
    thread.shutdown()
    retired = weakref.ref(thread)
    del thread
    gc.collect()
    assert retired() is None
    assert batcher.stepper is not None


def make_default_batcher(stepper) -> tuple[StreamBatcher, RecordingStepper, ModelThread, ServerMetrics]:
    """As the server builds it (server/stream_sentiment.py): the documented defaults."""
    metrics = ServerMetrics.create()
    recording = RecordingStepper(stepper)
    thread = ModelThread("test-model")
    histogram = metrics.buffer.histogram(metrics.model_seconds.labels("tiny", "stream"))
    return StreamBatcher(recording, thread, histogram), recording, thread, metrics  # type: ignore[arg-type]


def test_by_default_a_batch_holds_256_streams_and_a_full_one_does_not_wait(stepper) -> None:
    """docs/streaming.md: "a full batch (256 streams) never waits"; a lone chunk waits at most 3 ms."""
    batcher, recording, thread, _ = make_default_batcher(stepper)

    async def main() -> float:
        start = batcher.start_state()
        await asyncio.gather(*(batcher.advance(start, ["a"], False) for _ in range(257)))
        began = time.monotonic()
        await batcher.advance(start, ["good"], False)
        return time.monotonic() - began

    try:
        lone = run_limited(main())
    finally:
        thread.shutdown()
    assert recording.calls == [256, 1, 1]
    assert lone < 0.5, f"a lone chunk took {lone:.3f} s"


def test_by_default_chunks_a_few_loop_turns_apart_share_a_call(stepper) -> None:
    # Without the gather window each would be a call of its own. Three tries: the window is 3 ms
    # of wall clock, which a loaded machine can take from a few loop turns now and then.
    batcher, recording, thread, _ = make_default_batcher(stepper)

    async def pair() -> None:
        start = batcher.start_state()
        first = asyncio.ensure_future(batcher.advance(start, ["a"], False))
        for _ in range(3):
            await asyncio.sleep(0)
        await asyncio.gather(first, batcher.advance(start, ["good"], False))

    async def main() -> None:
        for _ in range(3):
            await pair()

    try:
        run_limited(main())
    finally:
        thread.shutdown()
    assert 2 in recording.calls, f"calls {recording.calls}"


class FailingStepper(RecordingStepper):
    """The real stepper, except that a chunk holding "boom" fails the whole call."""

    def advance(self, states, chunks, want_steps):
        self.calls.append(len(states))
        if any("boom" in chunk for chunk in chunks):
            raise ValueError("model call failed")
        return self.stepper.advance(states, chunks, want_steps)


def test_a_failed_call_fails_every_stream_in_it_and_the_next_call_runs(stepper) -> None:
    metrics = ServerMetrics.create()
    failing = FailingStepper(stepper)
    thread = ModelThread("test-model")
    histogram = metrics.buffer.histogram(metrics.model_seconds.labels("tiny", "stream"))
    batcher = StreamBatcher(failing, thread, histogram, gather_seconds=0.0)  # type: ignore[arg-type]

    async def main():
        start = batcher.start_state()
        failed = await asyncio.gather(batcher.advance(start, ["boom"], False), batcher.advance(start, ["a"], False),
                                      return_exceptions=True)
        after = await batcher.advance(start, ["good"], False)
        return failed, after

    try:
        failed, (state, _) = run_limited(main())
    finally:
        thread.shutdown()
    assert failing.calls == [2, 1]
    assert all(isinstance(error, ValueError) and "model call failed" in str(error) for error in failed)
    assert state.tokens_read == 1
    metrics.buffer.flush()
    # Both calls are timed, the failed one too: rnn_sentiment_model_seconds{kind="stream"}.
    labels = {"model": "tiny", "kind": "stream"}
    assert metrics.registry.get_sample_value("rnn_sentiment_model_seconds_count", labels) == 2
    assert 0 < metrics.registry.get_sample_value("rnn_sentiment_model_seconds_sum", labels) < 10


def test_a_retired_model_version_fails_its_streams_chunks(stepper) -> None:
    batcher, _, thread = make_batcher(stepper)
    thread.shutdown()
    del thread
    gc.collect()

    async def main():
        return await batcher.advance(batcher.start_state(), ["a"], False)

    with pytest.raises(RuntimeError, match="retired"):
        run_limited(main())


class DropsTheLastOfThree(RecordingStepper):
    """A stepper whose call for three sessions answers only two."""

    def advance(self, states, chunks, want_steps):
        answers = super().advance(states, chunks, want_steps)
        return answers[:-1] if len(states) == 3 else answers


def test_a_call_that_miscounts_fails_its_streams_and_the_queue_goes_on(stepper) -> None:
    """A model call answering fewer sessions than it was given is a model error for that call's
    streams, every one of them: none is left waiting for an answer, and chunks queued behind the
    call are still advanced (the runner must not die and strand them)."""
    metrics = ServerMetrics.create()
    miscounting = DropsTheLastOfThree(stepper)
    thread = ModelThread("test-model")
    histogram = metrics.buffer.histogram(metrics.model_seconds.labels("tiny", "stream"))
    batcher = StreamBatcher(miscounting, thread, histogram, gather_seconds=0.0)  # type: ignore[arg-type]

    async def main():
        start = batcher.start_state()
        three = asyncio.gather(*(batcher.advance(start, [word], False) for word in ("a", "good", "film")),
                               return_exceptions=True)
        while not miscounting.calls:  # the runner took the three in one call
            await asyncio.sleep(0.001)
        behind = asyncio.ensure_future(batcher.advance(start, ["bad"], False))  # queued behind it
        return await three, await behind

    try:
        failed, (state, _) = run_limited(main())
    finally:
        thread.shutdown()
    assert all(isinstance(error, ValueError) for error in failed), failed
    assert state.tokens_read == 1
    assert miscounting.calls[0] == 3
