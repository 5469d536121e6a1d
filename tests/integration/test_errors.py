"""Bad input gets a clear error naming the field and the limit; the server keeps serving."""

from __future__ import annotations

import pytest

from rnn_sentiment.client import SentimentClient, SentimentError

# The session server runs with --max-texts-per-request 8 --max-text-chars 1000.


def _error(call) -> SentimentError:  # type: ignore[no-untyped-def]
    with pytest.raises(SentimentError) as raised:
        call()
    return raised.value


@pytest.mark.parametrize("text", ["", "   ", "\n\t "])
def test_blank_text_is_invalid(client: SentimentClient, text: str) -> None:
    error = _error(lambda: client.predict(["fine", text]))
    assert error.code == "INVALID_ARGUMENT"
    assert "texts[1]" in error.field_violations
    assert "non-whitespace" in error.field_violations["texts[1]"]


def test_no_texts_is_invalid(client: SentimentClient) -> None:
    error = _error(lambda: client.predict([]))
    assert error.code == "INVALID_ARGUMENT" and "texts" in error.field_violations


def test_too_many_texts_names_the_limit(client: SentimentClient) -> None:
    error = _error(lambda: client.predict(["good"] * 9))
    assert error.code == "INVALID_ARGUMENT"
    assert "limit is 8" in error.field_violations["texts"]


def test_too_long_text_names_the_limit(client: SentimentClient) -> None:
    error = _error(lambda: client.predict(["good", "x" * 1001]))
    assert error.code == "INVALID_ARGUMENT"
    assert "1001 characters" in error.field_violations["texts[1]"]
    assert "limit is 1000" in error.field_violations["texts[1]"]


def test_trace_validates_its_text(client: SentimentClient) -> None:
    error = _error(lambda: client.trace("  "))
    assert error.code == "INVALID_ARGUMENT" and "text" in error.field_violations


def test_unknown_model_is_not_found_and_lists_the_served_ones(client: SentimentClient) -> None:
    for call in (
        lambda: client.predict("good", model="no-such-model"),
        lambda: client.trace("good", model="no-such-model"),
        lambda: client.model_info("no-such-model"),
    ):
        error = _error(call)
        assert error.code == "NOT_FOUND"
        assert "no-such-model" in error.message and "sst2-gru" in error.message


def test_server_keeps_serving_after_bad_requests(client: SentimentClient) -> None:
    for _ in range(3):
        _error(lambda: client.predict(["", "x" * 5000]))
    assert client.predict("a warm and funny film").predictions[0].label == "positive"
    assert client.health() == "SERVING"
