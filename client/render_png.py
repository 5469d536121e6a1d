"""The hidden-state picture as a PNG: units × words heatmap, with the prefix sentiment, the
attributions, the memory profile and the gates aligned above it, one column per trace.

Needs matplotlib (`pip install 'rnn-sentiment[render]'`); imported only when a PNG is drawn.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from .results import TraceResult
from .trace_layout import (
    ATTRIBUTION_TITLES, NEGATIVE_RGB, NEUTRAL_RGB, POSITIVE_RGB, UNIT_HIGH_RGB, UNIT_LOW_RGB, gate_series,
    has_hidden_states, memory_caption, memory_series, primary_attribution, sentiment_colour,
    toward_positive, trace_title, unit_names, unit_order,
)

__all__ = ["trace_png"]

_GATE_COLOURS = {"update": "#1b9e77", "reset": "#d95f02", "input": "#1b9e77", "forget": "#7570b3",
                 "output": "#e7298a"}


def _matplotlib() -> Any:
    try:
        import matplotlib
    except ImportError as error:
        raise ImportError("PNG output needs matplotlib: pip install 'rnn-sentiment[render]'") from error
    return matplotlib


def trace_png(traces: TraceResult | Sequence[TraceResult], dpi: int = 110) -> bytes:
    """PNG bytes of one trace, or several side by side (e.g. a plain RNN and a GRU on one text).

    Rows, top to bottom, all aligned on the words: P(positive) if the text ended at each word;
    the attribution per word (integrated gradients when present, else occlusion, ...); the
    memory profile ‖∂h_T/∂x_t‖ on a log scale; the mean gates; the hidden units × words heatmap
    with units ordered by the word where they peak. Rows the traces lack are left out.
    """
    _matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import LinearSegmentedColormap
    from matplotlib.figure import Figure

    traces = [traces] if isinstance(traces, TraceResult) else list(traces)
    if not traces:
        raise ValueError("nothing to draw: pass at least one trace")
    rows = ["sentiment"]
    if any(primary_attribution(t) for t in traces):
        rows.append("attribution")
    if any(memory_series(t) for t in traces):
        rows.append("memory")
    if any(gate_series(t) for t in traces):
        rows.append("gates")
    if any(has_hidden_states(t) for t in traces):
        rows.append("units")
    heights = {"sentiment": 1.5, "attribution": 1.2, "memory": 1.2, "gates": 1.0, "units": 3.2}
    words = max(len(t.steps) for t in traces)
    column_width = min(28.0, max(5.5, 0.32 * words + 1.8))
    figure = Figure(figsize=(column_width * len(traces), sum(heights[r] for r in rows) + 1.4), dpi=dpi,
                    layout="constrained")
    FigureCanvasAgg(figure)
    grid = figure.add_gridspec(len(rows), len(traces), height_ratios=[heights[r] for r in rows])
    unit_map = LinearSegmentedColormap.from_list(
        "units", [_rgb(UNIT_LOW_RGB), _rgb(NEUTRAL_RGB), _rgb(UNIT_HIGH_RGB)])
    memory_limits = _shared_memory_limits(traces)
    for column, trace in enumerate(traces):
        axes = {}
        for index, row in enumerate(rows):
            share = axes.get("sentiment")
            axes[row] = figure.add_subplot(grid[index, column], sharex=share)
        _sentiment(axes["sentiment"], trace)
        axes["sentiment"].set_title(trace_title(trace), fontsize=10, loc="left")
        if "attribution" in axes:
            _attribution(axes["attribution"], trace)
        if "memory" in axes:
            _memory(axes["memory"], trace, memory_limits)
        if "gates" in axes:
            _gates(axes["gates"], trace)
        if "units" in axes:
            image = _units(axes["units"], trace, unit_map)
            if image is not None and column == len(traces) - 1:
                figure.colorbar(image, ax=axes["units"], label="activation", shrink=0.8)
        tokens = [s.token if s.in_vocabulary else s.token + "?" for s in trace.steps]
        for row, ax in axes.items():
            ax.set_xlim(-0.5, len(tokens) - 0.5)
            ax.tick_params(labelsize=8)
            if row != rows[-1]:
                ax.tick_params(labelbottom=False)
        bottom = axes[rows[-1]]
        bottom.set_xticks(range(len(tokens)))
        bottom.set_xticklabels(tokens, rotation=60, ha="right", fontsize=8)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _rgb(rgb: tuple[int, int, int]) -> tuple[float, float, float]:
    return (rgb[0] / 255, rgb[1] / 255, rgb[2] / 255)


def _sentiment(ax: Any, trace: TraceResult) -> None:
    positive = [trace.positive_probability(s) for s in trace.steps]
    x = list(range(len(positive)))
    ax.axhline(0.5, color="#999999", linewidth=0.8, linestyle=":")
    ax.fill_between(x, positive, 0.5, where=[p >= 0.5 for p in positive], interpolate=True,
                    color=_rgb(POSITIVE_RGB), alpha=0.15, linewidth=0)
    ax.fill_between(x, positive, 0.5, where=[p < 0.5 for p in positive], interpolate=True,
                    color=_rgb(NEGATIVE_RGB), alpha=0.15, linewidth=0)
    ax.plot(x, positive, color="#444444", linewidth=1.2)
    ax.scatter(x, positive, c=[_rgb(sentiment_colour(p)) for p in positive], edgecolors="#444444",
               linewidths=0.6, s=28, zorder=3)
    ax.set_ylim(0, 1)
    ax.set_ylabel("P(positive)\nif it ended here", fontsize=8)


def _attribution(ax: Any, trace: TraceResult) -> None:
    attribution = primary_attribution(trace)
    if attribution is None:
        ax.set_axis_off()
        return
    signed = toward_positive(trace, attribution)
    colours = [_rgb(POSITIVE_RGB if v >= 0 else NEGATIVE_RGB) for v in signed]
    ax.bar(range(len(signed)), attribution.scores, color=colours, width=0.8)
    ax.axhline(0, color="#666666", linewidth=0.6)
    ax.set_ylabel(f"{ATTRIBUTION_TITLES[attribution.method]}\ntoward {attribution.target_label}", fontsize=8)


def _shared_memory_limits(traces: Sequence[TraceResult]) -> tuple[float, float] | None:
    values = [v for t in traces for v in (memory_series(t) or []) if v > 0]
    if not values:
        return None
    return min(values) / 2, max(values) * 2


def _memory(ax: Any, trace: TraceResult, limits: tuple[float, float] | None) -> None:
    memory = memory_series(trace)
    if memory is None or limits is None:
        ax.set_axis_off()
        return
    ax.bar(range(len(memory)), [max(v, limits[0]) for v in memory], color="#5e3c99", width=0.8)
    ax.set_yscale("log")
    ax.set_ylim(*limits)  # the same scale in every column: vanishing memory compares at a glance
    ax.set_ylabel("memory\n‖∂h_T/∂x_t‖", fontsize=8)
    ax.set_title(memory_caption(trace), fontsize=8, loc="left")


def _gates(ax: Any, trace: TraceResult) -> None:
    series = gate_series(trace)
    if not series:
        ax.set_axis_off()
        plain = bool(trace.steps and trace.steps[0].cells)  # cells but no gates: an Elman RNN
        message = "no gates: a plain RNN rewrites its whole state at every word" if plain else "no gate data"
        ax.text(0.5, 0.5, message, ha="center",
                va="center", transform=ax.transAxes, fontsize=8, color="#666666")
        return
    for name, values in series.items():
        base = name.split(" ")[0]
        ax.plot(range(len(values)), values, label=name, color=_GATE_COLOURS[base], linewidth=1.2,
                linestyle="--" if "backward" in name else "-", marker="o", markersize=2.5)
    ax.set_ylim(0, 1)
    ax.set_ylabel("mean gate", fontsize=8)
    ax.legend(fontsize=7, ncols=min(len(series), 6), loc="upper left", frameon=False)


def _units(ax: Any, trace: TraceResult, colormap: Any) -> Any:
    if not has_hidden_states(trace):
        ax.text(0.5, 0.5, "no hidden states in this trace", ha="center", va="center", transform=ax.transAxes)
        ax.set_yticks([])
        return None
    order = unit_order(trace)
    names = unit_names(trace)
    matrix = [[step.hidden_state[position] for step in trace.steps] for position in order]  # [units, T]
    image = ax.imshow(matrix, aspect="auto", interpolation="nearest", cmap=colormap, vmin=-1, vmax=1,
                      extent=(-0.5, len(trace.steps) - 0.5, len(order) - 0.5, -0.5))
    kept = f"{len(order)} units" + (" (top by activity)" if trace.hidden_units else "")
    ax.set_ylabel(f"hidden state: {kept}\nordered by peak word", fontsize=8)
    if len(order) <= 40:
        ax.set_yticks(range(len(order)))
        ax.set_yticklabels([str(names[p]) for p in order], fontsize=6)
    else:
        ax.set_yticks([])
    return image

