"""Admission at the front door: at most N calls in progress, the rest refused at once.

Under a burst, gRPC's own behaviour is to let calls pile up in its core until a backlog limit
rejects them as CANCELLED, before any interceptor sees them (so they are neither counted nor
retried by standard policies). The server instead raises gRPC core's backlog limit
(`core_backlog_options`) and refuses calls beyond `max_concurrent_rpcs` itself, as
RESOURCE_EXHAUSTED with RetryInfo, in the metrics interceptor, so every refusal is counted. A
refusal costs a few microseconds, so the backlog drains fast and nothing waits in the core.
"""

from __future__ import annotations

from .errors import ServiceError, resource_exhausted

# Services whose calls are never refused: a health probe that fails under load would make an
# orchestrator restart a busy but healthy server.
UNLIMITED_SERVICES = frozenset({"grpc.health.v1.Health"})


class AdmissionLimit:
    """Counts calls in progress; every method runs on the event loop, so no lock is needed."""

    def __init__(self, max_in_progress: int) -> None:
        if max_in_progress < 1:
            raise ValueError(f"max_in_progress must be at least 1, got {max_in_progress}")
        self.max_in_progress = max_in_progress
        self.in_progress = 0

    def try_enter(self) -> bool:
        """Take a slot, or return False when all are taken (the caller refuses the call)."""
        if self.in_progress >= self.max_in_progress:
            return False
        self.in_progress += 1
        return True

    def leave(self) -> None:
        self.in_progress -= 1

    def refusal(self) -> ServiceError:
        return resource_exhausted(
            f"the server is at its limit of {self.max_in_progress} calls in progress; retry shortly"
        )


def core_backlog_options(max_pending_rpcs: int) -> list[tuple[str, int]]:
    """gRPC core options: hold up to `max_pending_rpcs` calls not yet picked up by the server.

    gRPC core rejects calls at random (as CANCELLED) once more than 1,000 arrived calls wait for
    the application to pick them up, and all of them above 3,000. Soft and hard limit are set
    equal, so nothing is dropped at random below the limit; every held call still reaches the
    admission check, which answers it at once.
    """
    return [
        ("grpc.server.max_pending_requests", max_pending_rpcs),
        ("grpc.server.max_pending_requests_hard_limit", max_pending_rpcs),
    ]
