"""Trace rendering for people: a per-word table (the terminal form of the hidden-state picture)."""

from __future__ import annotations

import json
from dataclasses import asdict

from .results import TraceResult

_BAR_WIDTH = 20


def _bar(probability: float) -> str:
    """A bar from the middle: left of centre leans negative, right leans positive."""
    half = _BAR_WIDTH // 2
    filled = round(abs(probability - 0.5) * 2 * half)
    if probability >= 0.5:
        return " " * half + "|" + "+" * filled + " " * (half - filled)
    return " " * (half - filled) + "-" * filled + "|" + " " * half


def trace_table(trace: TraceResult) -> str:
    """A table of token, P(positive) if the text ended there, its change, and the hidden-state norm.

    Tokens the model does not know are marked with `?` (the network read them as <unk>).
    """
    width = max([len("token")] + [len(s.token) + 1 for s in trace.steps])
    header = f"{'token':<{width}}  {'P(pos)':>6}  {'change':>7}  {'|h|':>6}  negative{' ' * (_BAR_WIDTH - 15)}positive"
    lines = [header, "-" * len(header)]
    for step in trace.steps:
        positive = trace.positive_probability(step)
        token = step.token if step.in_vocabulary else step.token + "?"
        lines.append(
            f"{token:<{width}}  {positive:6.3f}  {step.positive_delta:+7.3f}  {step.hidden_state_norm:6.2f}  {_bar(positive)}"
        )
    p = trace.prediction
    lines.append("-" * len(header))
    lines.append(
        f"prediction: {p.label} ({p.score:.3f}) by {trace.model}@{trace.model_version}; "
        f"{p.token_count} tokens, {p.unknown_token_count} unknown{', truncated' if p.truncated else ''}"
    )
    return "\n".join(lines)


def trace_json(trace: TraceResult) -> str:
    """The whole trace as JSON (hidden states included when the trace has them)."""
    return json.dumps(asdict(trace), indent=2)
