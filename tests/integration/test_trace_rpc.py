"""Trace through the SDK against a real server: every served model, every field, every check."""

from __future__ import annotations

import asyncio
import math

import grpc
import pytest

from rnn_sentiment.client import AsyncSentimentClient, MemoryProfile, SentimentClient, SentimentError
from rnn_sentiment.v1 import sentiment_pb2 as pb
from rnn_sentiment.v1 import sentiment_pb2_grpc as pb_grpc

TEXT = "it 's not a bad film at all , but the plot is thin"
METHODS = ("prefix", "gradient_x_input", "integrated_gradients", "occlusion")
GATES = {"rnn": set(), "gru": {"update_gate", "reset_gate"},
         "lstm": {"input_gate", "forget_gate", "output_gate", "cell_state_norm"}}
OPTIONAL = ("update_gate", "reset_gate", "input_gate", "forget_gate", "output_gate", "cell_state_norm")


def log_odds(p: float) -> float:
    return math.log(p) - math.log1p(-p)


def test_every_model_last_step_equals_predict_with_everything_on(client: SentimentClient) -> None:
    for info in client.list_models():
        trace = client.trace(TEXT, model=info.name, attributions=METHODS, include_memory_profile=True,
                             all_layers=True)
        (predicted,) = client.predict(TEXT, model=info.name).predictions
        assert trace.steps[-1].probabilities == pytest.approx(predicted.probabilities, abs=1e-6), info.name
        assert trace.prediction.label == predicted.label
        assert [a.method for a in trace.attributions] == list(METHODS)
        for method in METHODS:  # looked up by name, whatever the order they were asked in
            found = trace.attribution(method)
            assert found is not None and found.method == method
        assert all(a.target_label == predicted.label and len(a.scores) == len(trace.steps) for a in trace.attributions)


def test_steps_describe_the_cells_of_each_architecture(client: SentimentClient) -> None:
    for info in client.list_models():
        arch = info.architecture
        directions = ["forward", "backward"][: 2 if arch.bidirectional else 1]
        top = client.trace(TEXT, model=info.name)
        every = client.trace(TEXT, model=info.name, all_layers=True)
        first = top.steps[0]
        assert first.hidden_change_norm == pytest.approx(first.hidden_state_norm, rel=1e-5)
        for step in top.steps:
            assert [(c.layer, c.direction) for c in step.cells] == [(arch.num_layers - 1, d) for d in directions]
            for cell in step.cells:
                present = {name for name in OPTIONAL if getattr(cell, name) is not None}
                assert present == GATES[arch.cell_type], info.name
                assert all(0.0 < getattr(cell, g) < 1.0 for g in present - {"cell_state_norm"})
            assert (step.attention_weight is not None) == (arch.pooling == "attention")
            assert step.memory is None and step.hidden_state  # hidden states on by default in the SDK
        assert [len(s.cells) for s in every.steps] == [arch.num_layers * len(directions)] * len(top.steps)
        assert top.memory_profile is None and top.attributions == ()
        assert top.attribution("occlusion") is None  # not asked for
        assert sum(top.baseline_probabilities) == pytest.approx(1.0, abs=1e-5)


def test_integrated_gradients_complete_within_one_percent_at_64_steps(client: SentimentClient) -> None:
    for info in client.list_models():
        trace = client.trace(TEXT, model=info.name, attributions=["integrated_gradients"],
                             integrated_gradients_steps=64, include_hidden_states=False)
        (ig,) = trace.attributions
        assert ig.steps == 64
        assert ig.completeness_gap == pytest.approx(abs(sum(ig.scores) - ig.logit_difference), abs=1e-4)
        assert ig.completeness_gap < 0.01 * abs(ig.logit_difference) + 1e-6, info.name


def test_occlusion_of_a_word_equals_predict_without_it(client: SentimentClient) -> None:
    info = client.model_info()
    words = TEXT.split()
    trace = client.trace(TEXT, attributions=["occlusion"], include_hidden_states=False)
    target = info.labels.index(trace.prediction.label)
    full = log_odds(trace.prediction.probabilities[target])
    shortened = [" ".join(words[:i] + words[i + 1:]) for i in range(len(words))]
    predictions = client.predict(shortened[:8]).predictions + client.predict(shortened[8:]).predictions
    for i, prediction in enumerate(predictions):
        expected = full - log_odds(prediction.probabilities[target])
        assert trace.attributions[0].scores[i] == pytest.approx(expected, abs=1e-3), words[i]


def test_memory_profile_is_reported_when_asked(client: SentimentClient) -> None:
    for info in client.list_models():
        trace = client.trace(TEXT, model=info.name, include_memory_profile=True, include_hidden_states=False)
        memory = [s.memory for s in trace.steps]
        assert all(m is not None and m >= 0 for m in memory)
        profile = trace.memory_profile
        assert profile is not None and profile.last_tokens == math.ceil(len(memory) / 3)
        assert profile.recency == pytest.approx(sum(memory[-profile.last_tokens:]) / sum(memory), rel=1e-4)
        assert 0.0 < profile.decay_per_token
        # Half-life: the distance at which a word's influence halves, decay ** half_life == 0.5.
        if profile.decay_per_token < 1.0:
            assert profile.decay_per_token ** profile.half_life_tokens == pytest.approx(0.5)
        else:
            assert profile.half_life_tokens == math.inf


def test_memory_half_life_is_a_distance_in_tokens_and_infinite_without_decay() -> None:
    def half_life(decay: float) -> float:
        return MemoryProfile(recency=0.5, decay_per_token=decay, last_tokens=3).half_life_tokens

    assert half_life(0.5) == pytest.approx(1.0)
    assert half_life(0.25) == pytest.approx(0.5)
    assert half_life(0.5 ** 0.1) == pytest.approx(10.0)
    # No decay (the server's answer for a text too short to fit one) or a value outside (0, 1):
    # an infinite half-life, never an exception in a caller's report.
    for decay in (1.0, 1.5, 0.0, -0.5):
        assert half_life(decay) == math.inf, decay


def test_top_k_units_keep_the_most_active_units_exactly(client: SentimentClient) -> None:
    full = client.trace(TEXT)
    width = len(full.steps[0].hidden_state)
    k = min(5, width - 1)
    top = client.trace(TEXT, top_k_units=k)
    assert len(top.hidden_units) == k and list(top.hidden_units) == sorted(top.hidden_units)
    activity = [sum(abs(s.hidden_state[u]) for s in full.steps) for u in range(width)]
    assert min(activity[u] for u in top.hidden_units) >= sorted(activity)[-k] - 1e-4
    for small, large in zip(top.steps, full.steps):
        assert small.hidden_state == pytest.approx([large.hidden_state[u] for u in top.hidden_units], abs=1e-6)
        assert small.hidden_state_norm == pytest.approx(large.hidden_state_norm)  # of the full state
    assert client.trace(TEXT, top_k_units=width + 10).hidden_units == ()


def test_top_k_units_of_zero_or_the_whole_width_keep_every_unit_unnamed(client: SentimentClient) -> None:
    # The contract: 0 (or k >= the state's size) keeps every unit, and hidden_units is then empty.
    full = client.trace(TEXT, top_k_units=0)
    width = len(full.steps[0].hidden_state)
    assert width > 1 and full.hidden_units == ()
    whole = client.trace(TEXT, top_k_units=width)
    assert whole.hidden_units == ()
    assert [s.hidden_state for s in whole.steps] == [s.hidden_state for s in full.steps]
    assert len(client.trace(TEXT, top_k_units=width - 1).hidden_units) == width - 1
    activity = [sum(abs(s.hidden_state[u]) for s in full.steps) for u in range(width)]
    one = client.trace(TEXT, top_k_units=1)  # the single most active unit
    assert list(one.hidden_units) == [activity.index(max(activity))]
    assert all(len(s.hidden_state) == 1 for s in one.steps)
    one_word = client.trace("good", top_k_units=2)  # a one-step trace ranks its units too
    assert len(one_word.steps) == 1 and len(one_word.hidden_units) == 2
    assert len(one_word.steps[0].hidden_state) == 2


def test_bad_trace_knobs_are_invalid_argument_naming_each_field(server, client: SentimentClient) -> None:
    # A raw stub: the SDK would refuse these values before sending them.
    request = pb.TraceRequest(text=TEXT, attributions=[pb.ATTRIBUTION_METHOD_OCCLUSION, 0, 42],
                              integrated_gradients_steps=1000, top_k_units=-1)
    with grpc.insecure_channel(server.target) as channel, pytest.raises(grpc.RpcError) as caught:
        pb_grpc.SentimentServiceStub(channel).Trace(request, timeout=30)
    error = SentimentError.from_rpc_error(caught.value)
    assert error.code == "INVALID_ARGUMENT"
    assert set(error.field_violations) == {"attributions[1]", "attributions[2]", "integrated_gradients_steps",
                                           "top_k_units"}
    assert "ATTRIBUTION_METHOD_OCCLUSION" in error.field_violations["attributions[1]"]
    with pytest.raises(ValueError, match="options are"):
        client.trace(TEXT, attributions=["shap"])  # the SDK refuses before sending


def test_the_asyncio_client_traces_with_the_same_options(server, client: SentimentClient) -> None:
    async def trace():  # type: ignore[no-untyped-def]
        async with AsyncSentimentClient(server.target, timeout=30) as aclient:
            return await aclient.trace(TEXT, attributions=["occlusion", "prefix"], include_memory_profile=True,
                                       top_k_units=4, include_hidden_states=True)

    got = asyncio.run(trace())
    expected = client.trace(TEXT, attributions=["occlusion", "prefix"], include_memory_profile=True, top_k_units=4)
    assert [a.method for a in got.attributions] == ["occlusion", "prefix"]
    assert got.attributions[0].scores == pytest.approx(expected.attributions[0].scores, abs=1e-5)
    assert got.hidden_units == expected.hidden_units and got.memory_profile is not None
