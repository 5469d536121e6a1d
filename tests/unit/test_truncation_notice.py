"""The CLI's note on a truncated text names the tokens read, of how many, and the part dropped."""

from __future__ import annotations

import dataclasses
import io

from rnn_sentiment.cli.truncation_notice import print_truncation_notes, truncation_note
from rnn_sentiment.client.errors import SentimentError
from rnn_sentiment.client.results import Architecture, ModelInfo, Prediction

CUT = Prediction("positive", 0.9, (0.1, 0.9), token_count=128, unknown_token_count=0, truncated=True,
                 text_token_count=161)
WHOLE = dataclasses.replace(CUT, token_count=20, truncated=False, text_token_count=20)
INFO = ModelInfo("sst2-gru", "1", Architecture("gru", 1, 8, 8, False, "last", 1, 0), ("negative", "positive"),
                 10, 128, "0" * 64, 0.9, "cpu", True, truncation="head_tail", truncation_head_tokens=32)
SUFFIX = " (its --max-tokens limit; see docs/models.md#long-texts)"


def test_head_tail_names_both_ends_and_the_middle() -> None:
    assert truncation_note(CUT, INFO, "text 2") == (
        "note: text 2 has 161 tokens; sst2-gru read 128 (the first 32 and the last 96) and dropped the middle 33"
        + SUFFIX)


def test_head_and_tail_alone_name_the_end_dropped() -> None:
    head = dataclasses.replace(INFO, truncation="head", truncation_head_tokens=128)
    assert "read 128 (the first 128) and dropped the last 33" in truncation_note(CUT, head, "the text")
    tail = dataclasses.replace(INFO, truncation_head_tokens=0)
    assert "read 128 (the last 128) and dropped the first 33" in truncation_note(CUT, tail, "the text")


def test_only_truncated_texts_get_a_note_and_model_info_is_asked_only_then() -> None:
    asked: list[int] = []

    def info() -> ModelInfo:
        asked.append(1)
        return INFO

    stream = io.StringIO()
    print_truncation_notes([WHOLE, WHOLE], info, ["text 1", "text 2"], stream)
    assert stream.getvalue() == "" and not asked
    print_truncation_notes([WHOLE, CUT], info, ["text 1", "text 2"], stream)
    assert stream.getvalue().startswith("note: text 2 has 161 tokens") and len(asked) == 1


def test_without_model_info_the_note_still_says_how_much_was_read() -> None:
    def unavailable() -> ModelInfo:
        raise SentimentError("UNAVAILABLE", "draining")

    stream = io.StringIO()
    print_truncation_notes([CUT], unavailable, ["the text"], stream)
    assert stream.getvalue() == "note: the text has 161 tokens; the model read 128 and dropped 33\n"


def test_head_tail_whose_head_takes_every_token_read_drops_the_end() -> None:
    # A head as long as the limit keeps no tail: the note must not promise "the last 0".
    whole_head = dataclasses.replace(INFO, truncation_head_tokens=128)
    assert truncation_note(CUT, whole_head, "text 1") == (
        "note: text 1 has 161 tokens; sst2-gru read 128 (the first 128) and dropped the last 33" + SUFFIX)
