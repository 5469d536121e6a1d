"""Admission: at most `max_concurrent_rpcs` calls in progress; the next one is refused at once
with RESOURCE_EXHAUSTED and a retry delay; a finished call frees its slot."""

from __future__ import annotations

import grpc
import pytest

from rnn_sentiment.server.admission import UNLIMITED_SERVICES, AdmissionLimit, core_backlog_options


@pytest.mark.parametrize("limit", [1, 3])
def test_exactly_the_limit_is_admitted_and_a_finished_call_frees_its_slot(limit: int) -> None:
    admission = AdmissionLimit(limit)
    assert [admission.try_enter() for _ in range(limit)] == [True] * limit
    assert admission.in_progress == limit
    assert admission.try_enter() is False  # one over the limit: refused
    assert admission.in_progress == limit  # a refusal takes no slot
    admission.leave()
    assert admission.in_progress == limit - 1
    assert admission.try_enter() is True
    assert admission.try_enter() is False


def test_a_limit_below_one_is_refused_with_its_value() -> None:
    for bad in (0, -1):
        with pytest.raises(ValueError, match=f"max_in_progress must be at least 1, got {bad}"):
            AdmissionLimit(bad)
    assert AdmissionLimit(1).max_in_progress == 1


def test_a_refusal_is_resource_exhausted_naming_the_limit_with_a_retry_delay() -> None:
    refusal = AdmissionLimit(7).refusal()
    assert refusal.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert refusal.message == "the server is at its limit of 7 calls in progress; retry shortly"
    assert refusal.retry_delay_seconds is not None and refusal.retry_delay_seconds > 0


def test_health_is_never_refused_and_the_core_backlog_limits_are_equal() -> None:
    assert "grpc.health.v1.Health" in UNLIMITED_SERVICES
    assert core_backlog_options(5000) == [("grpc.server.max_pending_requests", 5000),
                                          ("grpc.server.max_pending_requests_hard_limit", 5000)]
