"""StreamTokenizer: any chunking of a text reads exactly tokenize(whole text)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from rnn_sentiment.model.stream_tokenizer import HeldTextTooLong, StreamTokenizer
from rnn_sentiment.model.tokenizer import tokenize

# The characters tokenize() has rules for, so random texts hit them often: quotes and brackets,
# periods (abbreviations, `no. 1`, ellipses), digits (`1,000`, `10:30`), contractions, PTB escapes,
# the Unicode it maps, whitespace of several kinds, and Greek capital sigma (final-sigma lowering).
_RULE_CHARACTERS = list("\"'`.,:;%$!?()[]{}-\\/*0123456789 \t\n") + [
    "\u2019", "\u2018", "\u201c", "\u201d", "\u2026", "\u2014", "\u2013", "\u00a0", "\u3000", "\u03a3", "\u0130",
]
_RULE_WORDS = ["no", "n't", "'s", "'em", "mr", "u.s", "can", "cannot", "gonna", "don", "-lrb-", "...", "--", "``",
               "''", "no.", "ol'", "'70s", "1,000", "\\/", "\u0391\u03a3", "won't"]
_pieces = st.one_of(
    st.sampled_from(_RULE_CHARACTERS),
    st.sampled_from(_RULE_WORDS),
    st.text(min_size=1, max_size=3),  # any Unicode
    st.text(alphabet="abnot", min_size=1, max_size=4),
)
texts = st.lists(_pieces, max_size=40).map("".join)


def _streamed(text: str, cuts: list[int], max_held_chars: int = 10_000) -> list[str]:
    stream = StreamTokenizer(max_held_chars)
    tokens: list[str] = []
    bounds = [0, *sorted(set(cuts)), len(text)]
    for start, end in zip(bounds, bounds[1:]):
        tokens += stream.feed(text[start:end])
    return tokens + stream.finish()


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), text=texts)
@example(data=None, text="see no. 1 now")
@example(data=None, text='he said "no. no. 2" and left...')
@example(data=None, text="\u0391\u03a3 \u03a3\u0391")
def test_any_chunking_reads_the_tokens_of_the_whole_text(data, text):
    if data is None:
        cuts = list(range(len(text) + 1))  # the examples: one character a chunk
    else:
        cuts = data.draw(st.lists(st.integers(0, len(text)), max_size=12), label="cuts")
    assert _streamed(text, cuts) == tokenize(text)


@settings(max_examples=200, deadline=None)
@given(text=texts)
def test_one_character_at_a_time_reads_the_tokens_of_the_whole_text(text):
    assert _streamed(text, list(range(len(text) + 1))) == tokenize(text)


def test_a_word_is_read_once_whitespace_ends_it():
    stream = StreamTokenizer(100)
    assert stream.feed("I do") == ["i"]
    assert stream.feed("n't ") == ["do", "n't"]
    assert stream.feed("like") == []
    assert stream.finish() == ["like"]


def test_a_period_that_may_start_an_abbreviation_waits_for_the_next_word():
    stream = StreamTokenizer(100)
    assert stream.feed("see no. ") == ["see"]  # `no.` before a number is one token
    assert stream.feed("1 ") == ["no.", "1"]
    assert stream.feed("no. ") == []
    assert stream.feed("way ") == ["no", ".", "way"]


def test_held_text_is_bounded():
    stream = StreamTokenizer(8)
    stream.feed("abcd")
    with pytest.raises(HeldTextTooLong, match="9 characters arrived without whitespace.*limit is 8"):
        stream.feed("efghi")
    # A word boundary empties what is held: long texts of short words are fine.
    stream = StreamTokenizer(8)
    assert stream.feed("abc def ghi jkl mno ") == ["abc", "def", "ghi", "jkl", "mno"]
