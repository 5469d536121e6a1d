"""bench/stream_scale.py: its schedule, a stream's pacing, and which updates the steady state keeps."""

from __future__ import annotations

import argparse
import asyncio
import time
from types import SimpleNamespace

import grpc

from bench.stream_scale import (
    WORDS, ClientShare, RunResult, StreamPlan, Timings, _one_stream, _steady_state, server_command, stream_schedule,
)
from rnn_sentiment.server.config import add_server_arguments, config_from


def share(first_answers: list[float], sends: list[tuple[float, float]], stop_at: float) -> ClientShare:
    timings = Timings(first_answers=first_answers)
    for sent_at, latency in sends:
        timings.answered(sent_at, latency)
    return ClientShare(timings=timings, stop_at=stop_at)


def test_the_steady_state_starts_an_interval_after_the_last_first_answer_and_ends_one_before_the_stop() -> None:
    # Process A's streams all answered by t=1.0; process B started late and answered by t=3.0.
    a = share([0.5, 1.0], [(0.6, 0.200), (3.1, 0.900), (3.2, 0.010), (5.0, 0.020), (9.85, 0.500)], stop_at=10.0)
    b = share([2.9, 3.0], [(3.0, 0.300), (3.25, 0.030), (9.7, 0.040), (9.9, 0.600)], stop_at=10.5)
    result = RunResult(streams=4, seconds=10.0, interval_s=0.2)
    _steady_state(result, [a, b], interval=0.2)
    # kept: sent in [3.2, 9.8): A's 3.2, 5.0 and B's 3.25, 9.7; not the bursts around them
    assert result.steady_updates == 4
    assert result.steady_seconds == 6.6
    assert (result.steady_p50_ms, result.steady_p99_ms) == (30.0, 40.0)


def test_no_first_answer_leaves_the_steady_state_empty() -> None:
    result = RunResult(streams=1, seconds=1.0, interval_s=0.2)
    _steady_state(result, [share([], [], stop_at=1.0)], interval=0.2)
    assert (result.steady_updates, result.steady_p99_ms) == (0, 0.0)


def test_the_schedule_spreads_the_openings_over_the_ramp_and_the_first_streams_lengths_over_a_cycle() -> None:
    plans = stream_schedule(0, 1000, ramp_seconds=2.0, interval=0.2, words_per_stream=100)
    delays = [p.delay_s for p in plans]
    firsts = [p.first_words for p in plans]
    assert 0 <= min(delays) < 0.05 and 1.95 < max(delays) < 2.0
    assert min(firsts) == 1 and max(firsts) == 100 and len(set(firsts)) > 90  # reopens spread over a cycle
    assert all(0 <= p.position < len(WORDS) for p in plans)
    # Seeded by the stream's index: the same plan whichever client process (and first) it falls to.
    assert stream_schedule(500, 3, 2.0, 0.2, 100) == plans[500:503]
    # A ramp shorter than the interval still spreads the ticks over one interval.
    assert max(p.delay_s for p in stream_schedule(0, 200, 0.0, 0.2, 100)) > 0.18


class _RecordingCall:
    """A stand-in StreamSentiment call: answers every write at once and records when it came."""

    def __init__(self, writes: list[float]) -> None:
        self._writes = writes
        self._closed = False

    async def write(self, request: object) -> None:
        self._writes.append(time.monotonic())

    async def read(self) -> object:
        return SimpleNamespace(final=self._closed)

    async def done_writing(self) -> None:
        self._closed = True

    async def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.OK


def test_a_stream_sends_one_word_per_interval_from_its_first_and_reopens_on_the_same_ticks() -> None:
    writes: list[float] = []
    calls: list[_RecordingCall] = []

    def open_call() -> _RecordingCall:
        calls.append(_RecordingCall(writes))
        return calls[-1]

    stub = SimpleNamespace(StreamSentiment=open_call)
    result = RunResult(streams=1, seconds=0.5, interval_s=0.05)
    timings = Timings()
    plan = StreamPlan(position=0, delay_s=0.0, first_words=2)
    asyncio.run(_one_stream(stub, plan, 0.05, time.monotonic() + 0.33, 3, timings, result))
    # Words at 0, 0.05 (the first stream's 2), then 0.10, 0.15, 0.20 and 0.25, 0.30: no word before its
    # tick (the old loop sent every stream's second word at once). How late a busy machine runs is
    # not asserted: that is the bench's send lag.
    gaps = [later - earlier for earlier, later in zip(writes, writes[1:])]
    assert len(writes) >= 3 and len(calls) >= 2  # the first stream's 2 words, then a reopened stream
    assert all(gap >= 0.045 for gap in gaps), gaps
    assert all(lag >= -0.005 for lag in timings.lags), timings.lags
    assert result.answered == result.sent and result.errors == 0


def test_server_args_reach_the_server_after_the_benchs_own_flags_so_they_can_override_them() -> None:
    command = server_command(5000, 2, 1000, ["--pin-workers", "--max-streams", "50"])
    assert command[command.index("serve") - 2:command.index("serve") + 1] == ["-m", "rnn_sentiment.cli", "serve"]
    parser = argparse.ArgumentParser()
    add_server_arguments(parser)
    config = config_from(parser.parse_args(command[command.index("serve") + 1:]), environ={})
    assert (config.address, config.workers, config.pin_workers, config.max_streams) == ("127.0.0.1:5000", 2, True, 50)
    assert config.max_concurrent_rpcs == 1064
