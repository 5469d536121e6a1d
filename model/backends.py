"""Which runtime executes Predict's forward: PyTorch, or ONNX Runtime for the small batches.

Measured on the shipped GRU 256 with one CPU thread (`make bench`: ceiling B runs both
executors; bench/results/serving.md): ONNX Runtime's fused recurrent kernels run a batch of one
text about 3× faster than PyTorch's CPU GRU, whose per-step operator overhead dominates small
batches; the advantage shrinks with the batch and turns around between 32 and 64 texts, where
PyTorch's batched matrix products win. So `auto` runs batches of up to `onnx_max_batch` texts on ONNX
Runtime and larger ones on PyTorch, on CPU only.

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

import numpy as np
import torch

from .checkpoint import LoadedModel
from .inference import (
    EncodedText,
    PredictionResult,
    predict_encoded,
    to_predictions,
)
from .subwords import batch_subword_array, subword_array
from .trace import StepStates
from .vocabulary import PAD_ID, UNK_ID

__all__ = ["BACKENDS", "AGREEMENT_TOLERANCE", "DEFAULT_ONNX_MAX_BATCH", "MAX_ONNX_SUBWORD_SLOTS", "OnnxForward",
           "Predictor", "make_predictor", "padded_arrays", "padded_subword_array"]

BACKENDS = ("auto", "torch", "onnxruntime")
AGREEMENT_TOLERANCE = 1e-5  # max |p_onnx − p_torch| over a probe batch
# ONNX Runtime's n-gram mean gathers a [B, T, K, E] block (K: the longest n-gram list in the
# batch); above this many n-gram slots (B·T·K; 64 MB of gathered float32 at E = 256) a batch runs
# on torch, whose EmbeddingBag never materialises it. Ordinary batches hold a few hundred.
MAX_ONNX_SUBWORD_SLOTS = 65_536
# The crossover, one thread (bench/results/serving.md, 2026-11-29 06:07): ONNX Runtime did 3.14× torch's
# texts/s at 1 text, 1.67× at 8, 1.23× at 16, 0.98× at 32 and 0.76× at 64.
DEFAULT_ONNX_MAX_BATCH = 16

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
            layer_states_output,
        )

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads  # the same budget torch gets per worker
        options.inter_op_num_threads = 1
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only: its warnings are about graph rewrites, not requests
        model = build_onnx_model(loaded.network)
        self._session = onnxruntime.InferenceSession(model.SerializeToString(), options,
                                                     providers=["CPUExecutionProvider"])
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
        return self._session.run(self._outputs, self._feeds(token_ids, lengths, subword_ids))[0]

    def _feeds(self, token_ids: np.ndarray, lengths: np.ndarray, subword_ids: np.ndarray | None) -> dict[str, np.ndarray]:
        feeds = {self._inputs[0]: token_ids, self._inputs[1]: lengths.astype(np.int32)}
        if self.subword_pad is not None:
            if subword_ids is None:
                subword_ids = np.full((*token_ids.shape, 1), self.subword_pad, dtype=np.int64)  # [B, T, 1]
            feeds[self._subwords_input] = subword_ids
        elif subword_ids is not None:
            raise ValueError("this model has no sub-words; pass subword_ids=None")
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
        probabilities, *layers = self._session.run(
            self._step_outputs, self._feeds(ids, np.array([steps], dtype=np.int64), subwords))
        return StepStates(
            layers=[torch.from_numpy(y).permute(2, 0, 1, 3).reshape(1, steps, -1) for y in layers],  # [1, T, D*H]
            probabilities=torch.from_numpy(probabilities[0]),  # [C]
        )


@dataclass(frozen=True)
class Predictor:
    """predict_encoded with the runtime chosen per batch: ONNX Runtime up to onnx_max_batch texts."""

    loaded: LoadedModel
    onnx: OnnxForward | None = None
    onnx_max_batch: int = DEFAULT_ONNX_MAX_BATCH

    @property
    def description(self) -> str:
        if self.onnx is None:
            return "torch"
        return f"onnxruntime for batches of up to {self.onnx_max_batch} texts, torch above"

    def __call__(self, batch: Sequence[EncodedText]) -> list[PredictionResult]:
        if self.onnx is None or len(batch) > self.onnx_max_batch or not batch:
            return predict_encoded(self.loaded, batch)
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
    if difference > AGREEMENT_TOLERANCE:
        message = (f"model {loaded.name}: ONNX Runtime and torch disagree by {difference:.2e} "
                   f"(tolerance {AGREEMENT_TOLERANCE:.0e})")
        if insist:
            raise ValueError(message)
        log.warning("%s; serving with torch", message)
        return Predictor(loaded)
    return Predictor(loaded, onnx, onnx_max_batch)


def _disagreement(loaded: LoadedModel, onnx: OnnxForward) -> float:
    """Max |p_onnx − p_torch| on a probe batch: rows of lengths 1..8 and one of max_tokens, varied ids."""
    generator = torch.Generator().manual_seed(0)
    vocab_size = len(loaded.vocab)
    lengths = [*range(1, 9), loaded.config.max_tokens]
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
