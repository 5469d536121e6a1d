import pytest
import torch

from rnn_sentiment.model.config import ModelConfig
from rnn_sentiment.model.network import SentimentRNN

VOCAB_SIZE = 20


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("pooling", ["last", "mean", "max", "attention"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_shapes(cell, pooling, bidirectional, tiny_network):
    network = tiny_network(VOCAB_SIZE, cell=cell, pooling=pooling, bidirectional=bidirectional, num_layers=2)
    token_ids = torch.randint(2, VOCAB_SIZE, (3, 5))  # [B, T]
    lengths = torch.tensor([5, 2, 4])
    output = network(token_ids, lengths, return_steps=True)
    directions = 2 if bidirectional else 1
    assert output.logits.shape == (3, 2)
    assert output.step_hidden.shape == (3, 5, 6 * directions)
    assert torch.all(output.step_hidden[1, 2:] == 0)  # padding steps are zeros
    h = output.final_state[0] if cell == "lstm" else output.final_state
    assert h.shape == (2 * directions, 3, 6)
    assert (output.attention is not None) == (pooling == "attention")
    assert network(token_ids, lengths).step_hidden is None


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("pooling", ["last", "mean", "max", "attention"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_padding_never_changes_a_result(cell, pooling, bidirectional, tiny_network):
    network = tiny_network(VOCAB_SIZE, cell=cell, pooling=pooling, bidirectional=bidirectional)
    short = torch.tensor([[3, 4, 5]])
    long = torch.tensor([[6, 7, 8, 9, 10, 11, 12]])
    # The short row padded with junk ids: packing must ignore whatever sits past its length.
    padded = torch.cat([torch.cat([short, torch.tensor([[13, 14, 15, 16]])], dim=1), long])
    with torch.no_grad():
        alone = network(short, torch.tensor([3])).logits
        batched = network(padded, torch.tensor([3, 7])).logits
    torch.testing.assert_close(batched[0:1], alone, atol=1e-6, rtol=0)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_state_carried_across_two_chunks_equals_one_pass(cell, tiny_network):
    network = tiny_network(VOCAB_SIZE, cell=cell, num_layers=2)
    token_ids = torch.randint(2, VOCAB_SIZE, (2, 9))  # [B, T]
    with torch.no_grad():
        whole = network.encode(token_ids, torch.tensor([9, 9]))
        first = network.encode(token_ids[:, :4], torch.tensor([4, 4]))
        second = network.encode(token_ids[:, 4:], torch.tensor([5, 5]), initial_state=first.final_state)
    torch.testing.assert_close(torch.cat([first.outputs, second.outputs], dim=1), whole.outputs,
                               atol=1e-6, rtol=0)
    final = second.final_state if cell != "lstm" else second.final_state[1]
    expected = whole.final_state if cell != "lstm" else whole.final_state[1]
    torch.testing.assert_close(final, expected, atol=1e-6, rtol=0)


def test_pooling_last_reads_the_last_step_state(tiny_network):
    network = tiny_network(VOCAB_SIZE, cell="rnn")
    token_ids = torch.randint(2, VOCAB_SIZE, (2, 6))
    lengths = torch.tensor([6, 3])
    with torch.no_grad():
        output = network(token_ids, lengths, return_steps=True)
        last = output.step_hidden[torch.arange(2), lengths - 1]  # [B, H]
    torch.testing.assert_close(output.logits, network.classify_pooled(last), atol=1e-6, rtol=0)


def test_temperature_divides_logits(tiny_network):
    network = tiny_network(VOCAB_SIZE)
    token_ids, lengths = torch.tensor([[2, 3, 4]]), torch.tensor([3])
    with torch.no_grad():
        plain = network(token_ids, lengths).logits
        network.config = ModelConfig(**{**network.config.to_dict(), "temperature": 2.0})
        scaled = network(token_ids, lengths).logits
    torch.testing.assert_close(scaled, plain / 2.0)


def test_zero_length_is_rejected(tiny_network):
    network = tiny_network(VOCAB_SIZE)
    with pytest.raises(ValueError):
        network(torch.tensor([[2, 3]]), torch.tensor([0]))


@pytest.mark.parametrize("field, value, fragment", [
    ("cell", "transformer", "options are ['rnn', 'gru', 'lstm']"),
    ("pooling", "sum", "options are ['last', 'mean', 'max', 'attention']"),
    ("dropout", 1.5, "dropout"),
    ("dropout", 1.0, "dropout must be in [0, 1), got 1.0"),
    ("dropout", -0.1, "dropout must be in [0, 1), got -0.1"),
    ("embedding_dim", 0, "embedding_dim must be >= 1, got 0"),
    ("hidden_size", 0, "hidden_size must be >= 1, got 0"),
    ("num_layers", 0, "num_layers must be >= 1, got 0"),
    ("max_tokens", 0, "max_tokens must be >= 1, got 0"),
    ("labels", ("only",), "labels must be at least two distinct names, got ('only',)"),
    ("labels", ("good", "bad", "good"), "labels must be at least two distinct names"),
    ("subword_buckets", -1, "subword_buckets must be >= 0 (0 = no sub-words), got -1"),
    ("temperature", 0.0, "temperature must be > 0, got 0.0"),
    ("temperature", -1.0, "temperature must be > 0, got -1.0"),
])
def test_invalid_config_lists_the_choices(field, value, fragment, tiny_network):
    with pytest.raises(ValueError, match=fragment.replace("[", r"\[").replace("]", r"\]")
                       .replace("(", r"\(").replace(")", r"\)")):
        SentimentRNN(ModelConfig(**{field: value}), VOCAB_SIZE)


def test_the_smallest_valid_config_builds_a_working_network():
    # Each bound is inclusive where the error message says so: one unit, no dropout, two labels,
    # no sub-words, any temperature above zero.
    config = ModelConfig(embedding_dim=1, hidden_size=1, num_layers=1, max_tokens=1, dropout=0.0,
                         labels=("no", "yes"), subword_buckets=0, temperature=0.01)
    network = SentimentRNN(config, VOCAB_SIZE).eval()
    with torch.no_grad():
        logits = network(torch.tensor([[2]]), torch.tensor([1])).logits
    assert logits.shape == (1, 2) and torch.isfinite(logits).all()


@pytest.mark.parametrize("bidirectional, directions", [(False, 1), (True, 2)])
def test_a_bidirectional_network_reads_each_step_in_both_directions(bidirectional, directions, tiny_network):
    network = tiny_network(VOCAB_SIZE, bidirectional=bidirectional)
    assert network.config.num_directions == directions
    with torch.no_grad():
        output = network(torch.tensor([[2, 3, 4]]), torch.tensor([3]), return_steps=True)
    assert output.step_hidden.shape == (1, 3, 6 * directions)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_the_array_classifier_is_classify_pooled(bidirectional: bool) -> None:
    torch.manual_seed(0)
    network = SentimentRNN(ModelConfig(embedding_dim=8, hidden_size=6, bidirectional=bidirectional, temperature=1.7),
                           VOCAB_SIZE).eval()
    pooled = torch.randn(5, network.output_size)
    with torch.no_grad():
        expected = network.classify_pooled(pooled).numpy()
    assert network.classify_pooled_array(pooled.numpy()) == pytest.approx(expected, abs=1e-6)
