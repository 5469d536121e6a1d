"""Which tokens of a long text are read: head keeps the start, head_tail the start and the end."""

from __future__ import annotations

import pytest

from rnn_sentiment.model.inference import encode_texts, encode_tokens, predict_encoded
from rnn_sentiment.model.truncation import HEAD_TAIL_HEAD_SHARE, TRUNCATIONS, TokenLimit

# Ten distinct known words, so which ones were kept can be read off the result.
TEN = "the movie is not good bad great boring fun plot".split()


def test_head_keeps_the_first_tokens_and_records_the_whole_length(vocab) -> None:
    encoded = encode_tokens(TEN, vocab, 4, "head")
    assert encoded.tokens == ("the", "movie", "is", "not")
    assert encoded.ids == tuple(vocab.encode(TEN[:4]))
    assert encoded.truncated and encoded.text_token_count == 10


def test_head_tail_keeps_the_first_and_the_last_tokens_and_drops_the_middle(vocab) -> None:
    encoded = encode_tokens(TEN, vocab, 4, "head_tail")
    head = TokenLimit(4, "head_tail").head_tokens
    assert head == round(4 * HEAD_TAIL_HEAD_SHARE) == 1
    assert encoded.tokens == ("the", "boring", "fun", "plot")
    assert encoded.ids == tuple(vocab.encode(["the", "boring", "fun", "plot"]))
    assert encoded.truncated and encoded.text_token_count == 10


@pytest.mark.parametrize("truncation", TRUNCATIONS)
def test_a_text_that_fits_is_read_whole_under_either_strategy(vocab, truncation: str) -> None:
    for limit in (10, 11):
        encoded = encode_tokens(TEN, vocab, limit, truncation)
        assert encoded.tokens == tuple(TEN) and not encoded.truncated and encoded.text_token_count == 10


@pytest.mark.parametrize(("limit", "share", "kept"), [
    (5, 0.5, ("the", "movie", "boring", "fun", "plot")),  # round(2.5) = 2 from the start
    (5, 0.0, ("bad", "great", "boring", "fun", "plot")),  # the end alone
    (5, 1.0, ("the", "movie", "is", "not", "good")),  # the start alone, as head
    (1, 0.25, ("plot",)),  # round(0.25) = 0: the last token
])
def test_head_share_splits_the_limit_between_start_and_end(limit: int, share: float, kept: tuple[str, ...]) -> None:
    assert TokenLimit(limit, "head_tail", share).keep(TEN) == kept


def test_prediction_reports_tokens_read_and_tokens_in_the_text(vocab, tiny_network, tmp_path) -> None:
    from rnn_sentiment.model.checkpoint import load_checkpoint, save_checkpoint

    network = tiny_network(len(vocab))
    save_checkpoint(tmp_path / "m", network, vocab, network.config, "tiny", "1")
    loaded = load_checkpoint(tmp_path / "m")
    (long_one, short_one) = predict_encoded(loaded, encode_texts([" ".join(TEN), "fun"], vocab, 4, "head_tail"))
    assert long_one.truncated and long_one.token_count == 4 and long_one.text_token_count == 10
    assert not short_one.truncated and short_one.token_count == short_one.text_token_count == 1


def test_head_tail_reads_what_the_end_says(vocab, tiny_network, tmp_path) -> None:
    """The kept tokens are what the network reads: head_tail's answer is the answer for those tokens."""
    from rnn_sentiment.model.checkpoint import load_checkpoint, save_checkpoint

    network = tiny_network(len(vocab))
    save_checkpoint(tmp_path / "m", network, vocab, network.config, "tiny", "1")
    loaded = load_checkpoint(tmp_path / "m")
    (cut,) = predict_encoded(loaded, encode_texts([" ".join(TEN)], vocab, 4, "head_tail"))
    (kept,) = predict_encoded(loaded, encode_texts(["the boring fun plot"], vocab, 4, "head"))
    assert cut.probabilities == pytest.approx(kept.probabilities, abs=1e-6)


@pytest.mark.parametrize(("arguments", "message"), [
    ((0, "head"), "max_tokens must be >= 1"),
    ((8, "middle"), "invalid truncation 'middle'; options are ['head', 'head_tail']"),
    ((8, "head_tail", 1.5), "head_share must be in [0, 1]"),
])
def test_a_bad_limit_names_the_fix(arguments: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        TokenLimit(*arguments)


def test_an_unknown_strategy_is_refused_when_it_would_cut(vocab) -> None:
    with pytest.raises(ValueError, match="invalid truncation"):
        encode_tokens(TEN, vocab, 4, "tail_only")
