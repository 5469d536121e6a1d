"""What every trace picture shares (terminal, PNG, HTML): colours, unit order, which scores to draw.

Pure Python: no numpy, no matplotlib, so the SDK stays light.
"""

from __future__ import annotations

from collections.abc import Sequence

from .results import Attribution, TraceResult

# Sentiment: red for negative, blue for positive (readable with red-green colour blindness).
NEGATIVE_RGB = (202, 0, 32)
POSITIVE_RGB = (5, 113, 176)
NEUTRAL_RGB = (247, 247, 247)
# Hidden units: a different diverging pair, so activations are not mistaken for sentiment.
UNIT_LOW_RGB = (94, 60, 153)  # purple, −1
UNIT_HIGH_RGB = (230, 97, 1)  # orange, +1
# The attribution drawn when several were asked for: the most faithful first (bench-trace).
ATTRIBUTION_PREFERENCE = ("integrated_gradients", "occlusion", "gradient_x_input", "prefix")
ATTRIBUTION_TITLES = {
    "prefix": "prefix change",
    "gradient_x_input": "gradient × input",
    "integrated_gradients": "integrated gradients",
    "occlusion": "occlusion",
}
GATE_FIELDS = ("update_gate", "reset_gate", "input_gate", "forget_gate", "output_gate")


def mix(value: float, low: tuple[int, int, int], high: tuple[int, int, int],
        middle: tuple[int, int, int] = NEUTRAL_RGB) -> tuple[int, int, int]:
    """A diverging colour for value in [−1, 1] (clipped): low at −1, middle at 0, high at +1."""
    value = max(-1.0, min(1.0, value))
    end = high if value >= 0 else low
    weight = abs(value)
    return tuple(round(m + (e - m) * weight) for m, e in zip(middle, end))  # type: ignore[return-value]


def hex_colour(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def sentiment_colour(positive_probability: float) -> tuple[int, int, int]:
    """Red (sure negative) through near-white (undecided) to blue (sure positive)."""
    return mix(2.0 * positive_probability - 1.0, NEGATIVE_RGB, POSITIVE_RGB)


def unit_colour(activation: float) -> tuple[int, int, int]:
    return mix(activation, UNIT_LOW_RGB, UNIT_HIGH_RGB)


def primary_attribution(trace: TraceResult) -> Attribution | None:
    """The attribution to draw: integrated gradients when present, then occlusion, and so on."""
    for method in ATTRIBUTION_PREFERENCE:
        found = trace.attribution(method)
        if found is not None:
            return found
    return None


def toward_positive(trace: TraceResult, attribution: Attribution) -> list[float]:
    """Scores re-signed toward "positive" (they come signed toward the predicted label), for colour."""
    sign = 1.0 if attribution.target_label == "positive" else -1.0
    return [sign * s for s in attribution.scores]


def word_push_toward_positive(trace: TraceResult) -> list[float]:
    """Per word, how far it pushed toward positive: the primary attribution, else the prefix change."""
    attribution = primary_attribution(trace)
    if attribution is not None:
        return toward_positive(trace, attribution)
    return [s.positive_delta for s in trace.steps]


def has_hidden_states(trace: TraceResult) -> bool:
    return bool(trace.steps) and all(step.hidden_state for step in trace.steps)


def unit_names(trace: TraceResult) -> list[int]:
    """The unit index of each position of a step's hidden_state."""
    width = len(trace.steps[0].hidden_state)
    return list(trace.hidden_units) if trace.hidden_units else list(range(width))


def unit_order(trace: TraceResult) -> list[int]:
    """Positions of the hidden state ordered by the word where each unit peaks (|activation|).

    Units that react to the same word sit together and the rows form a diagonal in reading
    order, so the picture shows *when* the memory changes, not the arbitrary unit numbering.
    Ties (same peak word) go positive peaks first, strongest first.
    """
    if not has_hidden_states(trace):
        return []
    width = len(trace.steps[0].hidden_state)
    keys = []
    for position in range(width):
        column = [step.hidden_state[position] for step in trace.steps]
        peak = max(range(len(column)), key=lambda t: abs(column[t]))
        keys.append((peak, column[peak] < 0, -abs(column[peak]), position))
    return [key[-1] for key in sorted(keys)]


def gate_series(trace: TraceResult) -> dict[str, list[float]]:
    """Mean gate activations per word of the top layer, keyed "update" or "update (backward)"."""
    if not trace.steps or not trace.steps[0].cells:
        return {}
    top = max(cell.layer for cell in trace.steps[0].cells)
    series: dict[str, list[float]] = {}
    for index, cell in enumerate(trace.steps[0].cells):
        if cell.layer != top:
            continue
        suffix = "" if cell.direction == "forward" else f" ({cell.direction})"
        for name in GATE_FIELDS:
            if getattr(cell, name) is not None:
                series[name.removesuffix("_gate") + suffix] = [getattr(s.cells[index], name) for s in trace.steps]
    return series


def memory_series(trace: TraceResult) -> list[float] | None:
    if not trace.steps or any(step.memory is None for step in trace.steps):
        return None
    return [float(step.memory) for step in trace.steps]  # type: ignore[arg-type]


def trace_title(trace: TraceResult) -> str:
    p = trace.prediction
    return f"{trace.model}@{trace.model_version}: {p.label} ({p.score:.3f})"


def memory_caption(trace: TraceResult) -> str:
    profile = trace.memory_profile
    if profile is None:
        return ""
    half = profile.half_life_tokens
    half_text = "no decay" if half == float("inf") else f"half-life {half:.1f} tokens"
    return (f"last {profile.last_tokens} tokens carry {profile.recency:.0%} of the influence; "
            f"×{profile.decay_per_token:.2f} per token ({half_text})")


def scale(values: Sequence[float]) -> float:
    """The largest |value|, or 1 when all are 0 (so a division by it is always safe)."""
    largest = max((abs(v) for v in values), default=0.0)
    return largest if largest > 0 else 1.0
