"""Predict, Trace and model info through the SDK against a real server."""

from __future__ import annotations

import math

import pytest

from rnn_sentiment.client import SentimentClient

NEGATIVE = "a dull , lifeless and painfully boring movie"
POSITIVE = "a warm, funny and beautifully acted film"


def test_the_readme_sentences_get_the_right_labels(client: SentimentClient) -> None:
    result = client.predict([NEGATIVE, POSITIVE])
    assert [p.label for p in result.predictions] == ["negative", "positive"]
    info = client.model_info()
    assert result.model == info.name and result.model_version == info.version


def test_prediction_fields_are_consistent(client: SentimentClient) -> None:
    info = client.model_info()
    (p,) = client.predict("it 's not a bad film , but the ending xyzzyqq is silly").predictions
    assert math.isclose(sum(p.probabilities), 1.0, abs_tol=1e-5)
    assert p.score == pytest.approx(max(p.probabilities))
    assert p.label == info.labels[p.probabilities.index(max(p.probabilities))]
    assert p.token_count == 13  # it 's not a bad film , but the ending xyzzyqq is silly
    assert p.unknown_token_count >= 1  # the nonsense word
    assert not p.truncated


def test_huge_unknown_words_are_answered_and_the_server_keeps_serving(client: SentimentClient) -> None:
    # sst2-gru reads unknown words through their character n-grams: a 999-character "word" (the
    # test server's limit is 1,000) and a text of 28 long made-up words, end to end through the
    # hashing, the padding and the executor. The bounds on their cost (MAX_WORD_CHARS,
    # MAX_ONNX_SUBWORD_SLOTS) are unit-tested in tests/unit/model/test_model_subwords.py.
    junk = " ".join(f"qzx{index:03d}" + "k" * 26 for index in range(28))
    result = client.predict(["a" * 999, junk, POSITIVE])
    assert [p.unknown_token_count for p in result.predictions[:2]] == [1, 28]
    assert result.predictions[2].label == "positive"
    assert client.predict(NEGATIVE).predictions[0].label == "negative"


def test_predictions_keep_request_order(client: SentimentClient) -> None:
    texts = [NEGATIVE, POSITIVE, NEGATIVE, POSITIVE, POSITIVE]
    labels = [p.label for p in client.predict(texts).predictions]
    assert labels == ["negative", "positive", "negative", "positive", "positive"]


def test_long_text_is_truncated_to_max_tokens(client: SentimentClient) -> None:
    info = client.model_info()
    (p,) = client.predict("good " * (info.max_tokens + 5)).predictions
    assert p.truncated and p.token_count == info.max_tokens


def test_trace_last_step_equals_predict(client: SentimentClient) -> None:
    for text in (NEGATIVE, POSITIVE):
        trace = client.trace(text)
        (predicted,) = client.predict(text).predictions
        assert [s.token for s in trace.steps][:2] == text.lower().replace(",", " ,").split()[:2]
        assert len(trace.steps) == predicted.token_count
        assert trace.steps[-1].probabilities == pytest.approx(predicted.probabilities, abs=1e-6)
        assert trace.prediction.probabilities == pytest.approx(predicted.probabilities, abs=1e-6)


def test_trace_steps_carry_hidden_state_and_deltas(client: SentimentClient) -> None:
    info = client.model_info()
    trace = client.trace(POSITIVE)
    width = info.architecture.hidden_size * (2 if info.architecture.bidirectional else 1)
    # The first step is measured from the answer before any token (the baseline).
    previous = trace.baseline_probabilities[trace.labels.index("positive")]
    for step in trace.steps:
        assert len(step.hidden_state) == width
        assert step.hidden_state_norm == pytest.approx(math.sqrt(sum(x * x for x in step.hidden_state)), rel=1e-4)
        positive = trace.positive_probability(step)
        assert step.positive_delta == pytest.approx(positive - previous, abs=1e-5)
        previous = positive
    lean = client.trace(POSITIVE, include_hidden_states=False)
    assert all(len(s.hidden_state) == 0 for s in lean.steps)


def test_model_info_describes_the_shipped_default(client: SentimentClient) -> None:
    info = client.model_info()
    assert info.is_default
    assert info.labels == ("negative", "positive")
    assert info.dev_accuracy >= 0.84
    assert len(info.checkpoint_sha256) == 64
    assert info.architecture.cell_type in ("rnn", "gru", "lstm")
    assert info.architecture.parameter_count > 0
    assert info.architecture.subword_buckets == 10000  # sst2-gru 2.x reads unknown words' n-grams
    assert info.device == "cpu"
    models = client.list_models()
    assert models[0] == info
    assert {m.name for m in models} >= {"sst2-gru", "sst2-rnn"}


def test_every_shipped_model_answers_by_name(client: SentimentClient) -> None:
    for info in client.list_models():
        result = client.predict([NEGATIVE, POSITIVE], model=info.name)
        assert result.model == info.name
        assert client.model_info(info.name).name == info.name
        trace = client.trace(POSITIVE, model=info.name)
        assert trace.steps[-1].probabilities == pytest.approx(result.predictions[1].probabilities, abs=1e-6)
