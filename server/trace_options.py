"""TraceRequest -> TraceOptions, refusing bad knobs with INVALID_ARGUMENT that names the field;
and, once the text is tokenized, refusing options whose work would exceed the trace limits."""

from __future__ import annotations

from rnn_sentiment.model.config import ModelConfig
from rnn_sentiment.model.trace import ATTRIBUTION_METHODS as MODEL_ATTRIBUTION_METHODS
from rnn_sentiment.model.trace import (
    DEFAULT_INTEGRATED_GRADIENTS_STEPS, MAX_INTEGRATED_GRADIENTS_STEPS, MAX_INTEGRATED_GRADIENTS_TOKEN_STEPS,
    MAX_MEMORY_PROFILE_UNIT_TOKENS, MAX_OCCLUSION_TOKENS, TraceOptions, memory_profile_units,
)
from rnn_sentiment.v1 import sentiment_pb2 as pb

from .errors import FieldViolation, invalid_argument


def model_method_name(number: int) -> str:
    """The model layer's name of an AttributionMethod value, by rule: the enum name without its
    prefix, lower case (ATTRIBUTION_METHOD_GRADIENT_X_INPUT -> "gradient_x_input")."""
    return pb.AttributionMethod.Name(number).removeprefix("ATTRIBUTION_METHOD_").lower()


# Contract enum -> the model layer's method name, for each value the model computes. A value it
# lacks (UNSPECIFIED) is refused like an unknown number.
ATTRIBUTION_METHODS = {
    number: model_method_name(number) for number in pb.AttributionMethod.values()
    if model_method_name(number) in MODEL_ATTRIBUTION_METHODS
}
ATTRIBUTION_ENUMS = {name: number for number, name in ATTRIBUTION_METHODS.items()}
# Values `attributions` may hold: every method, repeats allowed (each is computed once). Checked
# before any value is looked at, so a million bad values make one violation, not a million.
MAX_ATTRIBUTION_VALUES = 16


def trace_options_from(request: pb.TraceRequest) -> TraceOptions:
    """Every violation of the request's trace knobs at once, or the options they ask for."""
    violations = []
    valid = ", ".join(pb.AttributionMethod.Name(n) for n in ATTRIBUTION_METHODS)
    if len(request.attributions) > MAX_ATTRIBUTION_VALUES:
        violations.append(FieldViolation(
            "attributions", f"has {len(request.attributions)} values; at most {MAX_ATTRIBUTION_VALUES} "
                            f"(each method once is enough: {valid})"))
    else:
        for index, number in enumerate(request.attributions):
            if number not in ATTRIBUTION_METHODS:
                violations.append(FieldViolation(f"attributions[{index}]", f"is {number}; options are {valid}"))
    steps = request.integrated_gradients_steps or DEFAULT_INTEGRATED_GRADIENTS_STEPS
    if not 1 <= steps <= MAX_INTEGRATED_GRADIENTS_STEPS:
        violations.append(FieldViolation(
            "integrated_gradients_steps",
            f"is {request.integrated_gradients_steps}; must be 1 to {MAX_INTEGRATED_GRADIENTS_STEPS} (0 means "
            f"{DEFAULT_INTEGRATED_GRADIENTS_STEPS})"))
    if request.top_k_units < 0:
        violations.append(FieldViolation("top_k_units", f"is {request.top_k_units}; must be >= 0 (0 keeps every unit)"))
    if violations:
        raise invalid_argument(violations)
    return TraceOptions(
        attributions=tuple(ATTRIBUTION_METHODS[n] for n in request.attributions),
        integrated_gradients_steps=steps,
        all_layers=request.all_layers,
        memory=request.include_memory_profile,
        # The step states become Python lists only when the response will carry them.
        hidden_states=request.include_hidden_states,
    )


def trace_limit_violations(options: TraceOptions, token_count: int, config: ModelConfig) -> list[FieldViolation]:
    """The options whose work on a text of `token_count` tokens exceeds the limits in
    model/trace.py, each named with its limit and what would fit (empty: within every limit)."""
    violations = []
    if "integrated_gradients" in options.attributions:
        steps = options.integrated_gradients_steps
        if token_count * steps > MAX_INTEGRATED_GRADIENTS_TOKEN_STEPS:
            fitting = MAX_INTEGRATED_GRADIENTS_TOKEN_STEPS // token_count
            violations.append(FieldViolation(
                "integrated_gradients_steps",
                f"is {steps} for a text of {token_count} tokens; tokens x steps may be at most "
                f"{MAX_INTEGRATED_GRADIENTS_TOKEN_STEPS}: at most {fitting} steps here, or a shorter text"))
    if options.memory:
        units = memory_profile_units(config, options.all_layers)
        if units * token_count > MAX_MEMORY_PROFILE_UNIT_TOKENS:
            fewer_units = options.all_layers and config.num_layers > 1
            violations.append(FieldViolation(
                "include_memory_profile",
                f"the text has {token_count} tokens; the memory profile of {units} hidden units may cover at most "
                f"{MAX_MEMORY_PROFILE_UNIT_TOKENS // units} (units x tokens at most {MAX_MEMORY_PROFILE_UNIT_TOKENS})"
                + ("; without all_layers it traces fewer units" if fewer_units else "")))
    if "occlusion" in options.attributions and token_count > MAX_OCCLUSION_TOKENS:
        violations.append(FieldViolation(
            "attributions", f"ATTRIBUTION_METHOD_OCCLUSION covers at most {MAX_OCCLUSION_TOKENS} tokens; "
                            f"the text has {token_count}"))
    return violations
