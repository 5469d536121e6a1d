"""TraceRequest -> TraceOptions: the knobs carried over, bad ones refused with the field named, in
bounded errors; the limits on a trace's work, checked once the text's tokens are known."""

from __future__ import annotations

import grpc
import pytest

from rnn_sentiment.model.config import ModelConfig
from rnn_sentiment.model.trace import ATTRIBUTION_METHODS as MODEL_ATTRIBUTION_METHODS
from rnn_sentiment.model.trace import (
    DEFAULT_INTEGRATED_GRADIENTS_STEPS, MAX_INTEGRATED_GRADIENTS_STEPS, MAX_INTEGRATED_GRADIENTS_TOKEN_STEPS,
    MAX_MEMORY_PROFILE_UNIT_TOKENS, MAX_OCCLUSION_TOKENS, TraceOptions,
)
from rnn_sentiment.server.errors import ServiceError
from rnn_sentiment.server.trace_options import (
    ATTRIBUTION_ENUMS, ATTRIBUTION_METHODS, MAX_ATTRIBUTION_VALUES, trace_limit_violations, trace_options_from,
)
from rnn_sentiment.v1 import sentiment_pb2 as pb


def test_the_request_knobs_become_options() -> None:
    options = trace_options_from(pb.TraceRequest(
        text="good", attributions=[pb.ATTRIBUTION_METHOD_PREFIX, pb.ATTRIBUTION_METHOD_OCCLUSION],
        integrated_gradients_steps=8, all_layers=True, include_memory_profile=True, include_hidden_states=True))
    assert options.attributions == ("prefix", "occlusion")
    assert (options.integrated_gradients_steps, options.all_layers, options.memory) == (8, True, True)
    assert options.hidden_states


def test_every_method_of_the_contract_reaches_the_model_and_back() -> None:
    # Each enum value but UNSPECIFIED becomes a method the model computes, and each of the model's
    # methods can be asked for: a value added on one side only fails here.
    requested = [n for n in pb.AttributionMethod.values() if n != pb.ATTRIBUTION_METHOD_UNSPECIFIED]
    options = trace_options_from(pb.TraceRequest(text="good", attributions=requested))
    assert sorted(options.attributions) == sorted(MODEL_ATTRIBUTION_METHODS)
    assert [ATTRIBUTION_ENUMS[method] for method in options.attributions] == requested


def test_unspecified_is_refused_naming_the_methods() -> None:
    with pytest.raises(ServiceError) as raised:
        trace_options_from(pb.TraceRequest(text="good", attributions=[pb.ATTRIBUTION_METHOD_UNSPECIFIED]))
    assert "attributions[0]" in raised.value.message and "ATTRIBUTION_METHOD_OCCLUSION" in raised.value.message


def test_hidden_states_are_built_only_when_the_response_carries_them() -> None:
    assert not trace_options_from(pb.TraceRequest(text="good", include_hidden_states=False)).hidden_states


def test_bad_knobs_are_named() -> None:
    with pytest.raises(ServiceError) as raised:
        trace_options_from(pb.TraceRequest(text="good", attributions=[99], integrated_gradients_steps=100000,
                                           top_k_units=-1))
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
    for field in ("attributions[0]", "integrated_gradients_steps", "top_k_units"):
        assert field in raised.value.message


def test_a_million_bad_attributions_make_one_small_violation() -> None:
    request = pb.TraceRequest(text="good", attributions=[99] * 1_000_000)
    with pytest.raises(ServiceError) as raised:
        trace_options_from(request)
    error = raised.value
    assert [v.field for v in error.violations] == ["attributions"]
    assert "1000000 values" in error.message and str(MAX_ATTRIBUTION_VALUES) in error.message
    assert sum(len(value) for _, value in error.trailing_metadata()) < 1024


def test_every_method_and_repeats_stay_allowed_up_to_the_bound() -> None:
    methods = list(ATTRIBUTION_METHODS)
    options = trace_options_from(pb.TraceRequest(
        text="good", attributions=(methods * MAX_ATTRIBUTION_VALUES)[:MAX_ATTRIBUTION_VALUES]))
    assert set(options.attributions) == set(ATTRIBUTION_METHODS.values())


GRU_256 = ModelConfig(cell="gru", embedding_dim=256, hidden_size=256)


def test_the_heaviest_allowed_options_pass_the_limits() -> None:
    # Every SST-2 sentence (< 64 tokens) may have everything; 128 tokens every attribution at 64 steps.
    everything = TraceOptions(attributions=tuple(ATTRIBUTION_METHODS.values()), memory=True,
                              integrated_gradients_steps=MAX_INTEGRATED_GRADIENTS_TOKEN_STEPS // 64)
    assert trace_limit_violations(everything, 64, GRU_256) == []
    at_max_tokens = TraceOptions(attributions=tuple(ATTRIBUTION_METHODS.values()), integrated_gradients_steps=64)
    assert trace_limit_violations(at_max_tokens, 128, GRU_256) == []


def test_options_over_the_limits_are_named_with_the_limit() -> None:
    heavy = TraceOptions(attributions=("integrated_gradients", "occlusion"), integrated_gradients_steps=256,
                         memory=True)
    violations = {v.field: v.description for v in trace_limit_violations(heavy, 129, GRU_256)}
    assert set(violations) == {"integrated_gradients_steps", "include_memory_profile", "attributions"}
    assert str(MAX_INTEGRATED_GRADIENTS_TOKEN_STEPS) in violations["integrated_gradients_steps"]
    assert "at most 63 steps" in violations["integrated_gradients_steps"]
    assert "at most 64" in violations["include_memory_profile"]
    assert str(MAX_OCCLUSION_TOKENS) in violations["attributions"]
    # all_layers traces every layer's units: a shorter limit.
    two_layers = ModelConfig(cell="gru", embedding_dim=256, hidden_size=256, num_layers=2)
    deep = TraceOptions(memory=True, all_layers=True)
    assert [v.field for v in trace_limit_violations(deep, 64, two_layers)] == ["include_memory_profile"]
    assert trace_limit_violations(TraceOptions(memory=True), 64, two_layers) == []


def test_zero_steps_mean_the_default_and_the_maximum_is_allowed() -> None:
    assert trace_options_from(pb.TraceRequest(text="good")).integrated_gradients_steps == (
        DEFAULT_INTEGRATED_GRADIENTS_STEPS)
    most = trace_options_from(pb.TraceRequest(text="good", integrated_gradients_steps=MAX_INTEGRATED_GRADIENTS_STEPS))
    assert most.integrated_gradients_steps == MAX_INTEGRATED_GRADIENTS_STEPS
    assert trace_options_from(pb.TraceRequest(text="good", integrated_gradients_steps=1)).integrated_gradients_steps == 1


def test_one_step_over_the_maximum_is_refused_with_the_range() -> None:
    with pytest.raises(ServiceError) as raised:
        trace_options_from(pb.TraceRequest(text="good", integrated_gradients_steps=MAX_INTEGRATED_GRADIENTS_STEPS + 1))
    assert [v.field for v in raised.value.violations] == ["integrated_gradients_steps"]
    assert (f"is {MAX_INTEGRATED_GRADIENTS_STEPS + 1}; must be 1 to {MAX_INTEGRATED_GRADIENTS_STEPS} "
            f"(0 means {DEFAULT_INTEGRATED_GRADIENTS_STEPS})") in raised.value.message


def test_zero_top_k_units_keeps_every_unit_and_is_accepted() -> None:
    trace_options_from(pb.TraceRequest(text="good", top_k_units=0))
    with pytest.raises(ServiceError) as raised:
        trace_options_from(pb.TraceRequest(text="good", top_k_units=-1))
    assert "top_k_units: is -1; must be >= 0" in raised.value.message


def test_the_documented_sixteen_attributions_pass_and_seventeen_are_one_violation() -> None:
    # README and docs/trace.md promise callers "<= 16 attributions": the number itself, not the constant.
    methods = list(ATTRIBUTION_METHODS)
    trace_options_from(pb.TraceRequest(text="good", attributions=(methods * 20)[:16]))
    with pytest.raises(ServiceError) as raised:
        trace_options_from(pb.TraceRequest(text="good", attributions=(methods * 20)[:17]))
    assert [v.field for v in raised.value.violations] == ["attributions"]
    assert "has 17 values; at most 16" in raised.value.message


def test_work_exactly_at_each_limit_passes_and_one_token_more_is_refused() -> None:
    ig = TraceOptions(attributions=("integrated_gradients",), integrated_gradients_steps=64)
    tokens = MAX_INTEGRATED_GRADIENTS_TOKEN_STEPS // 64
    assert trace_limit_violations(ig, tokens, GRU_256) == []
    (over,) = trace_limit_violations(ig, tokens + 1, GRU_256)
    assert over.field == "integrated_gradients_steps"
    assert f"at most {MAX_INTEGRATED_GRADIENTS_TOKEN_STEPS // (tokens + 1)} steps here" in over.description

    memory = TraceOptions(memory=True)
    tokens = MAX_MEMORY_PROFILE_UNIT_TOKENS // GRU_256.hidden_size
    assert trace_limit_violations(memory, tokens, GRU_256) == []
    assert [v.field for v in trace_limit_violations(memory, tokens + 1, GRU_256)] == ["include_memory_profile"]

    occlusion = TraceOptions(attributions=("occlusion",))
    assert trace_limit_violations(occlusion, MAX_OCCLUSION_TOKENS, GRU_256) == []
    (over,) = trace_limit_violations(occlusion, MAX_OCCLUSION_TOKENS + 1, GRU_256)
    assert over.description.endswith(f"the text has {MAX_OCCLUSION_TOKENS + 1}")


def test_each_limit_applies_only_to_the_work_asked_for() -> None:
    # Many steps matter only to integrated gradients; a long text only to what it makes heavy.
    light = TraceOptions(attributions=("prefix",), integrated_gradients_steps=MAX_INTEGRATED_GRADIENTS_STEPS)
    assert trace_limit_violations(light, 4096, GRU_256) == []


def test_the_memory_hint_to_drop_all_layers_appears_only_when_that_helps() -> None:
    one_layer = ModelConfig(cell="gru", embedding_dim=256, hidden_size=256, num_layers=1)
    two_layers = ModelConfig(cell="gru", embedding_dim=256, hidden_size=256, num_layers=2)
    hint = "without all_layers it traces fewer units"
    (single,) = trace_limit_violations(TraceOptions(memory=True, all_layers=True), 1000, one_layer)
    assert hint not in single.description
    (alone,) = trace_limit_violations(TraceOptions(memory=True), 1000, two_layers)
    assert hint not in alone.description
    (deep,) = trace_limit_violations(TraceOptions(memory=True, all_layers=True), 1000, two_layers)
    assert deep.description.endswith(hint)
    assert "memory profile of 512 hidden units may cover at most 32 (units x tokens at most 16384)" in deep.description
