"""bench/stream_scale.py's steady state: which updates it keeps, across client processes."""

from __future__ import annotations

from bench.stream_scale import ClientShare, RunResult, Timings, _steady_state


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
