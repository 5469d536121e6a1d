"""The registry of open StreamSentiment streams (server/stream_sessions.py) on a real event loop:
admission, the idle timer, the ends the registry gives a stream (idle, drain, `end`) against a
caller's cancel, and the gauges a stream moves. The streams' model work is in
tests/integration/test_stream_sentiment.py."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import weakref
from typing import Any, AsyncIterator, Coroutine, TypeVar

import grpc
import pytest

from rnn_sentiment.server.config import ServerConfig
from rnn_sentiment.server.errors import ServiceError, invalid_argument, unavailable
from rnn_sentiment.server.metrics import ServerMetrics
from rnn_sentiment.server.stream_sessions import StreamLimits, StreamRegistry, StreamSession

T = TypeVar("T")
LIMIT_SECONDS = 10.0  # far above any scenario here: a stream that is never ended fails the test


def run_limited(main: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(main, LIMIT_SECONDS))


async def silent() -> AsyncIterator[str]:
    """A caller that keeps its stream open and sends nothing."""
    await asyncio.Event().wait()
    yield ""


async def every(seconds: float, count: int) -> AsyncIterator[str]:
    for index in range(count):
        await asyncio.sleep(seconds)
        yield str(index)


async def sent(*messages: str) -> AsyncIterator[str]:
    for message in messages:
        yield message


def gauge(metrics: ServerMetrics, name: str, model: str) -> float | None:
    return metrics.registry.get_sample_value(name, {"model": model})


def test_the_default_limits_are_the_servers_defaults() -> None:
    config = ServerConfig()
    assert StreamLimits() == StreamLimits(config.max_streams, config.stream_idle_seconds, config.max_stream_tokens,
                                          config.max_text_chars)


def test_limits_cannot_change_once_made() -> None:
    limits = StreamLimits()
    with pytest.raises(dataclasses.FrozenInstanceError):
        limits.max_streams = 1  # type: ignore[misc]


def test_the_registry_refuses_past_the_limit_and_frees_a_slot_on_leaving() -> None:
    registry = StreamRegistry(StreamLimits(max_streams=2), ServerMetrics.create())
    with registry.session(), registry.session():
        assert registry.open_count == 2
        with pytest.raises(ServiceError) as refused:
            with registry.session():
                pass
        assert refused.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "2 streams open" in refused.value.message and "--max-streams 2" in refused.value.message
    assert registry.open_count == 0
    with registry.session():
        assert registry.open_count == 1


def test_a_stream_reads_its_messages_then_none_at_half_close() -> None:
    registry = StreamRegistry(StreamLimits(), ServerMetrics.create())

    async def main() -> list[str | None]:
        messages = sent("a", "b")
        with registry.session() as session:
            return [await session.next_message(messages, 60) for _ in range(3)]

    assert run_limited(main()) == ["a", "b", None]


def test_an_idle_stream_ends_with_deadline_exceeded_naming_the_flag() -> None:
    registry = StreamRegistry(StreamLimits(), ServerMetrics.create())

    async def main() -> ServiceError:
        with registry.session() as session:
            with pytest.raises(ServiceError) as ended:
                await session.next_message(silent(), 0.05)
        return ended.value

    error = run_limited(main())
    assert error.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "idle for 0.05 s" in error.message and "--stream-idle-seconds" in error.message


def test_no_idle_limit_means_a_silent_stream_stays_open() -> None:
    registry = StreamRegistry(StreamLimits(), ServerMetrics.create())

    async def main() -> None:
        with registry.session() as session:
            waiting = asyncio.ensure_future(session.next_message(silent(), 0))
            done, _ = await asyncio.wait([waiting], timeout=0.2)
            assert not done  # 0: never idle
            session.end(unavailable("over"))
            with pytest.raises(ServiceError):
                await waiting

    run_limited(main())


def test_a_stream_that_keeps_sending_outlives_its_idle_timeout() -> None:
    # One idle timer per session, re-armed while messages keep coming: only a silent wait ends it.
    registry = StreamRegistry(StreamLimits(), ServerMetrics.create())

    async def main() -> list[str | None]:
        received: list[str | None] = []
        with registry.session() as session:
            messages = every(0.05, 20)  # 1 s in all, against an idle timeout of 0.3 s
            while (message := await session.next_message(messages, 0.3)) is not None:
                received.append(message)
        return received

    assert run_limited(main()) == [str(i) for i in range(20)]


def test_the_idle_time_is_the_wait_for_a_message_not_the_time_spent_answering() -> None:
    # Answering a message longer than the idle timeout is not idleness; a wait after it is timed from its start.
    registry = StreamRegistry(StreamLimits(), ServerMetrics.create())

    async def main() -> ServiceError:
        with registry.session() as session:
            messages = every(0.05, 2)
            assert await session.next_message(messages, 0.2) == "0"
            await asyncio.sleep(0.5)  # answering: the timer finds the stream busy and waits again
            assert await session.next_message(messages, 0.2) == "1"
            with pytest.raises(ServiceError) as ended:
                await session.next_message(silent(), 0.2)
        return ended.value

    assert run_limited(main()).code == grpc.StatusCode.DEADLINE_EXCEEDED


class TimerCountingLoop(asyncio.SelectorEventLoop):
    """The ordinary event loop, counting the idle timers the sessions arm on it."""

    idle_timers = 0

    def call_at(self, when, callback, *args, context=None):  # type: ignore[no-untyped-def]
        if getattr(callback, "__name__", "") == "_check_idle":
            self.idle_timers += 1
        return super().call_at(when, callback, *args, context=context)


def test_the_idle_timer_wakes_the_loop_once_per_idle_period_while_a_stream_answers() -> None:
    # A stream answering for 10 idle periods re-arms its timer about 10 times, not on every loop turn.
    registry = StreamRegistry(StreamLimits(), ServerMetrics.create())

    async def main() -> None:
        with registry.session() as session:
            messages = sent("a", "b")
            assert await session.next_message(messages, 0.05) == "a"
            await asyncio.sleep(0.5)  # answering "a"
            assert await session.next_message(messages, 0.05) == "b"

    with asyncio.Runner(loop_factory=TimerCountingLoop) as runner:
        runner.run(asyncio.wait_for(main(), LIMIT_SECONDS))
        timers = runner.get_loop().idle_timers  # type: ignore[attr-defined]
    assert 1 <= timers <= 20


def test_a_finished_stream_leaves_no_timer_holding_it() -> None:
    # However many messages it read, a stream's session is freed when it leaves the registry,
    # not when a forgotten idle timer fires (60 s later by default).
    registry = StreamRegistry(StreamLimits(), ServerMetrics.create())

    async def main() -> weakref.ref[StreamSession]:
        with registry.session() as session:
            messages = sent(*"abcde")
            while await session.next_message(messages, 60) is not None:
                await asyncio.sleep(0)
        return weakref.ref(session)

    async def leave_and_look() -> StreamSession | None:
        left = await main()
        gc.collect()
        return left()

    assert run_limited(leave_and_look()) is None


def test_a_caller_cancelling_a_waiting_stream_is_a_cancel_not_an_end_with_a_status() -> None:
    registry = StreamRegistry(StreamLimits(), ServerMetrics.create())

    async def main() -> None:
        async def wait() -> None:
            with registry.session() as session:
                await session.next_message(silent(), 60)

        waiting = asyncio.ensure_future(wait())
        await asyncio.sleep(0.01)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting

    run_limited(main())
    assert registry.open_count == 0


def test_a_waiting_stream_ended_twice_ends_with_the_first_reason() -> None:
    registry = StreamRegistry(StreamLimits(), ServerMetrics.create())
    first, second = unavailable("first"), invalid_argument([])

    async def main() -> ServiceError:
        with registry.session() as session:
            waiting = asyncio.ensure_future(session.next_message(silent(), 60))
            await asyncio.sleep(0.01)
            session.end(first)
            session.end(second)
            with pytest.raises(ServiceError) as ended:
                await waiting
        return ended.value

    assert run_limited(main()) is first


def test_a_stream_ended_while_answering_finishes_the_answer_and_ends_before_its_next_wait() -> None:
    registry = StreamRegistry(StreamLimits(), ServerMetrics.create())
    reason = unavailable("drained")

    async def main() -> tuple[list[str], ServiceError]:
        answered: list[str] = []
        messages = sent("a", "b")
        with registry.session() as session:
            message = await session.next_message(messages, 60)
            session.end(reason)  # while the stream answers "a"
            await asyncio.sleep(0.01)
            answered.append(message)
            with pytest.raises(ServiceError) as ended:
                await session.next_message(messages, 60)
        return answered, ended.value

    answered, error = run_limited(main())
    assert answered == ["a"] and error is reason


def test_the_drain_ends_every_open_stream_with_unavailable_after_the_grace(caplog: pytest.LogCaptureFixture) -> None:
    registry = StreamRegistry(StreamLimits(), ServerMetrics.create())

    async def stream(finish_at_once: bool) -> str:
        with registry.session() as session:
            try:
                await session.next_message(sent() if finish_at_once else silent(), 0)
            except ServiceError as error:
                return f"{error.code.name}: {error.message}"
        return "half-closed"

    async def main() -> list[str]:
        streams = [asyncio.ensure_future(stream(finish_at_once=i == 0)) for i in range(3)]
        registry.end_all_after(0.1)
        ends = await asyncio.gather(*streams)
        await registry.stop()
        return ends

    with caplog.at_level(logging.INFO, logger="rnn_sentiment.server.stream_sessions"):
        ends = run_limited(main())
    # The operator's log says how many were still open (the half-closed one had left).
    assert [(r.getMessage(), r.fields) for r in caplog.records] == [("ending open streams: the server is draining",
                                                                     {"streams": 2})]
    assert ends[0] == "half-closed"  # it finished within the grace: its normal end
    assert all(end.startswith("UNAVAILABLE") and "0.1 s grace period" in end and "reopen" in end for end in ends[1:])


def test_a_drain_with_no_stream_open_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    registry = StreamRegistry(StreamLimits(), ServerMetrics.create())

    async def main() -> None:
        registry.end_all_after(0)
        await asyncio.sleep(0.05)
        await registry.stop()

    with caplog.at_level(logging.INFO, logger="rnn_sentiment.server.stream_sessions"):
        run_limited(main())
    assert caplog.records == []


def test_a_stopped_drain_ends_no_stream() -> None:
    registry = StreamRegistry(StreamLimits(), ServerMetrics.create())

    async def main() -> None:
        registry.end_all_after(0.1)
        await registry.stop()
        with registry.session() as session:
            waiting = asyncio.ensure_future(session.next_message(silent(), 0))
            done, _ = await asyncio.wait([waiting], timeout=0.3)
            assert not done
            waiting.cancel()
        await registry.stop()  # twice: nothing left to stop

    run_limited(main())


def test_stopping_without_a_drain_does_nothing() -> None:
    registry = StreamRegistry(StreamLimits(), ServerMetrics.create())
    run_limited(registry.stop())


def test_a_stream_counts_in_its_models_gauges_until_it_ends() -> None:
    metrics = ServerMetrics.create()
    registry = StreamRegistry(StreamLimits(), metrics)
    with registry.session() as session:
        registry.bind_model(session, "m")
        registry.set_bytes(session, 100)
        registry.set_bytes(session, 40)
        assert gauge(metrics, "rnn_sentiment_streams_active", "m") == 1
        assert gauge(metrics, "rnn_sentiment_stream_session_bytes", "m") == 40
        with registry.session() as other:
            registry.bind_model(other, "m")
            registry.set_bytes(other, 7)
            assert gauge(metrics, "rnn_sentiment_streams_active", "m") == 2
            assert gauge(metrics, "rnn_sentiment_stream_session_bytes", "m") == 47
        assert gauge(metrics, "rnn_sentiment_streams_active", "m") == 1
        assert gauge(metrics, "rnn_sentiment_stream_session_bytes", "m") == 40
    assert gauge(metrics, "rnn_sentiment_streams_active", "m") == 0
    assert gauge(metrics, "rnn_sentiment_stream_session_bytes", "m") == 0


def test_a_stream_that_ends_before_choosing_a_model_counts_in_no_series() -> None:
    metrics = ServerMetrics.create()
    registry = StreamRegistry(StreamLimits(), metrics)
    with registry.session():
        pass
    assert gauge(metrics, "rnn_sentiment_streams_active", "") is None
    assert gauge(metrics, "rnn_sentiment_stream_session_bytes", "") is None
