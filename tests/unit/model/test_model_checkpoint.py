import dataclasses
import json
import os

import pytest
import torch

from rnn_sentiment.model.checkpoint import (CheckpointError, checkpoint_sha256, load_checkpoint,
                                            save_checkpoint)
from rnn_sentiment.model.config import ModelConfig, TrainingRecord

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


# --- config.json is checked as data, field by field, before anything is built -----------------

def _edit_config(directory, edit) -> None:
    document = json.loads((directory / "config.json").read_text())
    edit(document)
    (directory / "config.json").write_text(json.dumps(document))


def _set(path: str, value):
    """An edit that sets one dotted field of config.json (`model.labels`, `training.seed`)."""

    def edit(document):
        *parents, last = path.split(".")
        target = document
        for part in parents:
            target = target[part]
        target[last] = value

    return edit


def _remove(path: str):
    def edit(document):
        *parents, last = path.split(".")
        target = document
        for part in parents:
            target = target[part]
        del target[last]

    return edit


BAD_CONFIGS = [
    (_set("model.labels", [0, 1]), "model.labels[0] must be a string, got 0"),
    (_set("model.labels", []), "model.labels must hold at least 2 and at most 64 names, got 0"),
    (_set("model.labels", ["good", "good"]), "model.labels[1] repeats 'good'"),
    (_set("model.labels", ["good", ""]), "model.labels[1] must not be empty"),
    (_set("model.labels", [f"label{i}" for i in range(65)]), "model.labels must hold at least 2 and at most 64 names, got 65"),
    (_set("model.labels", "negative positive"), "model.labels must be a list"),
    (_set("model.embedding_dim", 20_000), "model.embedding_dim must be at most 4096, got 20000"),
    (_set("model.embedding_dim", True), "model.embedding_dim must be an integer, got True"),
    (_set("model.embedding_dim", 8.0), "model.embedding_dim must be an integer, got 8.0"),
    (_set("model.hidden_size", "6"), "model.hidden_size must be an integer, got '6'"),
    (_set("model.hidden_size", 0), "model.hidden_size must be at least 1, got 0"),
    (_set("model.num_layers", 100), "model.num_layers must be at most 8"),
    (_set("model.max_tokens", 50_000), "model.max_tokens must be at most 4096"),
    (_set("model.subword_buckets", 10**9), "model.subword_buckets must be at most 1000000"),
    (_set("model.subword_buckets", -1), "model.subword_buckets must be at least 0"),
    (_set("model.dropout", "0.1"), "model.dropout must be a number, got '0.1'"),
    (_set("model.dropout", 1.5), "model.dropout must be in [0, 1)"),
    (_set("model.temperature", float("nan")), "model.temperature must be finite, got nan"),
    (_set("model.temperature", float("inf")), "model.temperature must be finite, got inf"),
    (_set("model.temperature", 0), "model.temperature must be > 0"),
    (_set("model.bidirectional", 1), "model.bidirectional must be true or false, got 1"),
    (_set("model.cell", 5), "model.cell must be a string, got 5"),
    (_set("model.cell", "transformer"), "model.cell must be one of ['rnn', 'gru', 'lstm'], got 'transformer'"),
    (_set("model.pooling", "sum"), "model.pooling must be one of"),
    (_set("model.heads", 4), "model has unknown keys ['heads']"),
    (_set("model", [1, 2]), "model must be an object"),
    (_remove("model"), "model is missing"),
    (_set("training.dev_accuracy", "0.9"), "training.dev_accuracy must be a number, got '0.9'"),
    (_set("training.dev_accuracy", 1.5), "training.dev_accuracy must be in [0, 1]"),
    (_set("training.seed", 1.5), "training.seed must be an integer, got 1.5"),
    (_set("training.train_examples", -1), "training.train_examples must be at least 0"),
    (_set("training.trained_at", 5), "training.trained_at must be a string, got 5"),
    (_set("training.epochs_run", float("inf")), "training.epochs_run must be finite"),
    (_remove("training.seed"), "training.seed is missing"),
    (_set("training.notes", "x"), "training has unknown keys ['notes']"),
    (_set("training", "yes"), "training must be an object or null"),
    (_set("name", 5), "name must be a string, got 5"),
    (_set("name", ""), "name must not be empty"),
    (_set("name", "x" * 129), "name must be at most 128 characters"),
    (_set("name", "bad\nname"), "name must be printable"),
    (_set("version", None), "version must be a string, got None"),
    (_set("format_version", 2), "format_version must be 1, got 2"),
    (_set("format_version", "1"), "format_version must be an integer"),
    (_set("weights", "elsewhere"), "the document has unknown keys ['weights']"),
]


@pytest.mark.parametrize("edit, message", BAD_CONFIGS, ids=[m for _, m in BAD_CONFIGS])
def test_a_config_field_of_the_wrong_type_or_size_is_refused_naming_the_field(saved, edit, message):
    directory, _ = saved
    _edit_config(directory, edit)
    with pytest.raises(CheckpointError) as raised:
        load_checkpoint(directory)
    assert f"config.json: {message}" in str(raised.value)


def test_a_config_that_is_not_an_object_is_refused(saved):
    directory, _ = saved
    (directory / "config.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="config.json: the document must be an object"):
        load_checkpoint(directory)


@pytest.mark.parametrize("filename", ["config.json", "vocab.json"])
def test_json_nested_too_deeply_is_a_checkpoint_error(saved, filename):
    directory, _ = saved
    (directory / filename).write_text("[" * 60_000)  # within every size limit
    with pytest.raises(CheckpointError, match=f"{filename}: the document is nested too deeply"):
        load_checkpoint(directory)


def test_training_numbers_written_as_integers_load_as_floats(saved):
    directory, _ = saved
    _edit_config(directory, _set("training.epochs_run", 3))
    assert load_checkpoint(directory).training.epochs_run == 3.0
    assert isinstance(load_checkpoint(directory).training.epochs_run, float)


def test_a_vocabulary_of_non_strings_or_too_many_tokens_is_refused(saved):
    from rnn_sentiment.model.checkpoint_schema import MAX_VOCABULARY_TOKENS

    directory, _ = saved
    tokens = json.loads((directory / "vocab.json").read_text())
    (directory / "vocab.json").write_text(json.dumps(tokens + [7]))
    with pytest.raises(CheckpointError, match=r"vocab.json: token \d+ must be a string, got 7"):
        load_checkpoint(directory)
    many = tokens + [f"w{i}" for i in range(MAX_VOCABULARY_TOKENS)]
    (directory / "vocab.json").write_text(json.dumps(many))
    with pytest.raises(CheckpointError, match=f"vocab.json: .* at most {MAX_VOCABULARY_TOKENS}"):
        load_checkpoint(directory)


# --- model.safetensors: header checked against the config before any tensor is materialised -----

def _header_and_data(path) -> tuple[dict, bytes]:
    raw = path.read_bytes()
    length = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8:8 + length]), raw[8 + length:]


def _write_weights(path, header: dict, data: bytes) -> None:
    encoded = json.dumps(header).encode()
    path.write_bytes(len(encoded).to_bytes(8, "little") + encoded + data)


def _write_weights_raw(path, header: bytes) -> None:
    path.write_bytes(len(header).to_bytes(8, "little") + header)


def _edit_header(edit):
    def apply(path):
        header, data = _header_and_data(path)
        edit(header)
        _write_weights(path, header, data)

    return apply


def _header_set(tensor: str, field: str, value):
    return _edit_header(lambda header: header[tensor].__setitem__(field, value))


def _header_length(length: int):
    def apply(path):
        raw = path.read_bytes()
        path.write_bytes(length.to_bytes(8, "little") + raw[8:])

    return apply


BAD_WEIGHTS = [
    (_header_set("classifier.weight", "shape", [3, 6]),
     "tensor classifier.weight has shape [3, 6]; config.json and vocab.json imply [2, 6]"),
    (_header_set("classifier.weight", "dtype", "F64"), "tensor classifier.weight has dtype F64"),
    (_header_set("classifier.weight", "dtype", "I64"), "tensor classifier.weight has dtype I64"),
    (_header_set("classifier.bias", "data_offsets", [0, 10**12]), "tensor classifier.bias"),
    (_header_set("classifier.bias", "data_offsets", [8, 0]), "tensor classifier.bias"),
    (_header_set("classifier.bias", "shape", "2"), "tensor classifier.bias: shape must be a list"),
    (_edit_header(lambda header: header.__setitem__("extra.weight", dict(header["classifier.bias"]))),
     "unexpected tensor extra.weight"),
    (_edit_header(lambda header: header.pop("classifier.bias")), "missing tensor classifier.bias"),
    (_edit_header(lambda header: header.__setitem__("__metadata__", [1])), "__metadata__"),
    (_header_length(2**40), "header length 1099511627776"),
    (_header_length(3), "header is not valid JSON"),
    (lambda path: _write_weights_raw(path, b"[" * 60_000), "header is not valid JSON"),
    (lambda path: path.write_bytes(b"\x01\x00"), "shorter than its 8-byte header length"),
]


@pytest.mark.parametrize("damage, message", BAD_WEIGHTS, ids=[m for _, m in BAD_WEIGHTS])
def test_a_weights_header_that_disagrees_with_the_config_is_refused_naming_the_tensor(saved, damage, message):
    directory, _ = saved
    damage(directory / "model.safetensors")
    with pytest.raises(CheckpointError) as raised:
        load_checkpoint(directory)
    assert "model.safetensors: " in str(raised.value) and message in str(raised.value)


@pytest.mark.parametrize("tensor, value", [("classifier.bias", float("nan")),
                                           ("rnn.weight_hh_l0", float("inf")),
                                           ("embedding.weight", float("-inf"))])
@pytest.mark.parametrize("weights_dtype", ["float32", "float16"])
def test_weights_that_are_not_finite_are_refused_naming_the_tensor(tmp_path, vocab, tiny_network, tensor,
                                                                   value, weights_dtype):
    network = tiny_network(len(vocab))
    with torch.no_grad():
        network.state_dict()[tensor].view(-1)[-1] = value
    save_checkpoint(tmp_path / "ckpt", network, vocab, network.config, "tiny", "1", weights_dtype=weights_dtype)
    with pytest.raises(CheckpointError, match=f"model.safetensors: tensor {tensor} holds .*non-finite"):
        load_checkpoint(tmp_path / "ckpt")


def test_a_config_implying_too_many_parameters_is_refused_before_building(saved):
    from rnn_sentiment.model.checkpoint_schema import MAX_PARAMETERS

    directory, _ = saved
    _edit_config(directory, _set("model.subword_buckets", 1_000_000))
    _edit_config(directory, _set("model.embedding_dim", 4096))
    with pytest.raises(CheckpointError, match=f"more than the limit of {MAX_PARAMETERS:,}"):
        load_checkpoint(directory)


@pytest.mark.parametrize("filename, limit_name", [("model.safetensors", "MAX_WEIGHTS_BYTES"),
                                                  ("config.json", "MAX_CONFIG_BYTES"),
                                                  ("vocab.json", "MAX_VOCABULARY_BYTES")])
def test_a_file_over_its_size_limit_is_refused_by_its_size(saved, filename, limit_name):
    from rnn_sentiment.model import checkpoint_schema

    directory, _ = saved
    limit = getattr(checkpoint_schema, limit_name)
    with open(directory / filename, "r+b") as file:
        file.truncate(limit + 1)  # sparse: no disk is used, and a reader would get zeros
    with pytest.raises(CheckpointError, match=f"{filename} is {limit + 1:,} bytes, more than the limit of {limit:,}"):
        load_checkpoint(directory)
    with pytest.raises(CheckpointError, match=filename):
        checkpoint_sha256(directory)


def test_a_checkpoint_file_that_is_not_a_regular_file_is_refused(saved):
    directory, _ = saved
    (directory / "vocab.json").unlink()
    os.mkfifo(directory / "vocab.json")  # opening a FIFO for reading would wait for a writer forever
    with pytest.raises(CheckpointError, match="vocab.json is not a regular file"):
        load_checkpoint(directory)


def test_a_model_field_left_out_of_config_json_takes_its_fixed_default(tmp_path, vocab, tiny_network):
    # Files written before a field existed leave it out; what each omission means is part of the
    # file format, so the same file must load the same model in every later version.
    network = tiny_network(len(vocab), embedding_dim=256, hidden_size=256, dropout=0.3)
    directory = tmp_path / "defaults"
    save_checkpoint(directory, network, vocab, network.config, "old", "0.0.1", RECORD)
    _edit_config(directory, _set("model", {}))
    loaded = load_checkpoint(directory)
    assert loaded.config.to_dict() == {
        "cell": "gru", "embedding_dim": 256, "hidden_size": 256, "num_layers": 1, "bidirectional": False,
        "pooling": "last", "dropout": 0.3, "labels": ["negative", "positive"], "max_tokens": 128,
        "temperature": 1.0, "subword_buckets": 0,
    }
    token_ids, lengths = torch.tensor([[2, 3, 4, 5]]), torch.tensor([4])
    with torch.no_grad():
        torch.testing.assert_close(loaded.network(token_ids, lengths).logits,
                                   network(token_ids, lengths).logits, atol=0, rtol=0)


def test_a_loaded_config_and_training_record_are_values_nobody_can_change(saved):
    # The server shares one loaded checkpoint between concurrent calls and reloads: its description
    # must not change under them, and equal descriptions must compare and hash equal.
    directory, _ = saved
    loaded = load_checkpoint(directory)
    for value, field in ((loaded.config, "hidden_size"), (loaded.training, "dev_accuracy")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(value, field, 1)
    again = load_checkpoint(directory)
    assert {loaded.config: "a", again.config: "b"} == {loaded.config: "b"}
    assert hash(loaded.training) == hash(again.training) and loaded.training == again.training
    assert ModelConfig(**loaded.config.to_dict()) == loaded.config


def test_a_config_exactly_at_its_size_limit_loads(saved):
    from rnn_sentiment.model.checkpoint_schema import MAX_CONFIG_BYTES

    directory, _ = saved
    config = directory / "config.json"
    config.write_bytes(config.read_bytes().rstrip(b"\n").ljust(MAX_CONFIG_BYTES, b" "))  # JSON allows trailing spaces
    assert config.stat().st_size == MAX_CONFIG_BYTES
    assert load_checkpoint(directory).name == "tiny"
    assert checkpoint_sha256(directory) == load_checkpoint(directory).sha256


def test_a_file_whose_size_is_not_reported_is_still_cut_at_its_limit(saved):
    # procfs (and some FUSE file systems) report size 0 for files that hold far more: the
    # size check passes, so the read itself must stop at the limit.
    source = "/proc/self/smaps"
    if not os.path.exists(source) or os.stat(source).st_size != 0:
        pytest.skip("needs a procfs file that reports size 0")
    from rnn_sentiment.model.checkpoint_schema import MAX_CONFIG_BYTES

    directory, _ = saved
    (directory / "config.json").unlink()
    (directory / "config.json").symlink_to(source)
    with pytest.raises(CheckpointError, match=f"config.json grew past the limit of {MAX_CONFIG_BYTES:,} bytes while read"):
        load_checkpoint(directory)


def test_save_creates_missing_parents_and_overwrites_an_earlier_checkpoint(saved, tmp_path, vocab):
    directory, network = saved  # already holds version 0.1.0
    save_checkpoint(directory, network, vocab, network.config, "tiny", "0.2.0", RECORD)
    assert load_checkpoint(directory).version == "0.2.0"
    nested = tmp_path / "runs" / "2024" / "best"
    save_checkpoint(nested, network, vocab, network.config, "tiny", "0.3.0", RECORD)
    assert load_checkpoint(nested).version == "0.3.0"


def test_a_config_implying_exactly_the_parameter_limit_is_not_refused_for_its_size(saved):
    import math

    from rnn_sentiment.model.checkpoint_schema import MAX_PARAMETERS, parse_config_document
    from rnn_sentiment.model.weight_shapes import expected_state_shapes

    directory, _ = saved
    for field, value in (("embedding_dim", 66), ("hidden_size", 4), ("subword_buckets", 969_658)):
        _edit_config(directory, _set(f"model.{field}", value))
    config = parse_config_document(json.loads((directory / "config.json").read_text())).config
    vocab_size = len(json.loads((directory / "vocab.json").read_text()))
    assert sum(math.prod(s) for s in expected_state_shapes(config, vocab_size).values()) == MAX_PARAMETERS
    # Allowed by its size, the load goes on to the weights, which were saved for another shape.
    with pytest.raises(CheckpointError) as raised:
        load_checkpoint(directory)
    assert "model.safetensors: " in str(raised.value) and "more than the limit" not in str(raised.value)


def test_a_non_finite_value_in_a_one_element_tensor_is_refused(tmp_path, vocab, tiny_network):
    network = tiny_network(len(vocab), cell="rnn", embedding_dim=1, hidden_size=1)
    assert network.state_dict()["rnn.bias_ih_l0"].numel() == 1
    with torch.no_grad():
        network.state_dict()["rnn.bias_ih_l0"][0] = float("nan")
    save_checkpoint(tmp_path / "ckpt", network, vocab, network.config, "tiny", "1")
    with pytest.raises(CheckpointError, match="tensor rnn.bias_ih_l0 holds 1 non-finite values"):
        load_checkpoint(tmp_path / "ckpt")


def test_weights_whose_header_only_python_can_read_are_refused_naming_the_file(saved):
    # A lone surrogate escape passes Python's JSON reader (and so every header check) but not
    # safetensors' own: the load must still end in a CheckpointError, not the loader's exception.
    directory, _ = saved
    _edit_header(lambda header: header["__metadata__"].update(format="\ud800"))(directory / "model.safetensors")
    with pytest.raises(CheckpointError, match="model.safetensors is not a readable safetensors file"):
        load_checkpoint(directory)


def test_a_checkpoint_file_that_cannot_be_opened_is_refused_naming_it(saved):
    directory, _ = saved
    (directory / "vocab.json").unlink()
    (directory / "vocab.json").symlink_to("vocab.json")  # a link to itself: ELOOP, even for root
    with pytest.raises(CheckpointError, match="checkpoint file .*vocab.json cannot be read: .*symbolic links"):
        load_checkpoint(directory)


def test_weights_that_grow_while_read_are_refused(saved, monkeypatch):
    """A save landing on the weights while a server loads them (the size is taken when the file
    is opened, the tensors read after the header is checked): loading a mix of two files must
    fail, naming the file, and never serve it. (A file that shrinks meanwhile is read whole from
    the reader's buffer when it is as small as a tiny test model's.)"""
    import rnn_sentiment.model.checkpoint as checkpoint
    from rnn_sentiment.model.checkpoint import WEIGHTS_FILE

    directory, _ = saved
    weights = directory / WEIGHTS_FILE
    real_check = checkpoint.check_tensors

    def check_while_a_writer_appends(*args, **kwargs):
        real_check(*args, **kwargs)
        with open(weights, "ab") as file:
            file.write(b"\0" * 64)

    monkeypatch.setattr(checkpoint, "check_tensors", check_while_a_writer_appends)
    with pytest.raises(CheckpointError, match=f"checkpoint file .*{WEIGHTS_FILE} changed size while it was read"):
        load_checkpoint(directory)
