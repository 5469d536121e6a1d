"""TraceRequest -> TraceOptions, refusing bad knobs with INVALID_ARGUMENT that names the field."""

from __future__ import annotations

from rnn_sentiment.model.trace import (
    DEFAULT_INTEGRATED_GRADIENTS_STEPS, MAX_INTEGRATED_GRADIENTS_STEPS, TraceOptions,
)
from rnn_sentiment.v1 import sentiment_pb2 as pb

from .errors import FieldViolation, invalid_argument

# Contract enum -> the model layer's method name.
ATTRIBUTION_METHODS = {
    pb.ATTRIBUTION_METHOD_PREFIX: "prefix",
    pb.ATTRIBUTION_METHOD_GRADIENT_X_INPUT: "gradient_x_input",
    pb.ATTRIBUTION_METHOD_INTEGRATED_GRADIENTS: "integrated_gradients",
    pb.ATTRIBUTION_METHOD_OCCLUSION: "occlusion",
}
ATTRIBUTION_ENUMS = {name: number for number, name in ATTRIBUTION_METHODS.items()}


def trace_options_from(request: pb.TraceRequest) -> TraceOptions:
    """Every violation of the request's trace knobs at once, or the options they ask for."""
    violations = []
    valid = ", ".join(pb.AttributionMethod.Name(n) for n in ATTRIBUTION_METHODS)
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
