"""The hidden-state picture as one self-contained HTML file: inline SVG drawn by hand, no script,
no network. Hovering any word, point, bar or heatmap cell shows its values (SVG <title>)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

from .results import TraceResult, TraceStep
from .trace_layout import (
    ATTRIBUTION_TITLES, NEGATIVE_RGB, POSITIVE_RGB, gate_series, has_hidden_states, hex_colour,
    memory_caption, memory_series, primary_attribution, scale, sentiment_colour, toward_positive,
    trace_title, unit_colour, unit_names, unit_order, word_push_toward_positive,
)

__all__ = ["trace_html"]

_LEFT = 150  # room for the row labels
_RIGHT = 16
_GAP = 18
_HEIGHTS = {"sentiment": 110, "attribution": 80, "memory": 80, "gates": 70}
_WORDS_HEIGHT = 80
_GATE_COLOURS = {"update": "#1b9e77", "reset": "#d95f02", "input": "#1b9e77", "forget": "#7570b3",
                 "output": "#e7298a"}
_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 16px; color: #222; background: #fff; }
h1 { font-size: 18px; margin: 0 0 12px; }
.traces { display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start; }
.trace h2 { font-size: 15px; margin: 0 0 4px; }
.trace p { font-size: 12px; margin: 2px 0; color: #444; }
.words { margin: 8px 0; line-height: 2; max-width: 900px; }
.word { padding: 2px 4px; border-radius: 3px; margin-right: 2px; cursor: default; }
.word:hover, svg rect:hover, svg circle:hover { outline: 1px solid #000; stroke: #000; }
svg text { font-size: 11px; fill: #333; }
svg .label { font-size: 11px; fill: #555; }
"""


def trace_html(traces: TraceResult | Sequence[TraceResult], title: str = "") -> str:
    """One self-contained HTML page for one trace, or several side by side (same text, other models).

    Per trace: the words coloured by their attribution (hover for every value of that word),
    then one SVG whose rows share the words' x positions: P(positive) if the text ended there,
    the attribution bars, the memory profile (log scale, shared across traces), the mean gates,
    and the hidden units × words heatmap, units ordered by the word where they peak.
    """
    traces = [traces] if isinstance(traces, TraceResult) else list(traces)
    if not traces:
        raise ValueError("nothing to draw: pass at least one trace")
    text = " ".join(step.token for step in traces[0].steps)
    heading = title or f"Trace of “{text}”"
    limits = _memory_limits(traces)
    # The same rows for every trace, so side-by-side panels line up row for row.
    rows = ["sentiment"]
    if any(primary_attribution(t) is not None for t in traces):
        rows.append("attribution")
    if limits is not None:
        rows.append("memory")
    if any(gate_series(t) for t in traces):
        rows.append("gates")
    panels = "\n".join(_panel(trace, limits, rows) for trace in traces)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{escape(heading)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        f"<h1>{escape(heading)}</h1>\n<div class=\"traces\">\n{panels}\n</div>\n</body>\n</html>\n"
    )


def _memory_limits(traces: Sequence[TraceResult]) -> tuple[float, float] | None:
    values = [v for t in traces for v in (memory_series(t) or []) if v > 0]
    return (min(values) / 2, max(values) * 2) if values else None


def _panel(trace: TraceResult, limits: tuple[float, float] | None, rows: list[str]) -> str:
    lines = [f"<section class=\"trace\">\n<h2>{escape(trace_title(trace))}</h2>"]
    for attribution in trace.attributions:
        if attribution.completeness_gap is not None and attribution.logit_difference is not None:
            lines.append(f"<p>{escape(ATTRIBUTION_TITLES[attribution.method])}: {attribution.steps} steps, "
                         f"completeness gap {attribution.completeness_gap:.2e} of "
                         f"{attribution.logit_difference:+.4f}</p>")
    if trace.memory_profile is not None:
        lines.append(f"<p>memory: {escape(memory_caption(trace))}</p>")
    lines.append(_words(trace))
    lines.append(_svg(trace, limits, rows))
    lines.append("</section>")
    return "\n".join(lines)


def _step_summary(trace: TraceResult, index: int) -> str:
    """Every value of one word, for its hover text."""
    step = trace.steps[index]
    parts = [f"{step.token}{'' if step.in_vocabulary else ' (unknown)'}",
             f"P(positive) {trace.positive_probability(step):.3f} ({step.positive_delta:+.3f})",
             f"|h| {step.hidden_state_norm:.3f}, |Δh| {step.hidden_change_norm:.3f}"]
    for cell in step.cells:
        gates = [f"{name.removesuffix('_gate')} {getattr(cell, name):.3f}"
                 for name in ("update_gate", "reset_gate", "input_gate", "forget_gate", "output_gate")
                 if getattr(cell, name) is not None]
        if cell.cell_state_norm is not None:
            gates.append(f"|c| {cell.cell_state_norm:.3f}")
        if gates:
            parts.append(f"layer {cell.layer} {cell.direction}: " + ", ".join(gates))
    if step.attention_weight is not None:
        parts.append(f"attention {step.attention_weight:.3f}")
    for attribution in trace.attributions:
        parts.append(f"{ATTRIBUTION_TITLES[attribution.method]} {attribution.scores[index]:+.4f}")
    if step.memory is not None:
        parts.append(f"memory {step.memory:.3e}")
    return "\n".join(parts)


def _words(trace: TraceResult) -> str:
    values = word_push_toward_positive(trace)
    top = scale(values)
    spans = []
    for index, (step, value) in enumerate(zip(trace.steps, values)):
        colour = sentiment_colour((value / top + 1.0) / 2.0)
        ink = "#000" if sum(colour) > 450 else "#fff"
        spans.append(f"<span class=\"word\" style=\"background:{hex_colour(colour)};color:{ink}\" "
                     f"title=\"{escape(_step_summary(trace, index))}\">{escape(step.token)}</span>")
    attribution = primary_attribution(trace)
    what = ATTRIBUTION_TITLES[attribution.method] if attribution is not None else "prefix change"
    return (f"<p>words coloured by {escape(what)} (blue: toward positive, red: toward negative); "
            f"hover for values</p>\n<div class=\"words\">{' '.join(spans)}</div>")


def _svg(trace: TraceResult, limits: tuple[float, float] | None, rows: list[str]) -> str:
    count = len(trace.steps)
    cell = 32 if count <= 30 else max(10, 960 // count)
    width = _LEFT + count * cell + _RIGHT
    units = unit_order(trace) if has_hidden_states(trace) else []
    unit_height = max(2, min(10, 360 // len(units))) if units else 0
    heights = [_HEIGHTS[r] for r in rows] + ([len(units) * unit_height] if units else [])
    height = sum(heights) + _GAP * len(heights) + _WORDS_HEIGHT
    parts = [f"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" "
             f"viewBox=\"0 0 {width} {height}\" role=\"img\">",
             f"<rect x=\"0\" y=\"0\" width=\"{width}\" height=\"{height}\" fill=\"#ffffff\"/>"]
    top = _GAP // 2

    def x_of(index: int) -> float:
        return _LEFT + (index + 0.5) * cell

    for row in rows:
        h = _HEIGHTS[row]
        draw = {"sentiment": _sentiment_row, "attribution": _attribution_row, "memory": _memory_row,
                "gates": _gates_row}[row]
        missing = _missing(trace, row)
        if missing:
            parts.extend([_frame(top, h, cell, count), _label(top, h, row),
                          f"<text x=\"{_LEFT + 8}\" y=\"{top + h / 2 + 4:.1f}\">{escape(missing)}</text>"])
        else:
            parts.extend(draw(trace, x_of, cell, top, h, limits))
        top += h + _GAP
    if units:
        parts.extend(_unit_rows(trace, units, cell, top, unit_height))
        top += len(units) * unit_height + _GAP
    for index, step in enumerate(trace.steps):  # the words, under the lowest row, slanted
        x, y = x_of(index), top
        parts.append(f"<text x=\"{x:.1f}\" y=\"{y}\" text-anchor=\"end\" transform=\"rotate(-55 {x:.1f} {y})\">"
                     f"<title>{escape(_step_summary(trace, index))}</title>{escape(step.token)}</text>")
    parts.append("</svg>")
    return "\n".join(parts)


def _missing(trace: TraceResult, row: str) -> str:
    """Why this trace has nothing for a row another trace on the page has ("" when it has it)."""
    if row == "attribution" and primary_attribution(trace) is None:
        return "no attribution asked for"
    if row == "memory" and memory_series(trace) is None:
        return "no memory profile asked for"
    if row == "gates" and not gate_series(trace):
        plain = bool(trace.steps and trace.steps[0].cells)
        return "no gates: a plain RNN rewrites its whole state at every word" if plain else "no gate data"
    return ""


def _label(top: int, h: int, text: str) -> str:
    lines = text.split("\n")
    first = top + h / 2 - 6 * (len(lines) - 1)
    spans = "".join(f"<tspan x=\"{_LEFT - 8}\" y=\"{first + 13 * i:.1f}\">{escape(line)}</tspan>"
                    for i, line in enumerate(lines))
    return f"<text class=\"label\" text-anchor=\"end\">{spans}</text>"


def _frame(top: int, h: int, cell: int, count: int) -> str:
    return (f"<rect x=\"{_LEFT}\" y=\"{top}\" width=\"{count * cell}\" height=\"{h}\" fill=\"none\" "
            f"stroke=\"#cccccc\"/>")


def _sentiment_row(trace: TraceResult, x_of, cell: int, top: int, h: int, limits) -> list[str]:  # type: ignore[no-untyped-def]
    count = len(trace.steps)
    y_of = lambda p: top + (1.0 - p) * h  # noqa: E731
    positive = [trace.positive_probability(s) for s in trace.steps]
    points = " ".join(f"{x_of(i):.1f},{y_of(p):.1f}" for i, p in enumerate(positive))
    parts = [_frame(top, h, cell, count), _label(top, h, "P(positive)\nif it ended here"),
             f"<line x1=\"{_LEFT}\" x2=\"{_LEFT + count * cell}\" y1=\"{y_of(0.5):.1f}\" y2=\"{y_of(0.5):.1f}\" "
             f"stroke=\"#999999\" stroke-dasharray=\"2 3\"/>",
             f"<polyline points=\"{points}\" fill=\"none\" stroke=\"#444444\" stroke-width=\"1.5\"/>"]
    for index, p in enumerate(positive):
        parts.append(f"<circle cx=\"{x_of(index):.1f}\" cy=\"{y_of(p):.1f}\" r=\"4.5\" "
                     f"fill=\"{hex_colour(sentiment_colour(p))}\" stroke=\"#444444\">"
                     f"<title>{escape(_step_summary(trace, index))}</title></circle>")
    return parts


def _attribution_row(trace: TraceResult, x_of, cell: int, top: int, h: int, limits) -> list[str]:  # type: ignore[no-untyped-def]
    attribution = primary_attribution(trace)
    assert attribution is not None
    largest = scale(attribution.scores)
    middle = top + h / 2
    signed = toward_positive(trace, attribution)
    title = f"{ATTRIBUTION_TITLES[attribution.method]}\ntoward {attribution.target_label}"
    parts = [_frame(top, h, cell, len(trace.steps)), _label(top, h, title),
             f"<line x1=\"{_LEFT}\" x2=\"{_LEFT + len(trace.steps) * cell}\" y1=\"{middle}\" y2=\"{middle}\" "
             f"stroke=\"#666666\"/>"]
    for index, score in enumerate(attribution.scores):
        length = abs(score) / largest * (h / 2 - 2)
        y = middle - length if score >= 0 else middle
        colour = hex_colour(POSITIVE_RGB if signed[index] >= 0 else NEGATIVE_RGB)
        parts.append(f"<rect x=\"{x_of(index) - cell * 0.4:.1f}\" y=\"{y:.1f}\" width=\"{cell * 0.8:.1f}\" "
                     f"height=\"{max(length, 0.5):.1f}\" fill=\"{colour}\"><title>{escape(trace.steps[index].token)}: "
                     f"{escape(ATTRIBUTION_TITLES[attribution.method])} {score:+.4f} toward "
                     f"{escape(attribution.target_label)}</title></rect>")
    return parts


def _memory_row(trace: TraceResult, x_of, cell: int, top: int, h: int,  # type: ignore[no-untyped-def]
                limits: tuple[float, float]) -> list[str]:
    memory = memory_series(trace)
    assert memory is not None
    low, high = math.log10(limits[0]), math.log10(limits[1])
    parts = [_frame(top, h, cell, len(memory)), _label(top, h, "memory ‖∂h_T/∂x_t‖\n(log scale)")]
    for index, value in enumerate(memory):
        fraction = (math.log10(max(value, limits[0])) - low) / (high - low)
        length = max(fraction * h, 0.5)
        parts.append(f"<rect x=\"{x_of(index) - cell * 0.4:.1f}\" y=\"{top + h - length:.1f}\" "
                     f"width=\"{cell * 0.8:.1f}\" height=\"{length:.1f}\" fill=\"#5e3c99\">"
                     f"<title>{escape(trace.steps[index].token)}: memory {value:.3e}</title></rect>")
    return parts


def _gates_row(trace: TraceResult, x_of, cell: int, top: int, h: int, limits) -> list[str]:  # type: ignore[no-untyped-def]
    parts = [_frame(top, h, cell, len(trace.steps)), _label(top, h, "mean gate\n(0 to 1)")]
    for name, values in gate_series(trace).items():
        colour = _GATE_COLOURS[name.split(" ")[0]]
        dash = " stroke-dasharray=\"4 2\"" if "backward" in name else ""
        points = " ".join(f"{x_of(i):.1f},{top + (1 - v) * h:.1f}" for i, v in enumerate(values))
        parts.append(f"<polyline points=\"{points}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\"{dash}>"
                     f"<title>{escape(name)} gate</title></polyline>")
        for index, value in enumerate(values):
            parts.append(f"<circle cx=\"{x_of(index):.1f}\" cy=\"{top + (1 - value) * h:.1f}\" r=\"2.5\" "
                         f"fill=\"{colour}\"><title>{escape(trace.steps[index].token)}: {escape(name)} gate "
                         f"{value:.3f}</title></circle>")
    return parts


def _unit_rows(trace: TraceResult, order: list[int], cell: int, top: int, unit_height: int) -> list[str]:
    names = unit_names(trace)
    kept = "top units by activity" if trace.hidden_units else "hidden units"
    parts = [_label(top, len(order) * unit_height, f"{len(order)} {kept}\nordered by peak word")]
    for row, position in enumerate(order):
        y = top + row * unit_height
        for index, step in enumerate(trace.steps):
            value = step.hidden_state[position]
            parts.append(f"<rect x=\"{_LEFT + index * cell}\" y=\"{y}\" width=\"{cell}\" height=\"{unit_height}\" "
                         f"fill=\"{hex_colour(unit_colour(value))}\"><title>unit {names[position]} after "
                         f"{escape(_token(step))}: {value:+.3f}</title></rect>")
    return parts


def _token(step: TraceStep) -> str:
    return f"“{step.token}”"
