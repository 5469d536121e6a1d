"""Hand-made traces for renderer tests: no server, no torch, values chosen to be checkable."""

from __future__ import annotations

import math

from rnn_sentiment.client.results import Attribution, CellStep, MemoryProfile, Prediction, TraceResult, TraceStep

TOKENS = ("it", "'s", "not", "a", "<b>bad</b>", "film", "&", "zorblax")


def sample_trace(cell: str = "gru", units: int = 8, hidden: bool = True, model: str = "sst2-gru",
                 attributions: bool = True, memory: bool = True, tokens: tuple[str, ...] = TOKENS) -> TraceResult:
    """A trace of len(tokens) steps whose unit u peaks at word u % T (so the peak order is known)."""
    count = len(tokens)
    steps = []
    for t, token in enumerate(tokens):
        state = tuple(math.tanh((1.5 if t == u % count else 0.2) * (1 if u % 2 == 0 else -1)) for u in range(units))
        positive = 0.5 + 0.4 * math.sin(t)
        gates = {"gru": dict(update_gate=0.3 + 0.05 * t, reset_gate=0.6),
                 "lstm": dict(input_gate=0.4, forget_gate=0.9, output_gate=0.5, cell_state_norm=1.0 + t),
                 "rnn": {}}[cell]
        steps.append(TraceStep(
            token=token,
            in_vocabulary=token != "zorblax",
            hidden_state=state if hidden else (),
            hidden_state_norm=math.sqrt(sum(v * v for v in state)),
            probabilities=(1 - positive, positive),
            positive_delta=0.1 * (-1) ** t,
            hidden_change_norm=0.5 + 0.1 * t,
            memory=2.0 ** (t - count) if memory else None,
            cells=(CellStep(layer=0, direction="forward", hidden_state_norm=1.0, hidden_change_norm=0.5,
                            memory=2.0 ** (t - count) if memory else None, **gates),),
        ))
    scores = tuple(0.1 * (t - 3) for t in range(count))
    found = (
        Attribution("prefix", tuple(0.1 * (-1) ** t for t in range(count)), "positive"),
        Attribution("integrated_gradients", scores, "positive", steps=32, logit_difference=sum(scores) + 1e-4,
                    completeness_gap=1e-4),
        Attribution("occlusion", tuple(-s for s in scores), "positive"),
    ) if attributions else ()
    return TraceResult(
        prediction=Prediction("positive", steps[-1].probabilities[1], steps[-1].probabilities, count, 1, False),
        steps=tuple(steps),
        labels=("negative", "positive"),
        model=model,
        model_version="1.0.0",
        attributions=found,
        memory_profile=MemoryProfile(recency=0.9, decay_per_token=0.5, last_tokens=3) if memory else None,
        baseline_probabilities=(0.5, 0.5),
    )
