"""Word-by-word trace: the hidden state after each token, the answer if the text stopped there,
what each cell's gates did, which tokens moved the answer, and how much of each survives."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .attribution import (
    MemorySummary, integrated_gradients, memory_profile, occlusion, summarise_memory,
)
from .cell_replay import DIRECTIONS, GATES, CellReplay, replay_cells
from .checkpoint import LoadedModel
from .inference import EncodedText, PredictionResult, positive_index, to_prediction
from .replay_backward import replayed_gradient_x_input

__all__ = [
    "ATTRIBUTION_METHODS", "DEFAULT_INTEGRATED_GRADIENTS_STEPS", "MAX_INTEGRATED_GRADIENTS_STEPS",
    "TraceOptions", "CellStep", "TraceStep", "Attribution", "MemorySummary", "TraceResult", "trace_text",
]

ATTRIBUTION_METHODS = ("prefix", "gradient_x_input", "integrated_gradients", "occlusion")
# 32 Gauss-Legendre nodes: on SST-2 dev a GRU's completeness gap stays under 1% of the logit
# difference for every sentence (median ~5e-7); a plain RNN's path can cross near-jumps where
# no node count helps, hence the reported gap (bench-trace measures both). One backward pass.
DEFAULT_INTEGRATED_GRADIENTS_STEPS = 32
# A bound on one request's work: 256 × 128 tokens is one large batch, not a denial of service.
MAX_INTEGRATED_GRADIENTS_STEPS = 256


@dataclass(frozen=True)
class TraceOptions:
    """What a trace computes beyond the always-present prefix answers, norms and gates."""

    attributions: tuple[str, ...] = ()  # any of ATTRIBUTION_METHODS, in the order wanted
    integrated_gradients_steps: int = DEFAULT_INTEGRATED_GRADIENTS_STEPS
    all_layers: bool = False  # cells of every layer, not just the top one
    memory: bool = False  # the memory profile: one backward pass per hidden unit, batched

    def validate(self) -> TraceOptions:
        """Raise ValueError naming the valid choices; return self so calls can chain."""
        for method in self.attributions:
            if method not in ATTRIBUTION_METHODS:
                raise ValueError(f"invalid attribution {method!r}; options are {list(ATTRIBUTION_METHODS)}")
        if not 1 <= self.integrated_gradients_steps <= MAX_INTEGRATED_GRADIENTS_STEPS:
            raise ValueError(f"integrated_gradients_steps must be in [1, {MAX_INTEGRATED_GRADIENTS_STEPS}], "
                             f"got {self.integrated_gradients_steps}")
        return self


@dataclass
class CellStep:
    """One layer and direction at one token, from the step-by-step replay of the cell."""

    layer: int  # 0 = bottom
    direction: str  # "forward" or "backward"
    hidden_norm: float  # ‖h_t‖ of this direction
    change_norm: float  # ‖h_t − h_before‖ in this direction's reading order
    gates: dict[str, float]  # mean activation per gate: GRU update/reset, LSTM input/forget/output
    cell_norm: float | None = None  # LSTM ‖c_t‖
    memory: float | None = None  # ‖∂h_final/∂x_t‖_F for this layer and direction, when asked


@dataclass
class TraceStep:
    token: str
    known: bool  # False: the model saw <unk> here
    hidden: list[float]  # top-layer state after reading this token (both directions if bidirectional)
    hidden_norm: float  # L2 norm of `hidden`
    probabilities: tuple[float, ...]  # label probabilities had the text ended at this token
    delta_positive: float  # positive probability here minus at the previous step (or the baseline)
    change_norm: float = 0.0  # ‖hidden − previous step's hidden‖ (the first step: against zeros)
    attention: float | None = None  # the full text's attention weight here, pooling "attention"
    memory: float | None = None  # ‖∂h_T/∂x_t‖_F of the top layer's final state (directions concatenated)
    cells: list[CellStep] = field(default_factory=list)  # top layer's directions, or every layer's


@dataclass
class Attribution:
    method: str  # one of ATTRIBUTION_METHODS
    scores: list[float]  # per token, positive = pushed toward target_label
    target_label: str  # the predicted label
    steps: int = 0  # integrated gradients: quadrature points
    logit_difference: float | None = None  # integrated gradients: f(text) − f(baseline)
    completeness_gap: float | None = None  # integrated gradients: |sum(scores) − logit_difference|


@dataclass
class TraceResult:
    prediction: PredictionResult  # equal to predict_encoded's for the same text
    steps: list[TraceStep]
    # Probabilities before any token: the classifier applied to a zero pooled vector. With
    # pooling "last" that is exactly the empty prefix (the recurrence starts from a zero
    # state); for other poolings it is the same "no evidence yet" answer. The first step's
    # delta_positive is measured from it, so the deltas sum to prediction minus baseline.
    baseline: tuple[float, ...]
    attention: list[float] | None = None  # per-token weights of the full text, pooling "attention"
    attributions: list[Attribution] = field(default_factory=list)  # in TraceOptions order
    memory: MemorySummary | None = None  # when TraceOptions.memory


def trace_text(loaded: LoadedModel, encoded: EncodedText, options: TraceOptions | None = None) -> TraceResult:
    """Trace one encoded text through the same network that predict uses.

    "The answer if the text ended here" is the model's real answer for each prefix, for every
    architecture (SentimentRNN.forward_prefixes: one pass when unidirectional, all prefixes as
    one batch when bidirectional); the last one is the whole text's, Predict's answer.
    """
    options = (options or TraceOptions()).validate()
    count = len(encoded.ids)
    if count == 0:
        raise ValueError("cannot trace an empty text")
    network = loaded.network
    device = loaded.device
    labels = loaded.config.labels
    ids = torch.tensor(encoded.ids, dtype=torch.int64, device=device)  # [T]
    with torch.inference_mode():
        output = network.forward_prefixes(ids)
        probabilities = torch.softmax(output.logits.float(), dim=-1).cpu()  # [T, C]
        assert output.step_hidden is not None
        top_outputs = output.step_hidden[-1:]  # [1, T, H*D] the full text's states
        hidden = top_outputs[0].float().cpu()  # [T, H*D]
        zero = torch.zeros(1, network.output_size, device=device)  # [1, H*D]
        baseline = torch.softmax(network.classify_pooled(zero).float(), dim=-1)[0].cpu()  # [C]
        attention = output.attention[-1].cpu().tolist() if output.attention is not None else None
    hidden_norms = torch.linalg.vector_norm(hidden, dim=-1).tolist()  # [T]
    before = torch.cat([torch.zeros_like(hidden[:1]), hidden[:-1]])  # [T, H*D]
    change_norms = torch.linalg.vector_norm(hidden - before, dim=-1).tolist()  # [T]

    prediction = to_prediction(labels, probabilities[-1].tolist(), encoded)
    target = labels.index(prediction.label)
    top = network.config.num_layers - 1
    layers = list(range(network.config.num_layers)) if options.all_layers else [top]
    every_replay = replay_cells(network, ids, top_outputs)  # all layers: gradient × input reuses them
    replays = [r for r in every_replay if r.layer in layers]
    memory = memory_profile(network, ids, layers) if options.memory else None
    cells = [_cell_steps(replay, network.config.cell, memory) for replay in replays]  # [cell][T]
    top_memory = None
    if memory is not None:
        top_keys = [key for key in memory if key[0] == top]
        top_memory = torch.stack([memory[key].cpu() for key in top_keys]).pow(2).sum(0).sqrt().tolist()  # [T]

    positive = positive_index(labels)
    previous = float(baseline[positive])
    steps: list[TraceStep] = []
    for t, token in enumerate(encoded.tokens):
        current = probabilities[t]
        steps.append(TraceStep(
            token=token,
            known=loaded.vocab.is_known(token),
            hidden=hidden[t].tolist(),
            hidden_norm=hidden_norms[t],
            probabilities=tuple(float(p) for p in current),
            delta_positive=float(current[positive]) - previous,
            change_norm=change_norms[t],
            attention=attention[t] if attention is not None else None,
            memory=top_memory[t] if top_memory is not None else None,
            cells=[per_token[t] for per_token in cells],
        ))
        previous = float(current[positive])
    return TraceResult(
        prediction=prediction,
        steps=steps,
        baseline=tuple(float(p) for p in baseline),
        attention=attention,
        attributions=[
            _attribution(method, loaded, ids, target, probabilities, baseline, options, every_replay)
            for method in dict.fromkeys(options.attributions)  # each method once, first order kept
        ],
        memory=summarise_memory(top_memory) if top_memory is not None else None,
    )


def _cell_steps(replay: CellReplay, cell: str, memory: dict[tuple[int, int], torch.Tensor] | None) -> list[CellStep]:
    """The per-token CellStep list of one layer and direction."""
    norms = torch.linalg.vector_norm(replay.hidden, dim=-1).tolist()  # [T]
    changes = replay.change_norms().tolist()  # [T]
    gate_means = {name: replay.gates[name].mean(-1).tolist() for name in GATES[cell]}  # name -> [T]
    cell_norms = torch.linalg.vector_norm(replay.cell, dim=-1).tolist() if replay.cell is not None else None
    key = (replay.layer, DIRECTIONS.index(replay.direction))
    memory_values = memory[key].tolist() if memory is not None else None
    return [
        CellStep(
            layer=replay.layer,
            direction=replay.direction,
            hidden_norm=norms[t],
            change_norm=changes[t],
            gates={name: values[t] for name, values in gate_means.items()},
            cell_norm=cell_norms[t] if cell_norms is not None else None,
            memory=memory_values[t] if memory_values is not None else None,
        )
        for t in range(len(norms))
    ]


def _attribution(method: str, loaded: LoadedModel, ids: torch.Tensor, target: int,
                 probabilities: torch.Tensor, baseline: torch.Tensor, options: TraceOptions,
                 replays: list[CellReplay]) -> Attribution:
    label = loaded.config.labels[target]
    network = loaded.network
    if method == "prefix":
        answers = torch.cat([baseline[target].view(1), probabilities[:, target]])  # [T+1]
        return Attribution(method, (answers[1:] - answers[:-1]).tolist(), label)
    if method == "gradient_x_input":
        # On CPU a hand-written backward through the gates replayed above (autograd elsewhere).
        scores = replayed_gradient_x_input(network, ids, target, replays)
        return Attribution(method, scores.cpu().tolist(), label)
    if method == "occlusion":
        return Attribution(method, occlusion(network, ids, target).cpu().tolist(), label)
    steps = options.integrated_gradients_steps
    result = integrated_gradients(network, ids, target, steps)
    return Attribution(method, result.scores.cpu().tolist(), label, steps=steps,
                       logit_difference=result.logit_difference, completeness_gap=result.completeness_gap)
