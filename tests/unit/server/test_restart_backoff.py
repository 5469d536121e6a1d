"""RestartBackoff (server/restart_backoff.py): the supervisor's wait before restarting a crashed
worker, as a pure policy (tests/integration/test_workers.py restarts real workers)."""

from __future__ import annotations

from rnn_sentiment.server.restart_backoff import RestartBackoff


def test_restart_backoff_doubles_to_its_cap_and_resets_after_a_healthy_run() -> None:
    backoff = RestartBackoff(initial_seconds=0.5, max_seconds=4.0, healthy_after_seconds=60.0)
    assert [backoff.delay_after_crash(ran_seconds=1.0) for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert backoff.delay_after_crash(ran_seconds=61.0) == 0.5  # it had run healthily
    assert backoff.delay_after_crash(ran_seconds=1.0) == 1.0
    for _ in range(10_000):  # forever, never an overflow
        assert backoff.delay_after_crash(ran_seconds=0.0) <= 4.0


def test_a_run_exactly_as_long_as_healthy_after_seconds_starts_the_series_afresh() -> None:
    backoff = RestartBackoff(initial_seconds=0.5, max_seconds=4.0, healthy_after_seconds=60.0)
    assert [backoff.delay_after_crash(ran_seconds=59.9) for _ in range(3)] == [0.5, 1.0, 2.0]
    assert backoff.delay_after_crash(ran_seconds=60.0) == 0.5


def test_without_a_useful_cap_the_doubling_stops_at_two_to_the_32nd_times_the_first_wait() -> None:
    """The exponent is bounded, so a crash loop that lasts for ever never overflows a float,
    whatever cap is configured."""
    backoff = RestartBackoff(initial_seconds=1.0, max_seconds=float("inf"), healthy_after_seconds=60.0)
    delays = [backoff.delay_after_crash(ran_seconds=0.0) for _ in range(2_000)]
    assert delays[:4] == [1.0, 2.0, 4.0, 8.0]
    assert delays[32] == 2.0 ** 32
    assert set(delays[32:]) == {2.0 ** 32}
