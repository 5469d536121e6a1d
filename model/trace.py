"""Word-by-word trace: the hidden state after each token, the answer if the text stopped there,
what each cell's gates did, which tokens moved the answer, and how much of each survives."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from .attribution import (
    UNSLICED, MemorySummary, Slices, gauss_legendre, integrated_gradients_slices, memory_profile_slices,
    occlusion_slices, run_slices, summarise_memory, walk_steps_per_slice,
)
from .cell_replay import DIRECTIONS, GATES, CellReplay, replay_cells
from .checkpoint import LoadedModel
from .config import ModelConfig
from .inference import EncodedText, PredictionResult, encode_texts, positive_index, to_prediction
from .replay_backward import replayed_gradient_x_input_slices
from .step_measures import hidden_and_change_norms
from .subwords import subword_array

__all__ = [
    "ATTRIBUTION_METHODS", "DEFAULT_INTEGRATED_GRADIENTS_STEPS", "MAX_INTEGRATED_GRADIENTS_STEPS",
    "MAX_INTEGRATED_GRADIENTS_TOKEN_STEPS", "MAX_MEMORY_PROFILE_UNIT_TOKENS", "MAX_OCCLUSION_TOKENS",
    "TRACE_SLICE_MACS", "TraceOptions", "StepStates", "CellStep", "TraceStep", "Attribution", "MemorySummary",
    "TraceResult", "memory_profile_units", "trace_text", "trace_slices", "warm_up_trace",
]

ATTRIBUTION_METHODS = ("prefix", "gradient_x_input", "integrated_gradients", "occlusion")
# 32 Gauss-Legendre nodes: on SST-2 dev a GRU's completeness gap stays under 1% of the logit
# difference for every sentence (median ~5e-7); a plain RNN's path can cross near-jumps where
# no node count helps, hence the reported gap (bench-trace measures both). One backward pass.
DEFAULT_INTEGRATED_GRADIENTS_STEPS = 32
# The most quadrature points a request may ask for, at any length (see the token × steps bound).
MAX_INTEGRATED_GRADIENTS_STEPS = 256

# Bounds on one trace's work, which the server enforces (docs/reliability.md). Each lets every
# SST-2 sentence (all under 64 tokens) have the option, and the cheaper options the whole
# 128-token max_tokens: the heaviest allowed trace is a useful one, and costs about two seconds
# of one core for the shipped 256-unit models (bench/trace_isolation.py), where without them one
# trace could cost 10-12 s.
# Integrated gradients run tokens × steps recurrent steps forward and back: the default 32 steps
# up to 256 tokens, 64 steps at 128 tokens, 128 at 64, 256 at 32 tokens.
MAX_INTEGRATED_GRADIENTS_TOKEN_STEPS = 8192
# The memory profile differentiates one row per hidden unit traced (every layer's with
# all_layers, both directions'), each the whole text: units × tokens. One 256-unit layer: 64 tokens.
MAX_MEMORY_PROFILE_UNIT_TOKENS = 16384
# Occlusion runs T texts of T − 1 tokens: quadratic in T; 128 tokens is 16,256 token-steps forward.
MAX_OCCLUSION_TOKENS = 128
# Multiply-accumulates of recurrence per slice of a trace: the server runs one slice at a time on
# the model's thread, so a Predict batch waits at most one slice behind a trace. Measured with
# bench/trace_isolation.py (largest slice, Predict p99 with and without a looping trace).
TRACE_SLICE_MACS = 48_000_000


@dataclass(frozen=True)
class TraceOptions:
    """What a trace computes beyond the always-present prefix answers, norms and gates."""

    attributions: tuple[str, ...] = ()  # any of ATTRIBUTION_METHODS, in the order wanted
    integrated_gradients_steps: int = DEFAULT_INTEGRATED_GRADIENTS_STEPS
    all_layers: bool = False  # cells of every layer, not just the top one
    memory: bool = False  # the memory profile: one backward pass per hidden unit, batched
    # TraceStep.hidden filled; False leaves it empty for a caller that will not send it (the
    # server, unless include_hidden_states): turning T × H floats into Python lists is work it
    # would throw away (docs/performance.md). Norms and everything else are computed either way.
    hidden_states: bool = True

    def validate(self) -> TraceOptions:
        """Raise ValueError naming the valid choices; return self so calls can chain."""
        for method in self.attributions:
            if method not in ATTRIBUTION_METHODS:
                raise ValueError(f"invalid attribution {method!r}; options are {list(ATTRIBUTION_METHODS)}")
        if not 1 <= self.integrated_gradients_steps <= MAX_INTEGRATED_GRADIENTS_STEPS:
            raise ValueError(f"integrated_gradients_steps must be in [1, {MAX_INTEGRATED_GRADIENTS_STEPS}], "
                             f"got {self.integrated_gradients_steps}")
        return self


def memory_profile_units(config: ModelConfig, all_layers: bool) -> int:
    """Hidden units whose gradient the memory profile takes: one row of its work each."""
    return (config.num_layers if all_layers else 1) * config.num_directions * config.hidden_size


@dataclass(frozen=True)
class StepStates:
    """One text's recurrence, run by another executor of the same weights (ONNX Runtime,
    backends.OnnxForward.step_states): what a trace of a unidirectional network would
    otherwise run torch's recurrent module for. At batch 1 torch's CPU GRU is dominated by
    per-step operator overhead; the fused ONNX kernel is several times faster."""

    layers: list[Tensor]  # every layer's step states [1, T, H], bottom first
    probabilities: Tensor  # [C] the whole text's answer from the same run: what Predict returns


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
    hidden: list[float]  # top-layer state after reading this token (both directions if bidirectional);
    # empty when TraceOptions.hidden_states is False
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


def trace_text(loaded: LoadedModel, encoded: EncodedText, options: TraceOptions | None = None,
               states: StepStates | None = None) -> TraceResult:
    """Trace one encoded text through the same network that predict uses.

    "The answer if the text ended here" is the model's real answer for each prefix, for every
    architecture (SentimentRNN.forward_prefixes: one pass when unidirectional, all prefixes as
    one batch when bidirectional); the last one is the whole text's, Predict's answer.

    states: this text's recurrence from ONNX Runtime (unidirectional networks only). The
    prefixes' pooling and classifier, the cell replay and the attributions then run on the
    given states instead of states torch computes; the last step is states.probabilities.
    """
    return run_slices(trace_slices(loaded, encoded, options, states))


def trace_slices(loaded: LoadedModel, encoded: EncodedText, options: TraceOptions | None = None,
                 states: StepStates | None = None, slice_macs: int = UNSLICED) -> Slices[TraceResult]:
    """trace_text as slices of work, for a caller that runs other work between them or stops
    early: the prefix pass and the cell replay one slice each, gradient × input's backward walk
    a few steps a slice, the memory profile, occlusion and integrated gradients in slices of at
    most `slice_macs` recurrent multiply-accumulates (attribution.slice_shape). The same maths
    as in one go (a test holds every field to it); nothing here holds a thread-wide torch mode
    across a slice's end.
    """
    options = (options or TraceOptions()).validate()
    count = len(encoded.ids)
    if count == 0:
        raise ValueError("cannot trace an empty text")
    network = loaded.network
    device = loaded.device
    labels = loaded.config.labels
    ids = torch.tensor(encoded.ids, dtype=torch.int64, device=device)  # [T]
    subwords = _text_subword_ids(encoded, loaded.config.subword_buckets, device)  # [T, K] | None
    with torch.inference_mode():
        if states is None:
            output = network.forward_prefixes(ids, subwords)
            logits, weights = output.logits, output.attention
            assert output.step_hidden is not None
            top_outputs = output.step_hidden[-1:]  # [1, T, H*D] the full text's states
        else:
            top_outputs = _checked(states, network.config, count)[-1]  # [1, T, H]
            logits, weights = network.prefix_logits(top_outputs[0])  # [T, C], [1, T] | None
        probabilities = torch.softmax(logits.float(), dim=-1).cpu()  # [T, C]
        if states is not None:
            # The same run as Predict's for this text: the last step is its answer exactly, not
            # a torch classifier's rounding of it (they differ by ~1e-7).
            probabilities[-1] = states.probabilities
        hidden = top_outputs[0].float().cpu()  # [T, H*D]
        zero = torch.zeros(1, network.output_size, device=device)  # [1, H*D]
        baseline = torch.softmax(network.classify_pooled(zero).float(), dim=-1)[0].cpu()  # [C]
        attention = weights[-1].cpu().tolist() if weights is not None else None
        hidden_norms, change_norms = hidden_and_change_norms(hidden)  # [T] each, from the zero state
    yield

    probability_rows = probabilities.tolist()  # [T][C]
    baseline_row = tuple(baseline.tolist())  # [C]
    prediction = to_prediction(labels, probability_rows[-1], encoded)
    target = labels.index(prediction.label)
    top = network.config.num_layers - 1
    layers = list(range(network.config.num_layers)) if options.all_layers else [top]
    # All layers: gradient × input reuses them.
    every_replay = replay_cells(network, ids, top_outputs, states.layers if states is not None else None, subwords)
    replays = [r for r in every_replay if r.layer in layers]
    yield
    memory = None
    if options.memory:
        memory = yield from memory_profile_slices(network, ids, layers, subwords, slice_macs)
    cells = [_cell_steps(replay, network.config.cell, memory) for replay in replays]  # [cell][T]
    top_memory = None
    if memory is not None:
        top_keys = [key for key in memory if key[0] == top]
        top_memory = torch.stack([memory[key].cpu() for key in top_keys]).pow(2).sum(0).sqrt().tolist()  # [T]

    positive = positive_index(labels)
    previous = baseline_row[positive]
    hidden_rows = hidden.tolist() if options.hidden_states else None  # [T][H*D] one conversion, not one a step
    vocab = loaded.vocab
    steps: list[TraceStep] = []
    for t, token in enumerate(encoded.tokens):
        current = probability_rows[t]
        steps.append(TraceStep(
            token=token,
            known=vocab.is_known(token),
            hidden=hidden_rows[t] if hidden_rows is not None else [],
            hidden_norm=hidden_norms[t],
            probabilities=tuple(current),
            delta_positive=current[positive] - previous,
            change_norm=change_norms[t],
            attention=attention[t] if attention is not None else None,
            memory=top_memory[t] if top_memory is not None else None,
            cells=[per_token[t] for per_token in cells],
        ))
        previous = current[positive]
    attributions = []
    for method in dict.fromkeys(options.attributions):  # each method once, first order kept
        attributions.append((yield from _attribution(method, loaded, ids, subwords, target, probabilities, baseline,
                                                     options, every_replay, slice_macs)))
    return TraceResult(
        prediction=prediction,
        steps=steps,
        baseline=baseline_row,
        attention=attention,
        attributions=attributions,
        memory=summarise_memory(top_memory) if top_memory is not None else None,
    )


def warm_up_trace(loaded: LoadedModel) -> None:
    """One small trace with every option, at load time (blocking: call it from a thread): the
    first backward pass in a process pays about half a second of torch's one-off set-up, which
    would otherwise fall into one slice of the first caller's trace and hold Predict behind it."""
    (encoded,) = encode_texts(["a warm-up sentence ."], loaded.vocab, loaded.config.max_tokens)
    for steps in (DEFAULT_INTEGRATED_GRADIENTS_STEPS, 64, 128, MAX_INTEGRATED_GRADIENTS_STEPS):
        gauss_legendre(steps)  # the step counts callers ask for most, solved once here
    trace_text(loaded, encoded, TraceOptions(attributions=ATTRIBUTION_METHODS, integrated_gradients_steps=2,
                                             memory=True, all_layers=True, hidden_states=False))


def _checked(states: StepStates, config, steps: int) -> list[Tensor]:
    """states.layers, after checking they fit this network and text (a mismatch is a caller's bug)."""
    if config.bidirectional:
        raise ValueError("precomputed states serve unidirectional networks only; "
                         "a bidirectional trace runs every prefix as a batch")
    shape = (1, steps, config.hidden_size)
    if len(states.layers) != config.num_layers or any(tuple(s.shape) != shape for s in states.layers):
        raise ValueError(f"expected {config.num_layers} layer states of shape {shape}, "
                         f"got {[tuple(s.shape) for s in states.layers]}")
    return states.layers


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


def _text_subword_ids(encoded: EncodedText, buckets: int, device: torch.device) -> Tensor | None:
    """One text's n-gram ids [T, K] padded with `buckets`, or None when it has none."""
    if not encoded.subword_ids:
        return None
    return torch.from_numpy(subword_array([encoded.subword_ids], len(encoded.ids), buckets)[0]).to(device)


def _attribution(method: str, loaded: LoadedModel, ids: torch.Tensor, subwords: Tensor | None, target: int,
                 probabilities: torch.Tensor, baseline: torch.Tensor, options: TraceOptions,
                 replays: list[CellReplay], slice_macs: int) -> Slices[Attribution]:
    """One attribution; the methods that run the recurrence again end a slice or several."""
    label = loaded.config.labels[target]
    network = loaded.network
    if method == "prefix":
        answers = torch.cat([baseline[target].view(1), probabilities[:, target]])  # [T+1]
        return Attribution(method, (answers[1:] - answers[:-1]).tolist(), label)
    if method == "gradient_x_input":
        # On CPU a hand-written backward through the gates replayed above (autograd elsewhere).
        scores = yield from replayed_gradient_x_input_slices(network, ids, target, replays, subwords,
                                                             walk_steps_per_slice(network, slice_macs))
        yield
        return Attribution(method, scores.cpu().tolist(), label)
    if method == "occlusion":
        scores = yield from occlusion_slices(network, ids, target, subwords, slice_macs)
        return Attribution(method, scores.cpu().tolist(), label)
    steps = options.integrated_gradients_steps
    result = yield from integrated_gradients_slices(network, ids, target, steps, subwords, slice_macs)
    return Attribution(method, result.scores.cpu().tolist(), label, steps=steps,
                       logit_difference=result.logit_difference, completeness_gap=result.completeness_gap)
