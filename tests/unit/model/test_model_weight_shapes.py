"""The shapes a checkpoint is checked against are exactly the real network's, for every architecture."""

from __future__ import annotations

import itertools

import pytest

from rnn_sentiment.model.config import ModelConfig
from rnn_sentiment.model.network import SentimentRNN
from rnn_sentiment.model.weight_shapes import expected_state_shapes

ARCHITECTURES = [
    dict(cell=cell, num_layers=layers, bidirectional=bidirectional, pooling=pooling, subword_buckets=buckets,
         labels=labels)
    for cell, layers, bidirectional, pooling, buckets, labels in itertools.product(
        ("rnn", "gru", "lstm"), (1, 3), (False, True), ("last", "attention"), (0, 7),
        (("negative", "positive"), ("negative", "neutral", "positive")))
]


@pytest.mark.parametrize("architecture", ARCHITECTURES, ids=lambda a: "-".join(map(str, a.values())))
def test_expected_shapes_are_the_networks_state_dict(architecture):
    config = ModelConfig(embedding_dim=5, hidden_size=3, dropout=0.0, **architecture)
    network = SentimentRNN(config, vocab_size=11)
    actual = {key: tuple(value.shape) for key, value in network.state_dict().items()}
    assert expected_state_shapes(config, 11) == actual
