"""gRPC errors with google.rpc details, built in one place so every error looks the same."""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

_STATUS_DETAILS_KEY = "grpc-status-details-bin"


@dataclass(frozen=True)
class FieldViolation:
    """One bad request field: `field` is a path such as "texts[2]"."""

    field: str
    description: str


@dataclass
class ServiceError(Exception):
    """An error meant for the caller: a status code, a message and optional details.

    Raised anywhere below the servicer; the servicer turns it into the RPC's status.
    """

    code: grpc.StatusCode
    message: str
    violations: list[FieldViolation] = field(default_factory=list)
    retry_delay_seconds: float | None = None

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def trailing_metadata(self) -> tuple[tuple[str, bytes], ...]:
        """The `grpc-status-details-bin` trailer that grpcio-status clients decode."""
        # grpc.StatusCode values are (int, name) tuples; google.rpc.Status wants the int.
        status = status_pb2.Status(code=self.code.value[0], message=self.message)
        if self.violations:
            bad_request = error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=v.field, description=v.description
                    )
                    for v in self.violations
                ]
            )
            detail = any_pb2.Any()
            detail.Pack(bad_request)
            status.details.append(detail)
        if self.retry_delay_seconds is not None:
            retry = error_details_pb2.RetryInfo()
            retry.retry_delay.FromNanoseconds(int(self.retry_delay_seconds * 1e9))
            detail = any_pb2.Any()
            detail.Pack(retry)
            status.details.append(detail)
        return ((_STATUS_DETAILS_KEY, status.SerializeToString()),)


def invalid_argument(violations: list[FieldViolation]) -> ServiceError:
    """INVALID_ARGUMENT whose message repeats every violation, so plain clients see them too."""
    message = "; ".join(f"{v.field}: {v.description}" for v in violations)
    return ServiceError(grpc.StatusCode.INVALID_ARGUMENT, message, violations)


def not_found(message: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.NOT_FOUND, message)


def unavailable(message: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.UNAVAILABLE, message, retry_delay_seconds=1.0)


def resource_exhausted(message: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.RESOURCE_EXHAUSTED, message, retry_delay_seconds=0.1)


def deadline_exceeded(message: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.DEADLINE_EXCEEDED, message)

