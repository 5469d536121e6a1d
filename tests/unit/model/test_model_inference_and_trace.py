import pytest
import torch

from rnn_sentiment.model.checkpoint import load_checkpoint, save_checkpoint
from rnn_sentiment.model.inference import encode_texts, predict_encoded
from rnn_sentiment.model.trace import trace_text


@pytest.fixture
def loaded_model(tmp_path, vocab, tiny_network):
    """A factory: save a tiny network with these settings and load it back as a served model."""

    def build(**overrides):
        network = tiny_network(len(vocab), **overrides)
        save_checkpoint(tmp_path / "m", network, vocab, network.config, "tiny", "1")
        return load_checkpoint(tmp_path / "m")

    return build


def test_encode_texts_counts_unknowns_and_truncates(vocab):
    short, long = encode_texts(["The movie is zorgly!", "the movie " * 10], vocab, max_tokens=6)
    assert short.tokens == ("the", "movie", "is", "zorgly", "!") and short.unknown_count == 2
    assert not short.truncated
    assert long.truncated and long.tokens == ("the", "movie") * 3


def test_empty_text_is_the_callers_error(vocab):
    with pytest.raises(ValueError):
        encode_texts(["fine", "   "], vocab, max_tokens=8)


def test_predictions_come_back_in_input_order(loaded_model, vocab):
    loaded = loaded_model(cell="lstm")
    texts = ["a plot", "the movie is not good but fun", "boring ."]
    batch = encode_texts(texts, vocab, 128)
    together = predict_encoded(loaded, batch)
    for item, result in zip(batch, together):
        alone = predict_encoded(loaded, [item])[0]
        assert result.probabilities == pytest.approx(alone.probabilities, abs=1e-6)
        assert result.token_count == len(item.ids)
        assert result.label in loaded.config.labels
        assert sum(result.probabilities) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("settings", [
    dict(cell="rnn"), dict(cell="gru"), dict(cell="lstm"),
    dict(cell="gru", bidirectional=True), dict(cell="lstm", pooling="attention"),
    dict(cell="rnn", pooling="mean", num_layers=2), dict(cell="gru", pooling="max"),
])
def test_trace_last_step_equals_predict(loaded_model, vocab, settings):
    loaded = loaded_model(**settings)
    encoded = encode_texts(["the plot is boring but the acting is great ."], vocab, 128)[0]
    trace = trace_text(loaded, encoded)
    predicted = predict_encoded(loaded, [encoded])[0]
    assert trace.steps[-1].probabilities == pytest.approx(predicted.probabilities, abs=1e-6)
    assert trace.prediction.label == predicted.label
    assert [step.token for step in trace.steps] == list(encoded.tokens)
    deltas = sum(step.delta_positive for step in trace.steps)
    assert deltas == pytest.approx(predicted.probabilities[1] - trace.baseline[1], abs=1e-6)
    step = trace.steps[2]
    assert step.hidden_norm == pytest.approx(float(torch.tensor(step.hidden).norm()), abs=1e-6)


def test_trace_prefix_answers_are_the_models_answers_for_prefixes(loaded_model, vocab):
    loaded = loaded_model(cell="gru", bidirectional=True)
    encoded = encode_texts(["fun but boring plot"], vocab, 128)[0]
    trace = trace_text(loaded, encoded)
    prefix = encode_texts(["fun but"], vocab, 128)[0]
    assert trace.steps[1].probabilities == pytest.approx(predict_encoded(loaded, [prefix])[0].probabilities, abs=1e-6)


def test_unidirectional_trace_hidden_is_the_memory_the_classifier_reads(loaded_model, vocab):
    loaded = loaded_model(cell="rnn")
    encoded = encode_texts(["the movie is fun"], vocab, 128)[0]
    trace = trace_text(loaded, encoded)
    with torch.no_grad():
        logits = loaded.network.classify_pooled(torch.tensor([trace.steps[-1].hidden]))
    assert torch.softmax(logits, -1)[0].tolist() == pytest.approx(trace.prediction.probabilities, abs=1e-6)
    assert [s.known for s in trace.steps] == [True, True, True, True]
