"""gRPC errors with google.rpc details, built in one place so every error looks the same.

Every error is bounded, whatever the request: clients refuse trailers over 8 KiB (gRPC's
suggested default), and a bad request must not cost the server more than a good one. The
message goes on the wire as `grpc-message` (percent-encoded) and again inside the
`grpc-status-details-bin` trailer (base64), so both are capped: MAX_MESSAGE_WIRE_BYTES for the
first, MAX_DETAILS_BYTES (before base64) for the second, at most MAX_VIOLATIONS field violations
(the first ones, the message saying how many more), each field path and description truncated.
Together under 5.3 KiB on the wire.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

_STATUS_DETAILS_KEY = "grpc-status-details-bin"
# RetryInfo's delay as the trailer gRPC's own retry machinery reads: a client whose service config
# retries RESOURCE_EXHAUSTED waits exactly this long (gRFC A6 "pushback") instead of its backoff.
_RETRY_PUSHBACK_KEY = "grpc-retry-pushback-ms"

MAX_VIOLATIONS = 20
MAX_FIELD_CHARS = 120
MAX_DESCRIPTION_CHARS = 300
MAX_MESSAGE_WIRE_BYTES = 1024  # grpc-message as sent: UTF-8, then percent-encoded
MAX_DETAILS_BYTES = 3072  # the serialized google.rpc.Status; base64 makes it 4,096 on the wire
ELLIPSIS = "…"
# Names echoed in errors and logs are cut to this many characters: a caller's 16 KB "model"
# would otherwise come back in a status message larger than clients accept as metadata.
ECHOED_NAME_CHARS = 64


def _percent_encoded_size(char: str) -> int:
    # gRPC percent-encodes every byte outside printable ASCII, and "%" itself.
    if " " <= char <= "~" and char != "%":
        return 1
    return 3 * len(char.encode("utf-8", "surrogatepass"))


def grpc_message_wire_size(text: str) -> int:
    """How many bytes `text` takes as a `grpc-message` header value."""
    return sum(_percent_encoded_size(c) for c in text)


def truncate_chars(text: str, max_chars: int) -> str:
    return text if len(text) <= max_chars else text[: max_chars - 1] + ELLIPSIS


def truncate_message(text: str, max_wire_bytes: int = MAX_MESSAGE_WIRE_BYTES) -> str:
    """`text` cut (with an ellipsis) so that its `grpc-message` form fits in `max_wire_bytes`.

    Reads at most about `max_wire_bytes` characters, however long `text` is.
    """
    if len(text) * 12 <= max_wire_bytes:  # even 12 bytes a character (4 UTF-8 bytes, encoded) fit
        return text
    budget = max_wire_bytes - _percent_encoded_size(ELLIPSIS)
    cut = 0  # the longest prefix that leaves room for the ellipsis
    used = 0
    for index, char in enumerate(text):
        used += _percent_encoded_size(char)
        if used <= budget:
            cut = index + 1
        elif used > max_wire_bytes:
            return text[:cut] + ELLIPSIS
    return text


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
        self.message = truncate_message(self.message)
        super().__init__(self.message)

    def trailing_metadata(self) -> tuple[tuple[str, bytes | str], ...]:
        """The `grpc-status-details-bin` trailer that grpcio-status clients decode (bounded), and with
        a retry delay its `grpc-retry-pushback-ms` twin."""
        # grpc.StatusCode values are (int, name) tuples; google.rpc.Status wants the int.
        status = status_pb2.Status(code=self.code.value[0], message=self.message)
        if self.retry_delay_seconds is not None:
            retry = error_details_pb2.RetryInfo()
            retry.retry_delay.FromNanoseconds(int(self.retry_delay_seconds * 1e9))
            detail = any_pb2.Any()
            detail.Pack(retry)
            status.details.append(detail)
        if self.violations:
            bad_request = error_details_pb2.BadRequest()
            detail = status.details.add()
            # Add violations while the whole Status stays within its budget; the message
            # already says how many there were.
            for v in self.violations[:MAX_VIOLATIONS]:
                bad_request.field_violations.add(
                    field=truncate_chars(v.field, MAX_FIELD_CHARS),
                    description=truncate_chars(v.description, MAX_DESCRIPTION_CHARS),
                )
                detail.Pack(bad_request)
                if status.ByteSize() > MAX_DETAILS_BYTES:
                    del bad_request.field_violations[-1]
                    detail.Pack(bad_request)
                    break
        details = ((_STATUS_DETAILS_KEY, status.SerializeToString()),)
        if self.retry_delay_seconds is None:
            return details
        return (*details, (_RETRY_PUSHBACK_KEY, str(round(self.retry_delay_seconds * 1000))))


def invalid_argument(violations: list[FieldViolation]) -> ServiceError:
    """INVALID_ARGUMENT whose message repeats the violations, so plain clients see them too.

    Only the first MAX_VIOLATIONS are spelled out; the message ends "and K more".
    """
    shown = violations[:MAX_VIOLATIONS]
    listed = "; ".join(
        f"{truncate_chars(v.field, MAX_FIELD_CHARS)}: {truncate_chars(v.description, MAX_DESCRIPTION_CHARS)}"
        for v in shown
    )
    more = f"; and {len(violations) - len(shown)} more" if len(violations) > len(shown) else ""
    message = truncate_message(listed, MAX_MESSAGE_WIRE_BYTES - grpc_message_wire_size(more)) + more
    return ServiceError(grpc.StatusCode.INVALID_ARGUMENT, message, violations)


def not_found(message: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.NOT_FOUND, message)


def unavailable(message: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.UNAVAILABLE, message, retry_delay_seconds=1.0)


def resource_exhausted(message: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.RESOURCE_EXHAUSTED, message, retry_delay_seconds=0.1)


def deadline_exceeded(message: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.DEADLINE_EXCEEDED, message)


def quoted_name(name: str) -> str:
    """repr(name), cut to ECHOED_NAME_CHARS characters with an ellipsis and the full length."""
    if len(name) <= ECHOED_NAME_CHARS:
        return repr(name)
    return f"{name[:ECHOED_NAME_CHARS]!r}… ({len(name)} characters)"
