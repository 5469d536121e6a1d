"""model/pooling.py: each pooling's batch, prefix and running forms agree with each other and with
the textbook definition written out here (mean, max, softmax-weighted sum, last real step)."""

from __future__ import annotations

import random

import pytest
import torch
from rnn_sentiment.model import pooling
from rnn_sentiment.model.config import POOLINGS
from rnn_sentiment.model.network import AdditiveAttention

SIZE = 5


@pytest.fixture
def scores_fn() -> AdditiveAttention:
    torch.manual_seed(1)
    return AdditiveAttention(SIZE).eval()


def _padded(lengths: list[int], seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    outputs = torch.randn(len(lengths), max(lengths), SIZE, generator=generator)  # [B, T, H]
    for row, length in enumerate(lengths):
        outputs[row, length:] = 0.0  # as pad_packed_sequence leaves padding
    return outputs


def _textbook(name: str, steps: torch.Tensor, scores_fn) -> torch.Tensor:
    """The pooled vector [H] of one row's real steps [t, H], by the definition."""
    if name == "last":
        return steps[-1]
    if name == "mean":
        return steps.mean(dim=0)
    if name == "max":
        return steps.amax(dim=0)
    weights = torch.softmax(scores_fn(steps.unsqueeze(0))[0], dim=0)  # [t]
    return weights @ steps


@pytest.mark.parametrize("name", POOLINGS)
def test_the_batch_form_is_the_textbook_pooling_of_each_rows_real_steps(name, scores_fn):
    lengths = [3, 1, 6, 4]
    outputs = _padded(lengths)
    with torch.no_grad():
        pooled, weights = pooling.pool(name, outputs, torch.tensor(lengths), scores_fn)
        for row, length in enumerate(lengths):
            torch.testing.assert_close(pooled[row], _textbook(name, outputs[row, :length], scores_fn))
    if name == "attention":
        assert weights is not None and weights.shape == (4, 6)
        torch.testing.assert_close(weights.sum(dim=1), torch.ones(4))
        assert bool((weights[1, 1:] == 0).all())  # padding gets no weight
    else:
        assert weights is None


@pytest.mark.parametrize("name", POOLINGS)
def test_every_prefix_equals_the_batch_form_on_that_prefix(name, scores_fn):
    outputs = _padded([7])[0]  # [T, H]
    with torch.no_grad():
        prefixes, weights = pooling.pool_prefixes(name, outputs, scores_fn)  # [T, H]
        for t in range(7):
            alone, _ = pooling.pool(name, outputs[: t + 1].unsqueeze(0), torch.tensor([t + 1]), scores_fn)
            torch.testing.assert_close(prefixes[t], alone[0], rtol=0, atol=1e-6)
        if name == "attention":
            whole = pooling.pool(name, outputs.unsqueeze(0), torch.tensor([7]), scores_fn)[1]
            torch.testing.assert_close(weights, whole)


@pytest.mark.parametrize("name", POOLINGS)
@pytest.mark.parametrize("seed", range(3))
def test_the_running_form_over_random_chunks_ends_where_the_batch_form_does(name, seed, scores_fn):
    """Rows of different lengths advance together, each by its own chunk sizes (zero included)."""
    rng = random.Random(seed)
    lengths = [rng.randint(1, 12) for _ in range(4)]
    outputs = _padded(lengths, seed)
    carry = pooling.empty_carry(name, len(lengths), SIZE)
    done = [0] * len(lengths)
    with torch.no_grad():
        while done != lengths:
            sizes = [rng.randint(0, min(3, length - at)) for length, at in zip(lengths, done)]
            chunk = torch.zeros(len(lengths), max(max(sizes), 1), SIZE)
            for row, (at, size) in enumerate(zip(done, sizes)):
                chunk[row, :size] = outputs[row, at:at + size]
            carry, per_step = pooling.advance(carry, chunk, torch.tensor(sizes), scores_fn)
            done = [at + size for at, size in zip(done, sizes)]
            for row, size in enumerate(sizes):  # the last step of the chunk is the carry's reading
                if size:
                    torch.testing.assert_close(per_step[row, size - 1], pooling.read(carry)[row], rtol=0, atol=1e-6)
        expected, _ = pooling.pool(name, outputs, torch.tensor(lengths), scores_fn)
        torch.testing.assert_close(pooling.read(carry), expected, rtol=0, atol=1e-6)
    assert carry.count.tolist() == lengths


@pytest.mark.parametrize("name", POOLINGS)
def test_a_carry_that_read_nothing_reads_zeros(name):
    assert bool((pooling.read(pooling.empty_carry(name, 2, SIZE)) == 0).all())


def test_attention_running_softmax_survives_scores_that_would_overflow_exp():
    outputs = _padded([6])

    def huge(values: torch.Tensor) -> torch.Tensor:
        return values[..., 0] * 1000.0  # exp(±1000) is inf / 0 in float32

    carry = pooling.empty_carry("attention", 1, SIZE)
    for start in range(0, 6, 2):
        carry, _ = pooling.advance(carry, outputs[:, start:start + 2], torch.tensor([2]), huge)
    expected = torch.softmax(huge(outputs[0]), dim=0) @ outputs[0]
    assert bool(torch.isfinite(pooling.read(carry)).all())
    torch.testing.assert_close(pooling.read(carry)[0], expected)


@pytest.mark.parametrize("name", POOLINGS)
def test_rows_split_and_stack_back_to_the_same_carry(name, scores_fn):
    carry = pooling.empty_carry(name, 3, SIZE)
    with torch.no_grad():
        carry, _ = pooling.advance(carry, _padded([2, 3, 1]), torch.tensor([2, 3, 1]), scores_fn, steps=False)
    again = pooling.stack_carries([carry.rows(row) for row in range(3)])
    for key, value in carry.tensors().items():
        assert torch.equal(again.tensors()[key], value)
    assert carry.rows(1).nbytes() * 3 == carry.nbytes()


def test_the_table_holds_every_pooling_a_config_accepts_and_names_the_valid_ones():
    assert tuple(pooling.POOLINGS_BY_NAME) == POOLINGS
    with pytest.raises(ValueError, match="options are"):
        pooling.empty_carry("median", 1, SIZE)
