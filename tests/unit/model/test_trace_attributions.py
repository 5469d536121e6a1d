"""Attributions that can be checked: completeness, finite differences, occlusion = Predict, signs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from rnn_sentiment.model.attribution import gradient_x_input, integrated_gradients, target_log_odds
from rnn_sentiment.model.checkpoint import LoadedModel
from rnn_sentiment.model.inference import encode_texts, predict_encoded
from rnn_sentiment.model.trace import ATTRIBUTION_METHODS, TraceOptions, trace_text

TEXT = "the movie is not good but the acting is great and it 's fun ."
CONFIGS = [
    dict(cell="rnn"), dict(cell="gru"), dict(cell="lstm"), dict(cell="gru", bidirectional=True),
    dict(cell="lstm", pooling="attention"), dict(cell="rnn", pooling="mean", num_layers=2),
    dict(cell="gru", pooling="max"),
]


def as_loaded(network, vocab) -> LoadedModel:
    return LoadedModel(name="tiny", version="1", config=network.config, training=None, vocab=vocab,
                       network=network, sha256="", path=Path("."))


def sharp_network(tiny_network, vocab_size, **settings):
    """A tiny network with larger weights, so that it is far from linear and its answers differ.

    (Much larger, ×3, makes a two-layer tanh RNN chaotic along the integration path: no trained
    model looks like that, and no quadrature with 64 points integrates it.)
    """
    network = tiny_network(vocab_size, hidden_size=8, **settings)
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.mul_(2.0)
    return network


def log_odds(p: float) -> float:
    return math.log(p) - math.log1p(-p)


@pytest.mark.parametrize("settings", CONFIGS)
def test_last_step_equals_predict_with_everything_on(settings, vocab, tiny_network):
    loaded = as_loaded(sharp_network(tiny_network, len(vocab), **settings), vocab)
    encoded = encode_texts([TEXT], vocab, 128)[0]
    options = TraceOptions(attributions=ATTRIBUTION_METHODS, memory=True, all_layers=True)
    trace = trace_text(loaded, encoded, options)
    predicted = predict_encoded(loaded, [encoded])[0]
    assert trace.steps[-1].probabilities == pytest.approx(predicted.probabilities, abs=1e-6)
    assert trace.prediction.label == predicted.label
    assert [a.method for a in trace.attributions] == list(ATTRIBUTION_METHODS)
    assert all(len(a.scores) == len(encoded.ids) and a.target_label == predicted.label for a in trace.attributions)


@pytest.mark.parametrize("settings", CONFIGS)
def test_integrated_gradients_complete_within_one_percent_at_64_steps(settings, vocab, tiny_network):
    network = sharp_network(tiny_network, len(vocab), **settings)
    ids = torch.tensor(vocab.encode(TEXT.split()))
    result = integrated_gradients(network, ids, target=1, steps=64)
    assert abs(result.logit_difference) > 0.05  # a test with nothing to explain proves nothing
    assert result.completeness_gap < 0.01 * abs(result.logit_difference)
    assert float(result.scores.sum()) == pytest.approx(result.logit_difference, abs=result.completeness_gap + 1e-6)


def test_integrated_gradients_of_a_linear_model_equal_gradient_x_input(vocab, tiny_network):
    # Mean pooling over a (nearly) linear recurrence: RNN with tiny weights is ~linear in x,
    # and for a linear f with a zero baseline IG = gradient × input exactly.
    network = tiny_network(len(vocab), cell="rnn", pooling="mean").double()
    with torch.no_grad():
        for parameter in network.rnn.parameters():
            parameter.mul_(1e-3)
    ids = torch.tensor(vocab.encode(TEXT.split()))
    ig = integrated_gradients(network, ids, target=1, steps=4).scores
    torch.testing.assert_close(ig, gradient_x_input(network, ids, target=1), rtol=1e-3, atol=1e-9)


@pytest.mark.parametrize("settings", CONFIGS)
def test_gradient_x_input_agrees_with_finite_differences(settings, vocab, tiny_network):
    network = sharp_network(tiny_network, len(vocab), **settings).double()
    ids = torch.tensor(vocab.encode(TEXT.split()))
    scores = gradient_x_input(network, ids, target=0)
    x = network.embedding(ids).detach().unsqueeze(0)  # [1, T, E]
    lengths = torch.tensor([len(ids)])
    eps = 1e-6

    def f(scale_token: int, factor: float) -> float:
        scaled = x.clone()
        scaled[0, scale_token] *= factor
        with torch.no_grad():
            return float(target_log_odds(network.forward_embedded(scaled, lengths).logits, 0)[0])

    for t in range(len(ids)):
        # d/dε f(x with x_t scaled by 1+ε) at 0 is ∇_{x_t} f · x_t.
        numeric = (f(t, 1 + eps) - f(t, 1 - eps)) / (2 * eps)
        assert float(scores[t]) == pytest.approx(numeric, rel=1e-5, abs=1e-8)


@pytest.mark.parametrize("settings", CONFIGS)
def test_occlusion_of_word_i_is_predict_without_word_i(settings, vocab, tiny_network):
    loaded = as_loaded(sharp_network(tiny_network, len(vocab), **settings), vocab)
    tokens = TEXT.split()
    trace = trace_text(loaded, encode_texts([TEXT], vocab, 128)[0], TraceOptions(attributions=("occlusion",)))
    target = loaded.config.labels.index(trace.prediction.label)
    full = log_odds(trace.prediction.probabilities[target])
    (scores,) = [a.scores for a in trace.attributions]
    for i in range(len(tokens)):
        without = " ".join(tokens[:i] + tokens[i + 1:])
        p = predict_encoded(loaded, encode_texts([without], vocab, 128))[0].probabilities[target]
        assert scores[i] == pytest.approx(full - log_odds(p), abs=1e-4)


def test_occlusion_of_a_one_word_text_compares_with_the_empty_answer(vocab, tiny_network):
    loaded = as_loaded(sharp_network(tiny_network, len(vocab), cell="gru"), vocab)
    trace = trace_text(loaded, encode_texts(["fun"], vocab, 128)[0], TraceOptions(attributions=("occlusion",)))
    target = loaded.config.labels.index(trace.prediction.label)
    expected = log_odds(trace.prediction.probabilities[target]) - log_odds(trace.baseline[target])
    assert trace.attributions[0].scores == pytest.approx([expected], abs=1e-4)


@pytest.mark.parametrize("settings", CONFIGS[:4])
def test_scores_are_signed_toward_the_predicted_label(settings, vocab, tiny_network):
    # Two copies that differ only in the classifier bias: one predicts positive, one negative.
    # The bias moves no gradient and no difference, so every score must flip sign exactly.
    encoded = encode_texts([TEXT], vocab, 128)[0]
    options = TraceOptions(attributions=ATTRIBUTION_METHODS)
    traces = []
    for bias in (-20.0, 20.0):
        network = sharp_network(tiny_network, len(vocab), **settings)
        with torch.no_grad():
            network.classifier.bias.copy_(torch.tensor([bias, -bias]))
        traces.append(trace_text(as_loaded(network, vocab), encoded, options))
    positive, negative = traces
    assert (positive.prediction.label, negative.prediction.label) == ("positive", "negative")
    for up, down in zip(positive.attributions[1:], negative.attributions[1:]):  # all but prefix
        assert (up.target_label, down.target_label) == ("positive", "negative")
        assert down.scores == pytest.approx([-s for s in up.scores], abs=1e-4)
    prefix = positive.attributions[0].scores, negative.attributions[0].scores
    assert prefix[0] == pytest.approx([s.delta_positive for s in positive.steps], abs=1e-7)
    assert prefix[1] == pytest.approx([-s.delta_positive for s in negative.steps], abs=1e-7)


def test_repeated_methods_are_computed_once_in_request_order(vocab, tiny_network):
    loaded = as_loaded(tiny_network(len(vocab)), vocab)
    options = TraceOptions(attributions=("occlusion", "prefix", "occlusion"), integrated_gradients_steps=5)
    trace = trace_text(loaded, encode_texts(["fun plot"], vocab, 128)[0], options)
    assert [a.method for a in trace.attributions] == ["occlusion", "prefix"]


@pytest.mark.parametrize("options, fragment", [
    (TraceOptions(attributions=("shap",)), "options are ['prefix'"),
    (TraceOptions(integrated_gradients_steps=0), "[1, 256]"),
    (TraceOptions(integrated_gradients_steps=257), "[1, 256]"),
])
def test_invalid_options_name_the_choices(options, fragment):
    with pytest.raises(ValueError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        options.validate()
