"""Which runtime executes Predict's forward: ONNX Runtime, in runs of texts of similar length, or PyTorch.

ONNX Runtime's fused recurrent kernels run a small batch several times faster than PyTorch's
CPU GRU, whose per-step operator overhead dominates small batches. A run of ONNX Runtime works
every text to the longest one's length (its sequence_lens keep padding out of the answers, not
out of the work), so one run of a mixed-length batch loses to PyTorch's packed sequences on
large batches. Sorted by length and cut into runs of similar length (`length_runs`), the same
texts ran faster on ONNX Runtime at every batch size measured (the table in docs/performance.md,
from `make bench`'s ceiling B). So `auto` runs every batch on ONNX Runtime on CPU, in length runs of at most `onnx_max_batch`
texts, and PyTorch serves only where ONNX Runtime cannot (GPU, or a session that failed its check).

ONNX Runtime is a second executor of the same weights, not a second model: the graph is built
from the loaded module (model/onnx_export.py) and checked against PyTorch on a probe batch
before it serves; a disagreement above AGREEMENT_TOLERANCE keeps PyTorch (auto) or refuses to
start (onnxruntime). A trace of a unidirectional network takes its recurrence from the same
session (every layer's step states, OnnxForward.step_states) and does the rest on PyTorch: the
gates, gradients and answers per prefix; a bidirectional one runs on PyTorch throughout.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from .checkpoint import LoadedModel
from .config import BACKENDS  # defined beside the other choices, where no torch is imported
from .inference import (
    EncodedText,
    PredictionResult,
    predict_encoded,
    to_predictions,
)
from .subwords import batch_subword_array, subword_array
from .trace import StepStates
from .vocabulary import PAD_ID, UNK_ID

__all__ = ["BACKENDS", "AGREEMENT_TOLERANCE", "AGREEMENT_PROBE_LENGTHS", "DEFAULT_ONNX_MAX_BATCH",
           "DEFAULT_STREAM_MAX_BATCH", "MAX_ONNX_SUBWORD_SLOTS", "PADDING_SLACK",
           "OnnxForward", "OnnxRecurrence", "Predictor", "length_runs", "make_predictor", "make_stream_recurrence",
           "padded_arrays", "padded_subword_array"]

AGREEMENT_TOLERANCE = 1e-5  # max |p_onnx − p_torch| over a probe batch
# The probe batch's text lengths, fixed: the recurrence is the same step at every position, so a
# few short texts of different lengths exercise the graph, padding included. Never max_tokens,
# which a checkpoint sets and which would make the probe as large as it asks.
AGREEMENT_PROBE_LENGTHS = tuple(range(1, 9))
# ONNX Runtime's n-gram mean gathers a [B, T, K, E] block (K: the longest n-gram list in the
# batch); above this many n-gram slots (B·T·K; 64 MB of gathered float32 at E = 256) a batch runs
# on torch, whose EmbeddingBag never materialises it. Ordinary batches hold a few hundred.
MAX_ONNX_SUBWORD_SLOTS = 65_536
# Most texts in one ONNX Runtime run: runs of 16 were faster per text than runs of 8
# (docs/performance.md).
DEFAULT_ONNX_MAX_BATCH = 16
# Most stream sessions in one ONNX Runtime run of the recurrence: streams mostly send a word or
# two, so a run is one or two steps of a wide batch (bench/stream_cost.py).
DEFAULT_STREAM_MAX_BATCH = 1024
# A length run closes before its padded token slots exceed this many times its texts' own tokens.
# 1.1 to 1.5 measured within noise of each other, all far ahead of one run per batch.
PADDING_SLACK = 1.25

if TYPE_CHECKING:
    from .streaming import RecurrenceResult

log = logging.getLogger(__name__)


class OnnxForward:
    """An ONNX Runtime session running the network's Predict forward: ids, lengths -> probabilities."""

    def __init__(self, loaded: LoadedModel, threads: int) -> None:
        import onnxruntime  # the server extra installs it; imported here so torch-only use never needs it

        from .onnx_export import (
            INPUT_IDS,
            INPUT_LENGTHS,
            INPUT_SUBWORDS,
            OUTPUT_PROBABILITIES,
            build_onnx_model,
            carries_state,
            initial_c_input,
            initial_h_input,
            layer_states_output,
        )

        config = loaded.config
        self.session = _onnx_session(build_onnx_model(loaded.network), threads, loaded.network)
        # A unidirectional network's graph is a stream's step too (OnnxRecurrence shares this
        # session); Predict and Trace start every layer from zeros.
        self.carries_state = carries_state(config)
        layers = range(config.num_layers) if self.carries_state else range(0)
        self._state_inputs = [initial_h_input(layer) for layer in layers] + (
            [initial_c_input(layer) for layer in layers] if config.cell == "lstm" else [])
        self._hidden_size = config.hidden_size
        self._inputs = (INPUT_IDS, INPUT_LENGTHS)
        self._subwords_input = INPUT_SUBWORDS
        # With sub-words the graph always takes n-gram ids; one padding column when none are needed.
        self.subword_pad: int | None = loaded.config.subword_buckets or None
        self._outputs = [OUTPUT_PROBABILITIES]
        self._step_outputs = [OUTPUT_PROBABILITIES] + [layer_states_output(layer)
                                                       for layer in range(loaded.config.num_layers)]

    def probabilities(self, token_ids: np.ndarray, lengths: np.ndarray,
                      subword_ids: np.ndarray | None = None) -> np.ndarray:
        """token_ids [B, T] int64, lengths [B], subword_ids [B, T, K] int64 or None -> probabilities [B, C] float32."""
        return self.session.run(self._outputs, self._feeds(token_ids, lengths, subword_ids))[0]

    def _feeds(self, token_ids: np.ndarray, lengths: np.ndarray, subword_ids: np.ndarray | None) -> dict[str, np.ndarray]:
        feeds = {self._inputs[0]: token_ids, self._inputs[1]: lengths.astype(np.int32)}
        if self.subword_pad is not None:
            if subword_ids is None:
                subword_ids = np.full((*token_ids.shape, 1), self.subword_pad, dtype=np.int64)  # [B, T, 1]
            feeds[self._subwords_input] = subword_ids
        elif subword_ids is not None:
            raise ValueError("this model has no sub-words; pass subword_ids=None")
        if self._state_inputs:
            zeros = np.zeros((1, token_ids.shape[0], self._hidden_size), dtype=np.float32)  # [1, B, H]
            feeds.update(dict.fromkeys(self._state_inputs, zeros))  # read, never written: one array serves all
        return feeds

    def step_states(self, token_ids: Sequence[int],
                    subword_ids: Sequence[Sequence[int]] = ()) -> StepStates:
        """One text's recurrence: every layer's states [1, T, D*H] and its probabilities [C].

        Layer states come out time-major [T, D, 1, H]; with one text and one direction that is
        [T, H] in memory already, so the view is free. Both directions would need a copy
        (D before H), and a trace of a bidirectional network does not use them anyway.
        """
        ids = np.asarray(token_ids, dtype=np.int64).reshape(1, -1)  # [1, T]
        steps = ids.shape[1]
        subwords = (subword_array([subword_ids], steps, self.subword_pad)
                    if subword_ids and self.subword_pad is not None else None)  # [1, T, K]
        probabilities, *layers = self.session.run(
            self._step_outputs, self._feeds(ids, np.array([steps], dtype=np.int64), subwords))
        return StepStates(
            layers=[torch.from_numpy(y).permute(2, 0, 1, 3).reshape(1, steps, -1) for y in layers],  # [1, T, D*H]
            probabilities=torch.from_numpy(probabilities[0]),  # [C]
        )


def _onnx_session(model, threads: int, network: torch.nn.Module):
    """A CPU ONNX Runtime session of `model` (an onnx.ModelProto built from `network`) on
    `threads` threads, reading the tagged parameters (the embedding tables) from `network`'s own
    memory: without that, each session holds its own copy of them."""
    import onnxruntime  # the server extra installs it; imported here so torch-only use never needs it

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads  # the same budget torch gets per worker
    options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: its warnings are about graph rewrites, not requests
    borrowed = borrowed_parameters(model, network)
    for name, value in borrowed.items():
        options.add_initializer(name, value)
    session = onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    # ONNX Runtime reads the arrays behind these values and does not own them: they live as long
    # as the session (and the arrays as long as the values, which hold them).
    session.borrowed_parameters = borrowed
    return session


def borrowed_parameters(model, network: torch.nn.Module) -> dict:
    """OrtValues over the memory of `network`'s parameters that `model`'s initializers name
    (onnx_export.PARAMETER_TAG), by initializer name. Only CPU float32 contiguous parameters are
    lent (a view, no copy); any other stays a copy inside the session."""
    import onnxruntime

    from .onnx_export import PARAMETER_TAG

    borrowed = {}
    for initializer in model.graph.initializer:
        if not initializer.doc_string.startswith(PARAMETER_TAG):
            continue
        tensor = network.get_parameter(initializer.doc_string.removeprefix(PARAMETER_TAG)).detach()
        if tensor.device.type != "cpu" or tensor.dtype != torch.float32 or not tensor.is_contiguous():
            continue
        borrowed[initializer.name] = onnxruntime.OrtValue.ortvalue_from_numpy(tensor.numpy())
    return borrowed


@dataclass(frozen=True)
class Predictor:
    """predict_encoded on ONNX Runtime where the model has a session (in length runs), else on torch."""

    loaded: LoadedModel
    onnx: OnnxForward | None = None
    onnx_max_batch: int = DEFAULT_ONNX_MAX_BATCH  # most texts in one ONNX Runtime run

    @property
    def description(self) -> str:
        if self.onnx is None:
            return "torch"
        return f"onnxruntime, in runs of up to {self.onnx_max_batch} texts of similar length"

    def __call__(self, batch: Sequence[EncodedText]) -> list[PredictionResult]:
        if self.onnx is None or not batch:
            return predict_encoded(self.loaded, batch)
        if len(batch) == 1:
            return self._run_onnx(batch)
        results: list[PredictionResult] = [None] * len(batch)  # type: ignore[list-item]  # all filled below
        for run in length_runs([len(item.ids) for item in batch], self.onnx_max_batch):
            for index, result in zip(run, self._run_onnx([batch[i] for i in run]), strict=True):
                results[index] = result
        return results

    def _run_onnx(self, batch: Sequence[EncodedText]) -> list[PredictionResult]:
        assert self.onnx is not None
        token_ids, lengths = padded_arrays(batch)
        subword_ids = (padded_subword_array(batch, token_ids.shape[1], self.onnx.subword_pad)
                       if self.onnx.subword_pad is not None else None)  # [B, T, K]
        if subword_ids is not None and subword_ids.size > MAX_ONNX_SUBWORD_SLOTS:
            return predict_encoded(self.loaded, batch)
        rows = self.onnx.probabilities(token_ids, lengths, subword_ids)  # [B, C]
        return to_predictions(self.loaded.config.labels, rows.tolist(), batch)

    def step_states(self, encoded: EncodedText) -> StepStates | None:
        """The recurrence of one text from ONNX Runtime for trace_text, or None where the trace
        must run its own: no session, or a bidirectional network (its prefixes need a batch)."""
        if self.onnx is None or self.loaded.config.bidirectional:
            return None
        return self.onnx.step_states(encoded.ids, encoded.subword_ids)


def length_runs(lengths: Sequence[int], max_texts: int, slack: float = PADDING_SLACK) -> list[list[int]]:
    """The indices of texts of `lengths`, shortest first, cut into runs for one forward each.

    A run takes at most `max_texts` texts and closes before its padded slots (texts × the
    longest length) would exceed `slack` × the tokens its texts hold.
    """
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    runs: list[list[int]] = []
    run: list[int] = []
    tokens = 0
    for index in order:
        length = lengths[index]
        if run and (len(run) >= max_texts or (len(run) + 1) * length > slack * (tokens + length)):
            runs.append(run)
            run, tokens = [], 0
        run.append(index)
        tokens += length
    if run:
        runs.append(run)
    return runs


def padded_arrays(batch: Sequence[EncodedText]) -> tuple[np.ndarray, np.ndarray]:
    """padded_batch's ids [B, T] int64 and lengths [B] as numpy arrays, built without torch
    (6x cheaper: this runs for every small batch)."""
    lengths = np.fromiter((len(item.ids) for item in batch), dtype=np.int64, count=len(batch))  # [B]
    token_ids = np.full((len(batch), int(lengths.max())), PAD_ID, dtype=np.int64)  # [B, T]
    for row, item in enumerate(batch):
        token_ids[row, : len(item.ids)] = item.ids
    return token_ids, lengths


def padded_subword_array(batch: Sequence[EncodedText], steps: int, pad: int) -> np.ndarray | None:
    """The batch's n-gram ids [B, T, K] int64 padded with `pad`, or None when no text has any."""
    return batch_subword_array([item.subword_ids for item in batch], steps, pad)


def make_predictor(loaded: LoadedModel, backend: str, threads: int,
                   onnx_max_batch: int = DEFAULT_ONNX_MAX_BATCH) -> Predictor:
    """The Predictor for `backend` (one of BACKENDS), checked against PyTorch before it is returned.

    auto: ONNX Runtime on CPU when it is installed and agrees with PyTorch, else PyTorch alone.
    onnxruntime: the same, but anything that keeps it from serving is an error (ValueError).
    """
    if backend not in BACKENDS:
        raise ValueError(f"invalid backend {backend!r}; options are {list(BACKENDS)}")
    if backend == "torch" or onnx_max_batch < 1:
        return Predictor(loaded)
    insist = backend == "onnxruntime"
    if loaded.device.type != "cpu":
        if insist:
            raise ValueError(f"backend onnxruntime runs on CPU only; the model is on {loaded.device}")
        return Predictor(loaded)
    try:
        onnx = OnnxForward(loaded, threads)
    except ImportError as error:
        if insist:
            raise ValueError(f"backend onnxruntime needs the onnxruntime and onnx packages: {error}") from None
        log.warning("model %s: ONNX Runtime is not installed (%s); serving with torch", loaded.name, error)
        return Predictor(loaded)
    difference = _disagreement(loaded, onnx)
    if not difference <= AGREEMENT_TOLERANCE:  # NaN compares False either way: it disagrees
        message = (f"model {loaded.name}: ONNX Runtime and torch disagree by {difference:.2e} "
                   f"(tolerance {AGREEMENT_TOLERANCE:.0e})")
        if insist:
            raise ValueError(message)
        log.warning("%s; serving with torch", message)
        return Predictor(loaded)
    return Predictor(loaded, onnx, onnx_max_batch)


def _disagreement(loaded: LoadedModel, onnx: OnnxForward) -> float:
    """Max |p_onnx − p_torch| on a probe batch: rows of AGREEMENT_PROBE_LENGTHS tokens, varied ids."""
    generator = torch.Generator().manual_seed(0)
    vocab_size = len(loaded.vocab)
    lengths = list(AGREEMENT_PROBE_LENGTHS)
    token_ids = torch.full((len(lengths), max(lengths)), PAD_ID, dtype=torch.int64)  # [B, T]
    for row, length in enumerate(lengths):
        token_ids[row, :length] = torch.randint(1, vocab_size, (length,), generator=generator)
    lengths_tensor = torch.tensor(lengths, dtype=torch.int64)
    subword_ids = None
    buckets = loaded.config.subword_buckets
    if buckets:
        # Every third token unknown, with 1..6 n-grams (the rest padding), as unseen words have.
        token_ids[:, ::3] = torch.where(token_ids[:, ::3] == PAD_ID, PAD_ID, UNK_ID)
        subword_ids = torch.randint(0, buckets, (*token_ids.shape, 6), generator=generator)  # [B, T, 6]
        counts = torch.randint(1, 7, token_ids.shape, generator=generator).unsqueeze(-1)  # [B, T, 1]
        keep = (torch.arange(6) < counts) & (token_ids == UNK_ID).unsqueeze(-1)
        subword_ids = torch.where(keep, subword_ids, buckets)
    with torch.inference_mode():
        logits = loaded.network(token_ids.to(loaded.device), lengths_tensor,
                                subword_ids=subword_ids.to(loaded.device) if subword_ids is not None else None).logits
        expected = torch.softmax(logits.float(), dim=-1).cpu().numpy()  # [B, C]
    actual = onnx.probabilities(token_ids.numpy(), lengths_tensor.numpy(),
                                subword_ids.numpy() if subword_ids is not None else None)
    return float(np.abs(actual - expected).max())


class OnnxRecurrence:
    """A stream's step on the session of Predict's graph (OnnxForward, unidirectional networks):
    chunks of ids and every layer's states before them -> the top layer's outputs and every
    layer's states after. The graph's probabilities are computed too and left unread: ONNX Runtime
    runs the whole graph whatever is fetched, and the pooling and classifier there cost little
    beside the recurrence (docs/performance.md)."""

    def __init__(self, forward: OnnxForward, loaded: LoadedModel, max_batch: int = DEFAULT_STREAM_MAX_BATCH) -> None:
        from .onnx_export import (
            INPUT_IDS, INPUT_LENGTHS, INPUT_SUBWORDS, final_c_output, final_h_output, initial_c_input,
            initial_h_input, layer_states_output,
        )

        if not forward.carries_state:
            raise ValueError(f"model {loaded.name}: its ONNX graph carries no state (a bidirectional network cannot stream)")
        config = loaded.config
        self._session = forward.session
        self.max_batch = max_batch
        self.subword_pad: int | None = config.subword_buckets or None
        self._ids, self._lengths, self._subwords = INPUT_IDS, INPUT_LENGTHS, INPUT_SUBWORDS
        layers = range(config.num_layers)
        self._lstm = config.cell == "lstm"
        self._initial_h = [initial_h_input(layer) for layer in layers]
        self._initial_c = [initial_c_input(layer) for layer in layers] if self._lstm else []
        self._outputs = ([layer_states_output(config.num_layers - 1)] + [final_h_output(layer) for layer in layers]
                         + ([final_c_output(layer) for layer in layers] if self._lstm else []))

    def run(self, token_ids: np.ndarray, lengths: np.ndarray, subword_ids: np.ndarray | None,
            hidden: np.ndarray, cell: np.ndarray | None) -> RecurrenceResult:
        """token_ids [B, T] int64, lengths [B] (each >= 1), subword_ids [B, T, K] or None, hidden and
        cell [L, B, H] float32 -> streaming.RecurrenceResult, in runs of similar length."""
        from .streaming import RecurrenceResult  # here: streaming.py imports this module when it builds a stepper

        batch, steps = token_ids.shape
        size = hidden.shape[-1]
        if batch <= self.max_batch and int(lengths.min()) == steps:  # one length: one run, no scatter
            outputs, final_h, final_c = self._run(token_ids, lengths, subword_ids, hidden, cell)
        else:
            outputs = np.zeros((batch, steps, size), dtype=np.float32)  # [B, T, H]
            final_h = np.empty_like(hidden)
            final_c = np.empty_like(cell) if cell is not None else None
            for run in length_runs(lengths.tolist(), self.max_batch):
                rows = np.asarray(run)
                width = int(lengths[rows].max())
                part = self._run(token_ids[rows, :width], lengths[rows],
                                 subword_ids[rows, :width] if subword_ids is not None else None,
                                 hidden[:, rows], cell[:, rows] if cell is not None else None)
                outputs[rows, :width] = part[0]
                final_h[:, rows] = part[1]
                if final_c is not None:
                    final_c[:, rows] = part[2]
        return RecurrenceResult(outputs=torch.from_numpy(outputs), hidden=torch.from_numpy(final_h),
                                cell=torch.from_numpy(final_c) if final_c is not None else None)

    def _run(self, token_ids: np.ndarray, lengths: np.ndarray, subword_ids: np.ndarray | None,
             hidden: np.ndarray, cell: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        feeds = {self._ids: np.ascontiguousarray(token_ids), self._lengths: lengths.astype(np.int32)}
        if self.subword_pad is not None:
            if subword_ids is None:
                subword_ids = np.full((*token_ids.shape, 1), self.subword_pad, dtype=np.int64)  # [B, T, 1]
            feeds[self._subwords] = np.ascontiguousarray(subword_ids)
        for layer, name in enumerate(self._initial_h):
            feeds[name] = np.ascontiguousarray(hidden[layer:layer + 1], dtype=np.float32)  # [1, B, H]
        for layer, name in enumerate(self._initial_c):
            assert cell is not None
            feeds[name] = np.ascontiguousarray(cell[layer:layer + 1], dtype=np.float32)
        top, *finals = self._session.run(self._outputs, feeds)
        layers = len(self._initial_h)
        outputs = top[:, 0].transpose(1, 0, 2)  # [T, 1, B, H] -> [B, T, H]
        final_h = np.concatenate(finals[:layers])  # [L, B, H]
        final_c = np.concatenate(finals[layers:]) if self._lstm else None
        return outputs, final_h, final_c


def make_stream_recurrence(loaded: LoadedModel, backend: str, threads: int,
                           forward: OnnxForward | None = None) -> OnnxRecurrence | None:
    """The ONNX Runtime recurrence a StreamStepper runs on, or None for torch; chosen as make_predictor
    chooses (auto: ONNX Runtime on CPU when installed and agreeing with torch to AGREEMENT_TOLERANCE
    on a probe; onnxruntime: anything that keeps it from serving is a ValueError).

    forward: Predict's session of the same model (Predictor.onnx), which the stream's step then
    shares; without one, a session is built for the stream alone."""
    if backend not in BACKENDS:
        raise ValueError(f"invalid backend {backend!r}; options are {list(BACKENDS)}")
    if backend == "torch":
        return None
    insist = backend == "onnxruntime"
    if loaded.device.type != "cpu":
        if insist:
            raise ValueError(f"backend onnxruntime runs on CPU only; the model is on {loaded.device}")
        return None
    try:
        recurrence = OnnxRecurrence(forward or OnnxForward(loaded, threads), loaded)
    except ImportError as error:
        if insist:
            raise ValueError(f"backend onnxruntime needs the onnxruntime and onnx packages: {error}") from None
        log.warning("model %s: ONNX Runtime is not installed (%s); streams step on torch", loaded.name, error)
        return None
    difference = _recurrence_disagreement(loaded, recurrence)
    if not difference <= AGREEMENT_TOLERANCE:  # NaN compares False either way: it disagrees
        message = (f"model {loaded.name}: ONNX Runtime and torch stream steps disagree by {difference:.2e} "
                   f"(tolerance {AGREEMENT_TOLERANCE:.0e})")
        if insist:
            raise ValueError(message)
        log.warning("%s; streams step on torch", message)
        return None
    return recurrence


def _recurrence_disagreement(loaded: LoadedModel, recurrence: OnnxRecurrence) -> float:
    """Max |onnx − torch| over the outputs and final states of a probe batch from random states."""
    from .streaming import torch_recurrence

    generator = torch.Generator().manual_seed(0)
    config = loaded.config
    lengths = np.array(AGREEMENT_PROBE_LENGTHS, dtype=np.int64)
    token_ids = np.full((len(lengths), int(lengths.max())), PAD_ID, dtype=np.int64)  # [B, T]
    for row, length in enumerate(lengths):
        token_ids[row, :length] = torch.randint(1, len(loaded.vocab), (int(length),), generator=generator).numpy()
    shape = (config.num_layers, len(lengths), config.hidden_size)
    hidden = torch.rand(shape, generator=generator) * 2 - 1  # [L, B, H] a state in tanh's range
    cell = torch.rand(shape, generator=generator) * 2 - 1 if config.cell == "lstm" else None
    with torch.inference_mode():
        expected = torch_recurrence(loaded, token_ids, torch.from_numpy(lengths), None, hidden, cell)
    actual = recurrence.run(token_ids, lengths, None, hidden.numpy(), cell.numpy() if cell is not None else None)
    mask = torch.from_numpy(np.arange(token_ids.shape[1])[None, :] < lengths[:, None]).unsqueeze(-1)  # [B, T, 1]
    differences = [((actual.outputs - expected.outputs.float().cpu()) * mask).abs().max(),
                   (actual.hidden - expected.hidden.float().cpu()).abs().max()]
    if cell is not None:
        assert actual.cell is not None and expected.cell is not None
        differences.append((actual.cell - expected.cell.float().cpu()).abs().max())
    return float(max(differences))
