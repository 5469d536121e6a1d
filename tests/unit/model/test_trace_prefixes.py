"""SentimentRNN.forward_prefixes: row t is forward() on the first t+1 tokens, for every architecture."""

from __future__ import annotations

import pytest
import torch

from rnn_sentiment.model.config import CELLS, POOLINGS


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("pooling", POOLINGS)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_every_row_is_the_answer_for_that_prefix(cell, pooling, bidirectional, vocab, tiny_network):
    network = tiny_network(len(vocab), cell=cell, pooling=pooling, bidirectional=bidirectional, num_layers=2)
    ids = torch.tensor(vocab.encode("the plot is boring but the acting is great .".split()))
    with torch.no_grad():
        together = network.forward_prefixes(ids)
        for t in range(len(ids)):
            alone = network(ids[: t + 1].unsqueeze(0), torch.tensor([t + 1]), return_steps=True)
            torch.testing.assert_close(together.logits[t], alone.logits[0], atol=1e-6, rtol=0)
        torch.testing.assert_close(together.step_hidden, alone.step_hidden, atol=1e-6, rtol=0)
        if pooling == "attention":
            torch.testing.assert_close(together.attention, alone.attention, atol=1e-6, rtol=0)
        else:
            assert together.attention is None
