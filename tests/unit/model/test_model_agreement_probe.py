"""The load-time ONNX-vs-torch agreement run: a fixed short probe, and NaN counts as disagreement."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from rnn_sentiment.model.backends import AGREEMENT_PROBE_LENGTHS, make_predictor
from rnn_sentiment.model.checkpoint import LoadedModel
from rnn_sentiment.model.checkpoint_schema import MAX_TOKENS_BOUND

pytest.importorskip("onnxruntime", reason="the server extra installs onnxruntime")


def _loaded(network, vocab) -> LoadedModel:
    return LoadedModel(name="tiny", version="1", config=network.config, training=None, vocab=vocab,
                       network=network, sha256="", path=Path("."))


def test_the_probe_batch_is_short_whatever_max_tokens_the_checkpoint_sets(vocab, tiny_network):
    network = tiny_network(len(vocab), subword_buckets=16)
    network.config = dataclasses.replace(network.config, max_tokens=MAX_TOKENS_BOUND)
    probed: list[tuple[int, ...]] = []

    def refuse_long_batches(module, args):
        token_ids = args[0]
        probed.append(tuple(token_ids.shape))
        # Stop a long probe here rather than run it: the check is its shape, not its cost.
        assert token_ids.shape[-1] <= max(AGREEMENT_PROBE_LENGTHS), f"probe of {tuple(token_ids.shape)} tokens"

    network.register_forward_pre_hook(refuse_long_batches)
    predictor = make_predictor(_loaded(network, vocab), "onnxruntime", threads=1)
    assert predictor.onnx is not None
    assert probed == [(len(AGREEMENT_PROBE_LENGTHS), max(AGREEMENT_PROBE_LENGTHS))]


def test_nan_probabilities_count_as_disagreement(vocab, tiny_network):
    network = tiny_network(len(vocab))
    with torch.no_grad():
        network.classifier.bias[0] = float("nan")  # both executors answer NaN: |NaN - NaN| is NaN
    with pytest.raises(ValueError, match="disagree by nan"):
        make_predictor(_loaded(network, vocab), "onnxruntime", threads=1)
    assert make_predictor(_loaded(network, vocab), "auto", threads=1).onnx is None
