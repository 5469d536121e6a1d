"""Errors stay small whatever the request: clients refuse trailers over 8 KiB."""

from __future__ import annotations

import base64

import grpc
from google.rpc import error_details_pb2, status_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from rnn_sentiment.server.errors import (
    MAX_DETAILS_BYTES,
    MAX_MESSAGE_WIRE_BYTES,
    MAX_VIOLATIONS,
    FieldViolation,
    ServiceError,
    grpc_message_wire_size,
    invalid_argument,
    resource_exhausted,
    truncate_message,
)

# What a client accepts by default: every trailer (name, value and 32 bytes each, as HPACK
# counts them) within 8 KiB. Our own budget must leave room to spare.
CLIENT_METADATA_LIMIT = 8192
OUR_BUDGET = 6 * 1024


def _trailer_bytes(error: ServiceError) -> int:
    (key, details), *others = error.trailing_metadata()
    return (
        len("grpc-status") + 2 + 32
        + len("grpc-message") + grpc_message_wire_size(error.message) + 32
        + len(key) + len(base64.b64encode(details)) + 32
        + sum(len(name) + len(value) + 32 for name, value in others)
    )


def _bad_request(error: ServiceError) -> error_details_pb2.BadRequest:
    (_, details), = error.trailing_metadata()
    status = status_pb2.Status.FromString(details)
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            return bad_request
    raise AssertionError("no BadRequest detail")


def test_a_million_violations_make_a_small_error_that_says_how_many_more() -> None:
    violations = [FieldViolation(f"attributions[{i}]", "99 is not a known attribution method") for i in range(1_000_000)]
    error = invalid_argument(violations)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.message.startswith("attributions[0]: 99 is not a known attribution method; attributions[1]:")
    assert error.message.endswith(f"; and {1_000_000 - MAX_VIOLATIONS} more")
    fields = [v.field for v in _bad_request(error).field_violations]
    assert fields == [f"attributions[{i}]" for i in range(len(fields))] and 1 <= len(fields) <= MAX_VIOLATIONS
    assert _trailer_bytes(error) <= OUR_BUDGET


def test_overlong_field_paths_and_descriptions_are_truncated() -> None:
    error = invalid_argument([FieldViolation("f" * 100_000, "d" * 100_000), FieldViolation("texts[1]", "bad")])
    (first, second) = _bad_request(error).field_violations
    assert first.field.startswith("fff") and first.field.endswith("…") and len(first.field) <= 200
    assert first.description.endswith("…") and len(first.description) <= 500
    assert (second.field, second.description) == ("texts[1]", "bad")
    assert _trailer_bytes(error) <= OUR_BUDGET


def test_a_short_message_is_kept_whole() -> None:
    assert truncate_message("texts[0]: too long") == "texts[0]: too long"
    assert invalid_argument([FieldViolation("texts[0]", "too long")]).message == "texts[0]: too long"


def test_truncation_counts_percent_encoded_bytes_not_characters() -> None:
    cut = truncate_message("é" * 1000, max_wire_bytes=60)  # "é": two UTF-8 bytes, six on the wire
    assert cut.endswith("…") and grpc_message_wire_size(cut) <= 60
    assert cut[:-1] == "é" * (len(cut) - 1) and len(cut) >= 8


def test_retry_info_survives_the_cap() -> None:
    error = resource_exhausted("x" * 100_000)
    (_, details), pushback = error.trailing_metadata()
    assert pushback == ("grpc-retry-pushback-ms", "100")  # RetryInfo's delay, for gRPC's own retries
    status = status_pb2.Status.FromString(details)
    assert any(d.Is(error_details_pb2.RetryInfo.DESCRIPTOR) for d in status.details)
    assert _trailer_bytes(error) <= OUR_BUDGET


violation = st.builds(FieldViolation, st.text(max_size=3000), st.text(max_size=3000))
# Varied lists, and long runs of one violation (what a repeated field full of one bad value gives).
violation_lists = st.one_of(
    st.lists(violation, max_size=300),
    st.tuples(violation, st.integers(0, 100_000)).map(lambda pair: [pair[0]] * pair[1]),
)


@settings(max_examples=150, deadline=None)
@given(violation_lists)
def test_any_violations_give_a_trailer_under_the_cap(violations: list[FieldViolation]) -> None:
    error = invalid_argument(violations)
    assert grpc_message_wire_size(error.message) <= MAX_MESSAGE_WIRE_BYTES
    (_, details), = error.trailing_metadata()
    assert len(details) <= MAX_DETAILS_BYTES
    assert _trailer_bytes(error) <= OUR_BUDGET < CLIENT_METADATA_LIMIT
    shown = _bad_request(error).field_violations if violations else []
    assert len(shown) <= MAX_VIOLATIONS
    if len(violations) > MAX_VIOLATIONS:
        assert error.message.endswith(f"and {len(violations) - MAX_VIOLATIONS} more")


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=20_000), st.sampled_from(list(grpc.StatusCode)))
def test_any_message_gives_a_trailer_under_the_cap(message: str, code: grpc.StatusCode) -> None:
    error = ServiceError(code, message, retry_delay_seconds=0.5)
    assert grpc_message_wire_size(error.message) <= MAX_MESSAGE_WIRE_BYTES
    assert _trailer_bytes(error) <= OUR_BUDGET
    if grpc_message_wire_size(message) <= MAX_MESSAGE_WIRE_BYTES:
        assert error.message == message
