"""Errors stay small whatever the request: clients refuse trailers over 8 KiB."""

from __future__ import annotations

import base64
from typing import Callable

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from rnn_sentiment.server.errors import (
    MAX_DETAILS_BYTES,
    MAX_MESSAGE_WIRE_BYTES,
    MAX_VIOLATIONS,
    FieldViolation,
    ServiceError,
    deadline_exceeded,
    grpc_message_wire_size,
    invalid_argument,
    not_found,
    quoted_name,
    resource_exhausted,
    truncate_chars,
    truncate_message,
    unavailable,
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


def _status(error: ServiceError) -> status_pb2.Status:
    return status_pb2.Status.FromString(dict(error.trailing_metadata())["grpc-status-details-bin"])


def test_the_wire_size_counts_what_grpc_percent_encodes() -> None:
    # Printable ASCII travels as is; "%", control characters, DEL and every non-ASCII byte as %XX.
    assert grpc_message_wire_size(" azAZ09~") == 8
    assert grpc_message_wire_size("%") == 3
    assert grpc_message_wire_size("\x1f") == grpc_message_wire_size("\x7f") == 3
    assert grpc_message_wire_size("é") == 6 and grpc_message_wire_size("😀") == 12


def test_a_message_that_exactly_fits_is_kept_and_one_byte_more_is_cut_to_fit() -> None:
    fits = "x" * 200
    assert truncate_message(fits, max_wire_bytes=200) == fits
    cut = truncate_message(fits + "y", max_wire_bytes=200)
    # The longest prefix that leaves room for the ellipsis (three UTF-8 bytes, nine on the wire).
    assert cut == "x" * (200 - 9) + "…" and grpc_message_wire_size(cut) == 200
    # A message past the cap is cut however long it is, to the documented 1,024 bytes as sent.
    assert truncate_message("x" * 100_000) == "x" * (1024 - 9) + "…"
    # Short in characters but not in bytes: twelve bytes on the wire each.
    emoji = truncate_message("😀" * (MAX_MESSAGE_WIRE_BYTES // 11))
    assert emoji.endswith("…") and grpc_message_wire_size(emoji) <= MAX_MESSAGE_WIRE_BYTES


def test_truncate_chars_keeps_a_text_of_exactly_the_limit() -> None:
    assert truncate_chars("abcd", 4) == "abcd"
    assert truncate_chars("abcde", 4) == "abc…"


def test_a_service_error_carries_its_code_and_capped_message_on_the_wire() -> None:
    error = ServiceError(grpc.StatusCode.FAILED_PRECONDITION, "y" * 5000)
    assert str(error) == error.message and grpc_message_wire_size(error.message) <= MAX_MESSAGE_WIRE_BYTES
    status = _status(error)
    assert (status.code, status.message) == (grpc.StatusCode.FAILED_PRECONDITION.value[0], error.message)
    assert list(status.details) == []
    assert [key for key, _ in error.trailing_metadata()] == ["grpc-status-details-bin"]  # no retry advice


@pytest.mark.parametrize(("make", "code", "delay_ms"), [
    (unavailable, grpc.StatusCode.UNAVAILABLE, 1000),
    (resource_exhausted, grpc.StatusCode.RESOURCE_EXHAUSTED, 100),
    (not_found, grpc.StatusCode.NOT_FOUND, None),
    (deadline_exceeded, grpc.StatusCode.DEADLINE_EXCEEDED, None),
])
def test_each_kind_of_error_has_its_code_and_only_the_retryable_ones_advise_a_delay(
        make: Callable[[str], ServiceError], code: grpc.StatusCode, delay_ms: int | None) -> None:
    error = make("why")
    assert (error.code, error.message) == (code, "why")
    trailers = dict(error.trailing_metadata())
    status = _status(error)
    assert status.code == code.value[0]
    if delay_ms is None:
        assert "grpc-retry-pushback-ms" not in trailers and list(status.details) == []
        return
    assert trailers["grpc-retry-pushback-ms"] == str(delay_ms)
    (detail,) = status.details
    retry = error_details_pb2.RetryInfo()
    assert detail.Unpack(retry) and retry.retry_delay.ToNanoseconds() == delay_ms * 1_000_000


def test_the_documented_twenty_violations_are_shown_and_a_twenty_first_is_counted() -> None:
    violations = [FieldViolation(f"texts[{i}]", "bad") for i in range(21)]
    whole = invalid_argument(violations[:20])
    assert "more" not in whole.message and whole.message.endswith("texts[19]: bad")
    assert len(_bad_request(whole).field_violations) == 20
    over = invalid_argument(violations)
    assert over.message.endswith("texts[19]: bad; and 1 more")
    assert [v.field for v in _bad_request(over).field_violations] == [f"texts[{i}]" for i in range(20)]


def test_violations_that_would_overflow_the_details_stop_before_it() -> None:
    # Each violation about 420 bytes serialized: the budget holds some, not all twenty.
    violations = [FieldViolation("f" * 200 + str(i), "d" * 400) for i in range(MAX_VIOLATIONS)]
    error = invalid_argument(violations)
    (_, details), = error.trailing_metadata()
    shown = _bad_request(error).field_violations
    assert len(details) <= MAX_DETAILS_BYTES
    assert 1 <= len(shown) < MAX_VIOLATIONS
    # The first ones, in order, cut to the documented 120 and 300 characters.
    assert [v.field for v in shown] == [v.field[:119] + "…" for v in violations[:len(shown)]]
    assert {v.description for v in shown} == {"d" * 299 + "…"}
    # The largest number that fits: one more would not.
    bigger = error_details_pb2.BadRequest(field_violations=list(shown) + [shown[-1]])
    status = _status(error)
    detail = status.details[0]
    detail.Pack(bigger)
    assert status.ByteSize() > MAX_DETAILS_BYTES


def test_an_echoed_name_is_cut_at_the_documented_64_characters_with_its_length() -> None:
    # README and docs/reliability.md: NOT_FOUND quotes at most 64 characters of the name.
    assert quoted_name("m" * 64) == repr("m" * 64)
    assert quoted_name("m" * 65) == f"{'m' * 64!r}… (65 characters)"


def test_a_violation_that_brings_the_details_to_exactly_the_documented_3072_bytes_is_kept() -> None:
    # "at most 3,072 bytes before base64": the last violation that reaches it exactly still fits.
    # Seven violations and a message cut to 1,024 bytes leave room for part of an eighth.
    head = [FieldViolation(f"texts[{i}]", "d" * 250) for i in range(7)]

    def shown_and_size(description: str) -> tuple[list[str], int]:
        error = invalid_argument([*head, FieldViolation("texts[7]", description)])
        size = len(dict(error.trailing_metadata())["grpc-status-details-bin"])
        return [v.field for v in _bad_request(error).field_violations], size

    exact = next((length for length in range(300) if shown_and_size("e" * length)[1] == 3072), None)
    assert exact is not None, "no description length lands exactly on the cap; change the sizes"
    fields, _ = shown_and_size("e" * exact)
    assert fields[-1] == "texts[7]"
    fields, size = shown_and_size("e" * (exact + 1))
    assert fields[-1] == "texts[6]" and size < 3072


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400), st.integers(9, 600))
def test_a_cut_message_is_a_prefix_of_the_text_that_fits_any_budget(text: str, max_wire_bytes: int) -> None:
    cut = truncate_message(text, max_wire_bytes)
    assert grpc_message_wire_size(cut) <= max_wire_bytes
    assert cut == text or (cut.endswith("…") and text.startswith(cut[:-1]))


def test_a_budget_smaller_than_the_first_character_leaves_only_the_ellipsis() -> None:
    assert truncate_message("é" * 100, max_wire_bytes=12) == "…"


def test_the_violations_kept_are_the_first_ones_with_no_gap() -> None:
    # A small violation after the one that overflowed would fit, but the detail lists a prefix:
    # the message's "and K more" counts from there.
    head = [FieldViolation(f"texts[{i}]", "d" * 250) for i in range(7)]
    error = invalid_argument([*head, FieldViolation("texts[7]", "e" * 250), FieldViolation("texts[8]", "f")])
    assert [v.field for v in _bad_request(error).field_violations] == [f"texts[{i}]" for i in range(7)]
