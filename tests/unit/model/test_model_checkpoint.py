import json

import pytest
import torch

from rnn_sentiment.model.checkpoint import (CheckpointError, checkpoint_sha256, load_checkpoint,
                                            save_checkpoint)
from rnn_sentiment.model.config import TrainingRecord

RECORD = TrainingRecord(dev_accuracy=0.5, dev_macro_f1=0.5, epochs_run=1.0, best_epoch=1.0, seed=1,
                        train_seconds=1.0, train_examples=10, trained_at="2024-01-01T00:00:00+00:00",
                        data="sst2")


@pytest.fixture
def saved(tmp_path, vocab, tiny_network):
    network = tiny_network(len(vocab), cell="lstm", pooling="attention")
    directory = tmp_path / "ckpt"
    save_checkpoint(directory, network, vocab, network.config, "tiny", "0.1.0", RECORD)
    return directory, network


def test_round_trip_gives_the_same_logits(saved, vocab):
    directory, network = saved
    loaded = load_checkpoint(directory)
    token_ids, lengths = torch.tensor([[2, 3, 4, 5]]), torch.tensor([4])
    with torch.no_grad():
        torch.testing.assert_close(loaded.network(token_ids, lengths).logits,
                                   network(token_ids, lengths).logits, atol=0, rtol=0)
    assert (loaded.name, loaded.version, loaded.training, loaded.vocab) == ("tiny", "0.1.0", RECORD, vocab)
    assert loaded.config == network.config and not loaded.network.training
    assert json.loads((directory / "config.json").read_text())["model"]["cell"] == "lstm"


def test_sha256_is_stable_and_tracks_content(saved, tmp_path, vocab):
    directory, network = saved
    first = load_checkpoint(directory).sha256
    assert first == load_checkpoint(directory).sha256 == checkpoint_sha256(directory)
    save_checkpoint(tmp_path / "again", network, vocab, network.config, "tiny", "0.1.0", RECORD)
    assert checkpoint_sha256(tmp_path / "again") == first  # same content, same hash
    save_checkpoint(tmp_path / "other", network, vocab, network.config, "tiny", "0.2.0", RECORD)
    assert checkpoint_sha256(tmp_path / "other") != first


def test_float16_weights_load_as_float32(tmp_path, vocab, tiny_network):
    network = tiny_network(len(vocab))
    save_checkpoint(tmp_path / "half", network, vocab, network.config, "tiny", "1", weights_dtype="float16")
    loaded = load_checkpoint(tmp_path / "half")
    assert all(p.dtype == torch.float32 for p in loaded.network.parameters())
    assert loaded.training is None


@pytest.mark.parametrize("filename, damage", [
    ("model.safetensors", b"not a safetensors file"),
    ("config.json", b"{broken"),
    ("vocab.json", b'["no", "specials"]'),
])
def test_corrupt_file_raises_checkpoint_error_naming_it(saved, filename, damage):
    directory, _ = saved
    (directory / filename).write_bytes(damage)
    with pytest.raises(CheckpointError, match=filename):
        load_checkpoint(directory)


def test_missing_file_and_mismatched_vocab(saved):
    directory, _ = saved
    vocab_text = (directory / "vocab.json").read_text()
    (directory / "vocab.json").write_text(json.dumps(json.loads(vocab_text) + ["extra"]))
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_checkpoint(directory)
    (directory / "vocab.json").unlink()
    with pytest.raises(CheckpointError, match="vocab.json"):
        load_checkpoint(directory)
