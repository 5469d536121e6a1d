"""Shared fixtures for model unit tests: tiny vocabularies, tiny networks, the SST-2 data path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from rnn_sentiment.model.config import ModelConfig
from rnn_sentiment.model.network import SentimentRNN
from rnn_sentiment.model.vocabulary import Vocabulary

# tests/unit/model -> project root -> its sibling shared/ (the default data location).
SST2_DIR = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "sst2"

WORDS = "the movie is not good bad great boring fun and but a plot acting it 's n't .".split()


@pytest.fixture(autouse=True)
def _one_thread():
    # The test machine is shared; tiny models gain nothing from more threads.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def sst2_dir() -> Path:
    if not (SST2_DIR / "dev.tsv").is_file():
        pytest.skip(f"SST-2 data not found at {SST2_DIR} (the project reads it from ../shared/data/sst2)")
    return SST2_DIR


@pytest.fixture
def vocab() -> Vocabulary:
    return Vocabulary.build([WORDS])


@pytest.fixture
def assert_onnx_agrees() -> Callable[..., None]:
    """A check: ONNX Runtime gives torch's probabilities to AGREEMENT_TOLERANCE for texts as one
    batch, and each text alone gives what it gave in the batch (padding never leaks into a row)."""
    pytest.importorskip("onnxruntime", reason="the server extra installs onnxruntime")
    from rnn_sentiment.model.backends import (AGREEMENT_TOLERANCE, make_predictor, padded_arrays,
                                               padded_subword_array)
    from rnn_sentiment.model.inference import encode_texts, predict_encoded

    def check(loaded, texts: list[str]) -> None:
        predictor = make_predictor(loaded, "onnxruntime", threads=1, onnx_max_batch=64)
        assert predictor.onnx is not None
        batch = encode_texts(texts, loaded.vocab, loaded.config.max_tokens)
        expected = torch.tensor([r.probabilities for r in predict_encoded(loaded, batch)])
        torch.testing.assert_close(torch.tensor([r.probabilities for r in predictor(batch)]), expected,
                                   rtol=0, atol=AGREEMENT_TOLERANCE)
        # The predictor runs texts in runs of similar length; the session itself must also keep
        # the padding of one run over the whole mixed batch out of every row.
        token_ids, lengths = padded_arrays(batch)
        subword_ids = (padded_subword_array(batch, token_ids.shape[1], predictor.onnx.subword_pad)
                       if predictor.onnx.subword_pad is not None else None)
        actual = torch.from_numpy(predictor.onnx.probabilities(token_ids, lengths, subword_ids))
        torch.testing.assert_close(actual, expected, rtol=0, atol=AGREEMENT_TOLERANCE)
        for index, item in enumerate(batch):
            alone = torch.tensor(predictor([item])[0].probabilities)
            torch.testing.assert_close(alone, actual[index], rtol=0, atol=AGREEMENT_TOLERANCE)

    return check


@pytest.fixture
def tiny_network() -> Callable[..., SentimentRNN]:
    """A factory for small seeded networks in eval mode: tiny_network(vocab_size, cell="lstm", ...)."""

    def build(vocab_size: int, seed: int = 0, **overrides) -> SentimentRNN:
        torch.manual_seed(seed)
        settings = dict(cell="gru", embedding_dim=8, hidden_size=6, dropout=0.0)
        settings.update(overrides)
        return SentimentRNN(ModelConfig(**settings), vocab_size).eval()

    return build
