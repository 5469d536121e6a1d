"""Trace rendering for people: a per-word table (the terminal form of the hidden-state picture)
and JSON. Pictures: render_png.trace_png (needs the `render` extra) and render_html.trace_html."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict

from .results import TraceResult
from .trace_layout import (
    ATTRIBUTION_TITLES, gate_series, memory_caption, memory_series, scale,
    sentiment_colour, word_push_toward_positive,
)

_BAR_WIDTH = 20
_ATTRIBUTION_HEADERS = {"prefix": "prefix", "gradient_x_input": "g×in", "integrated_gradients": "IG",
                        "occlusion": "occl"}
_GATE_HEADERS = {"update": "z", "reset": "r", "input": "i", "forget": "f", "output": "o"}
_RESET = "\x1b[0m"


def _bar(probability: float) -> str:
    """A bar from the middle: left of centre leans negative, right leans positive."""
    half = _BAR_WIDTH // 2
    filled = round(abs(probability - 0.5) * 2 * half)
    if probability >= 0.5:
        return " " * half + "|" + "+" * filled + " " * (half - filled)
    return " " * (half - filled) + "-" * filled + "|" + " " * half


def _foreground(text: str, rgb: tuple[int, int, int]) -> str:
    return f"\x1b[38;2;{rgb[0]};{rgb[1]};{rgb[2]}m{text}{_RESET}"


def _background(text: str, rgb: tuple[int, int, int]) -> str:
    # Dark text on the pale end of the scale, light text on the saturated end.
    ink = "30" if sum(rgb) > 450 else "97"
    return f"\x1b[48;2;{rgb[0]};{rgb[1]};{rgb[2]}m\x1b[{ink}m{text}{_RESET}"


def _readable(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    """The same hue, dark enough to read as text colour on a light or dark terminal."""
    return rgb if sum(rgb) < 600 else (128, 128, 128)


def trace_table(trace: TraceResult, color: bool = False) -> str:
    """A table of token, P(positive) if the text ended there, its change, the hidden-state norm
    and its change, the top layer's mean gates, every attribution asked for, and the memory.

    Tokens the model does not know are marked with `?` (the network read them as <unk>). With
    `color`, each token is coloured by its prefix sentiment (red negative, blue positive) and a
    last line shows the sentence with each word's background coloured by its attribution.
    """
    gates = gate_series(trace)
    memory = memory_series(trace)
    columns: list[tuple[str, list[str]]] = [
        ("P(pos)", [f"{trace.positive_probability(s):.3f}" for s in trace.steps]),
        ("change", [f"{s.positive_delta:+.3f}" for s in trace.steps]),
        ("|h|", [f"{s.hidden_state_norm:.2f}" for s in trace.steps]),
        ("|Δh|", [f"{s.hidden_change_norm:.2f}" for s in trace.steps]),
    ]
    for name, values in gates.items():
        base, _, direction = name.partition(" ")
        columns.append((_GATE_HEADERS[base] + ("←" if direction else ""), [f"{v:.2f}" for v in values]))
    if any(c.cell_state_norm is not None for s in trace.steps[:1] for c in s.cells):
        columns.append(("|c|", [f"{s.cells[-1].cell_state_norm:.2f}" for s in trace.steps]))
    if any(s.attention_weight is not None for s in trace.steps):
        columns.append(("attn", [f"{s.attention_weight or 0.0:.3f}" for s in trace.steps]))
    for attribution in trace.attributions:
        columns.append((_ATTRIBUTION_HEADERS[attribution.method], [f"{v:+.3f}" for v in attribution.scores]))
    if memory is not None:
        columns.append(("memory", [f"{v:.2e}" for v in memory]))

    width = max([len("token")] + [len(s.token) + 1 for s in trace.steps])
    widths = [max(len(title), *(len(v) for v in values)) for title, values in columns]
    cells = "  ".join(f"{title:>{w}}" for (title, _), w in zip(columns, widths))
    header = f"{'token':<{width}}  {cells}  negative{' ' * (_BAR_WIDTH - 15)}positive"
    lines = [header, "-" * len(header)]
    for row, step in enumerate(trace.steps):
        positive = trace.positive_probability(step)
        token = f"{step.token if step.in_vocabulary else step.token + '?':<{width}}"
        bar = _bar(positive)
        if color:
            token = _foreground(token, _readable(sentiment_colour(positive)))
            bar = _foreground(bar, _readable(sentiment_colour(positive)))
        values = "  ".join(f"{values[row]:>{w}}" for (_, values), w in zip(columns, widths))
        lines.append(f"{token}  {values}  {bar}")
    lines.append("-" * len(header))
    for attribution in trace.attributions:
        if attribution.completeness_gap is not None and attribution.logit_difference is not None:
            relative = attribution.completeness_gap / max(abs(attribution.logit_difference), 1e-12)
            lines.append(
                f"{ATTRIBUTION_TITLES[attribution.method]}: {attribution.steps} steps, scores sum to the logit "
                f"difference {attribution.logit_difference:+.4f} within {attribution.completeness_gap:.2e} "
                f"({relative:.2%}); scores are toward {attribution.target_label!r}"
            )
    if trace.memory_profile is not None:
        lines.append(f"memory: {memory_caption(trace)}")
    if color:
        lines.append("words: " + _coloured_sentence(trace))
    p = trace.prediction
    lines.append(
        f"prediction: {p.label} ({p.score:.3f}) by {trace.model}@{trace.model_version}; "
        f"{p.token_count} tokens, {p.unknown_token_count} unknown{', truncated' if p.truncated else ''}"
    )
    return "\n".join(lines)


def _coloured_sentence(trace: TraceResult) -> str:
    """The words, each on a background coloured by its attribution toward positive (or its change)."""
    values = word_push_toward_positive(trace)
    top = scale(values)
    return " ".join(_background(s.token, _mix_score(v / top)) for s, v in zip(trace.steps, values))


def _mix_score(value: float) -> tuple[int, int, int]:
    return sentiment_colour((value + 1.0) / 2.0)


def traces_table(traces: Sequence[TraceResult], color: bool = False) -> str:
    """One table per trace (e.g. two models on the same text), then their memory side by side."""
    text = "\n\n".join(trace_table(t, color=color) for t in traces)
    if len(traces) > 1 and all(t.memory_profile is not None for t in traces):
        text += "\n\n" + "\n".join(f"{t.model:>16}: {memory_caption(t)}" for t in traces)
    return text


def trace_json(trace: TraceResult | Sequence[TraceResult]) -> str:
    """The whole trace as JSON (hidden states included when the trace has them); a list for several."""
    if isinstance(trace, TraceResult):
        return json.dumps(asdict(trace), indent=2)
    return json.dumps([asdict(t) for t in trace], indent=2)
