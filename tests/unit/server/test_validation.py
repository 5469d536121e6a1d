from __future__ import annotations

import unicodedata

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from hypothesis import given
from hypothesis import strategies as st

from rnn_sentiment.server.errors import ServiceError
from rnn_sentiment.server.validation import RequestLimits, check_text, check_texts, text_violation

LIMITS = RequestLimits(max_texts_per_request=3, max_text_chars=10)


def _violations(error: ServiceError) -> dict[str, str]:
    (key, value), = error.trailing_metadata()
    assert key == "grpc-status-details-bin"
    status = status_pb2.Status.FromString(value)
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    bad_request = error_details_pb2.BadRequest()
    status.details[0].Unpack(bad_request)
    return {v.field: v.description for v in bad_request.field_violations}


def test_good_texts_pass() -> None:
    check_texts(["good", "very good"], LIMITS)
    check_text("fine", LIMITS)


@pytest.mark.parametrize(
    "texts, field, words",
    [
        ([], "texts", "at least one"),
        (["a", "b", "c", "d"], "texts", "4 texts; the limit is 3"),
        (["ok", ""], "texts[1]", "non-whitespace"),
        (["ok", " \t\n"], "texts[1]", "non-whitespace"),
        (["ok", "\0"], "texts[1]", "visible"),  # NUL only
        (["ok", "\u200b\u200b"], "texts[1]", "visible"),  # zero-width spaces only
        (["ok", "\ufeff\u00a0\u2028\x1b"], "texts[1]", "visible"),  # BOM, no-break space, line separator, ESC
        (["x" * 11], "texts[0]", "11 characters; the limit is 10"),
    ],
)
def test_each_rule_names_the_field_and_limit(texts: list[str], field: str, words: str) -> None:
    with pytest.raises(ServiceError) as raised:
        check_texts(texts, LIMITS)
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert words in _violations(raised.value)[field]
    assert field in raised.value.message


def test_every_bad_text_is_reported_at_once() -> None:
    with pytest.raises(ServiceError) as raised:
        check_texts(["", "ok", "x" * 20], LIMITS)
    assert set(_violations(raised.value)) == {"texts[0]", "texts[2]"}


def test_visible_text_with_invisible_characters_around_it_is_fine() -> None:
    check_texts(["\u200bgood\0", "\ufeffé", "😀"], LIMITS)


# Every character class the rule counts as showing nothing, as a hypothesis alphabet.
INVISIBLE = st.characters(categories=("Cc", "Cf", "Zs", "Zl", "Zp"))
LIMITS_WIDE = RequestLimits(max_texts_per_request=3, max_text_chars=1000)


@given(st.text(INVISIBLE, max_size=50))
def test_a_text_of_only_invisible_characters_is_refused(text: str) -> None:
    violation = text_violation("text", text, LIMITS_WIDE)
    assert violation is not None and "visible" in violation.description


@given(st.text(INVISIBLE, max_size=20), st.characters(categories=("L", "N", "P", "S")), st.text(INVISIBLE, max_size=20))
def test_one_visible_character_is_enough(before: str, visible: str, after: str) -> None:
    assert unicodedata.category(visible)[0] in "LNPS"
    assert text_violation("text", before + visible + after, LIMITS_WIDE) is None


def test_a_request_exactly_at_both_limits_passes() -> None:
    # "the limit is 10" means 10 is allowed: the full count of texts, each of the full length.
    check_texts(["x" * LIMITS.max_text_chars] * LIMITS.max_texts_per_request, LIMITS)
    check_text("x" * LIMITS.max_text_chars, LIMITS)
    assert text_violation("text", "x" * LIMITS.max_text_chars, LIMITS) is None
