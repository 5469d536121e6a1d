"""SDK errors: one exception type carrying the gRPC code and the server's field violations."""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


@dataclass
class SentimentError(Exception):
    """A failed call. `code` is the gRPC status code name ("INVALID_ARGUMENT", ...).

    `field_violations` maps a request field ("texts[1]") to what is wrong with it, when the
    server sent a google.rpc.BadRequest.
    """

    code: str
    message: str
    field_violations: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(f"{self.code}: {self.message}")

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> "SentimentError":
        violations: dict[str, str] = {}
        # Both sync calls and aio errors expose code(), details() and trailing_metadata().
        status = rpc_status.from_call(error) if hasattr(error, "trailing_metadata") else None  # type: ignore[arg-type]
        if status is not None:
            for detail in status.details:
                if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                    bad_request = error_details_pb2.BadRequest()
                    detail.Unpack(bad_request)
                    violations.update({v.field: v.description for v in bad_request.field_violations})
        code = error.code()  # type: ignore[attr-defined]
        return cls(code=code.name if code else "UNKNOWN", message=error.details() or "", field_violations=violations)  # type: ignore[attr-defined]
