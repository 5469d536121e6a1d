"""The tensors a SentimentRNN holds, computed from its config and vocabulary size alone.

A checkpoint's weights file is checked against these shapes before any of it is read, so they
must be known without building the network: even a network on the meta device initialises its
embeddings through PyTorch's Python meta kernels, which import some 800 modules (sympy among
them) into every server process. tests/unit/model/test_model_weight_shapes.py holds this to the
real network's state_dict for every architecture, so the two cannot drift apart.
"""

from __future__ import annotations

from .cells import cell_kind
from .config import ModelConfig

__all__ = ["expected_state_shapes"]


def expected_state_shapes(config: ModelConfig, vocab_size: int) -> dict[str, tuple[int, ...]]:
    """state_dict key -> shape of SentimentRNN(config, vocab_size)."""
    embedding, hidden = config.embedding_dim, config.hidden_size
    features = hidden * config.num_directions  # what each step outputs, and what the pooling sees
    shapes: dict[str, tuple[int, ...]] = {"embedding.weight": (vocab_size, embedding)}
    if config.subword_buckets:
        shapes["subword_embedding.weight"] = (config.subword_buckets + 1, embedding)  # + the padding row
    rows = len(cell_kind(config.cell).gates) * hidden  # W_ih is [G * H, input], W_hh [G * H, H]
    for layer in range(config.num_layers):
        inputs = embedding if layer == 0 else features
        for suffix in ("", "_reverse")[: config.num_directions]:
            shapes[f"rnn.weight_ih_l{layer}{suffix}"] = (rows, inputs)
            shapes[f"rnn.weight_hh_l{layer}{suffix}"] = (rows, hidden)
            shapes[f"rnn.bias_ih_l{layer}{suffix}"] = (rows,)
            shapes[f"rnn.bias_hh_l{layer}{suffix}"] = (rows,)
    if config.pooling == "attention":
        shapes["attention.project.weight"] = (features, features)
        shapes["attention.project.bias"] = (features,)
        shapes["attention.score.weight"] = (1, features)
    shapes["classifier.weight"] = (len(config.labels), features)
    shapes["classifier.bias"] = (len(config.labels),)
    return shapes
