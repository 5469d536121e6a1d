import argparse
import dataclasses
import json
import random

import pytest
import torch
from safetensors.torch import load_file

from rnn_sentiment.model.checkpoint import load_checkpoint
from rnn_sentiment.cli.eval_command import add_eval_arguments, run_eval_from_args
from rnn_sentiment.cli.train_command import add_train_arguments, train_config_from_args
from rnn_sentiment.model.data import read_sst_tsv
from rnn_sentiment.model.evaluation import evaluate
from rnn_sentiment.model.inference import encode_texts, predict_encoded
from rnn_sentiment.model.training import TrainConfig, adversarial_loss, train

POSITIVE = "great fun moving smart charming".split()
NEGATIVE = "boring dull bad tedious awful".split()
FILLER = "the movie plot is a and film it".split()


def write_tsv(path, count, rng):
    lines = ["label\tsentence"]
    for _ in range(count):
        label = rng.randrange(2)
        words = rng.sample(FILLER, 3) + [rng.choice(POSITIVE if label else NEGATIVE)]
        rng.shuffle(words)
        lines.append(f"{label}\t{' '.join(words)} .")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture
def data_dir(tmp_path):
    rng = random.Random(0)
    directory = tmp_path / "data"
    directory.mkdir()
    write_tsv(directory / "train.tsv", 300, rng)
    write_tsv(directory / "dev.tsv", 60, rng)
    return directory


def tiny_config(data_dir, output, **overrides):
    settings = dict(data_dir=str(data_dir), output_dir=str(output), name="tiny", version="0.0.1",
                    embedding_dim=16, hidden_size=16, epochs=1, batch_size=16, evals_per_epoch=2,
                    weights_dtype="float32")
    settings.update(overrides)
    return TrainConfig(**settings)


def test_tiny_run_writes_a_loadable_checkpoint(data_dir, tmp_path):
    output = tmp_path / "ckpt"
    record = train(tiny_config(data_dir, output), progress=False)
    loaded = load_checkpoint(output)
    assert loaded.training == record and record.train_examples == 300 and record.data == "data"
    assert loaded.config.temperature > 0
    report = evaluate(loaded, read_sst_tsv(data_dir / "dev.tsv"))
    assert report.accuracy == pytest.approx(record.dev_accuracy, abs=1e-5)
    events = [json.loads(line)["event"] for line in (output / "training_log.jsonl").read_text().splitlines()]
    assert events[0] == "start" and events[-1] == "end" and "eval" in events


def test_same_seed_gives_identical_weights(data_dir, tmp_path):
    train(tiny_config(data_dir, tmp_path / "a", max_train_examples=200), progress=False)
    train(tiny_config(data_dir, tmp_path / "b", max_train_examples=200), progress=False)
    first, second = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    assert first.keys() == second.keys()
    assert all(first[k].equal(second[k]) for k in first)


def test_cli_arguments_build_a_train_config(tmp_path):
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    args = parser.parse_args(["--cell", "lstm", "--pooling", "attention", "--bidirectional",
                              "--output", str(tmp_path), "--version", "2.0.0", "--max-train-examples", "5"])
    config = train_config_from_args(args)
    assert (config.cell, config.pooling, config.bidirectional, config.version) == ("lstm", "attention", True, "2.0.0")
    assert config.max_train_examples == 5 and config.output_dir == str(tmp_path)
    assert train_config_from_args(parser.parse_args([])) == TrainConfig()
    knobs = train_config_from_args(parser.parse_args(["--subword-buckets", "0", "--label-smoothing", "0.1",
                                                      "--adversarial-epsilon", "0"]))
    assert (knobs.subword_buckets, knobs.label_smoothing, knobs.adversarial_epsilon) == (0, 0.1, 0.0)


def _train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    return parser


def test_train_flags_are_exactly_the_train_config_fields():
    dests = {action.dest for action in _train_parser()._actions} - {"help", "quiet"}
    assert dests == {f.name for f in dataclasses.fields(TrainConfig)}


def _flag_setting_a_non_default(field: dataclasses.Field, parser: argparse.ArgumentParser):
    """The command-line words that set `field` to something other than its default, and that value."""
    flag = next(a for a in parser._actions if a.dest == field.name).option_strings[0]
    if isinstance(field.default, bool):
        return [flag if not field.default else "--no-" + flag[2:]], not field.default
    if field.metadata.get("choices"):
        value = next(c for c in field.metadata["choices"] if c != field.default)
        return [flag, value], value
    if field.default == ():
        return [flag, "a", "b"], ("a", "b")
    if isinstance(field.default, str):
        return [flag, field.default + "-x"], field.default + "-x"
    if isinstance(field.default, float) or field.name in ("ema_decay", "time_limit_seconds"):
        return [flag, "0.125"], 0.125
    return [flag, "7"], 7  # ints, set or None by default


@pytest.mark.parametrize("field", dataclasses.fields(TrainConfig), ids=lambda f: f.name)
def test_each_train_flag_sets_its_field_and_only_it(field):
    parser = _train_parser()
    words, value = _flag_setting_a_non_default(field, parser)
    assert value != field.default
    assert train_config_from_args(parser.parse_args(words)) == dataclasses.replace(TrainConfig(), **{field.name: value})


def test_a_bad_choice_is_refused_naming_the_valid_ones(capsys):
    with pytest.raises(SystemExit):
        _train_parser().parse_args(["--cell", "transformer"])
    error = capsys.readouterr().err
    assert "invalid choice: 'transformer'" in error and "'lstm'" in error


def test_label_smoothing_softens_the_trained_answers(data_dir, tmp_path):
    with pytest.raises(ValueError, match="label_smoothing"):
        train(tiny_config(data_dir, tmp_path / "bad", label_smoothing=1.0), progress=False)
    settings = dict(calibrate=False, epochs=4, lr=0.02, dropout=0.0, word_dropout=0.0)
    hard = train(tiny_config(data_dir, tmp_path / "hard", **settings), progress=False)
    soft = train(tiny_config(data_dir, tmp_path / "soft", label_smoothing=0.3, **settings), progress=False)
    dev = read_sst_tsv(data_dir / "dev.tsv")

    def mean_confidence(directory) -> float:
        loaded = load_checkpoint(directory)
        encoded = encode_texts([" ".join(e.tokens) for e in dev], loaded.vocab, 128)
        return sum(r.score for r in predict_encoded(loaded, encoded)) / len(dev)

    # A smoothed target never asks for certainty: with 0.3 the best answer is 0.85, not 1 (4 epochs
    # get the easy synthetic data to 0.99 hard and 0.92 smoothed).
    assert hard.dev_accuracy > 0.9 and soft.dev_accuracy > 0.9
    assert mean_confidence(tmp_path / "soft") < 0.95 < mean_confidence(tmp_path / "hard")


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_adversarial_move_is_the_harmful_direction(tiny_network, cell):
    network = tiny_network(30, seed=1, cell=cell, subword_buckets=7)
    token_ids = torch.randint(2, 30, (4, 5))  # [B, T]
    lengths = torch.tensor([5, 3, 2, 5])
    labels = torch.tensor([0, 1, 1, 0])
    embedded = network.embed(token_ids)  # [B, T, E]
    loss = torch.nn.functional.cross_entropy(network.forward_embedded(embedded, lengths).logits, labels)
    unmoved = adversarial_loss(network, embedded, lengths, labels, loss, epsilon=0.0)
    moved = adversarial_loss(network, embedded, lengths, labels, loss, epsilon=0.5)
    assert unmoved.item() == pytest.approx(loss.item(), abs=1e-6)
    # Along the gradient the loss rises, and by more than a random move of the same size.
    torch.manual_seed(0)
    noise = torch.randn_like(embedded) * (torch.arange(5) < lengths.unsqueeze(1)).unsqueeze(-1)  # real tokens
    noise = 0.5 * noise / noise.flatten(1).norm(dim=1).view(-1, 1, 1)
    randomly_moved = torch.nn.functional.cross_entropy(
        network.forward_embedded(embedded + noise, lengths).logits, labels)
    assert moved.item() > max(loss.item(), randomly_moved.item())
    moved.backward()  # the adversarial term trains the word vectors too
    assert network.embedding.weight.grad is not None and network.embedding.weight.grad.abs().sum() > 0


def test_adversarial_training_runs_and_is_checked(data_dir, tmp_path):
    with pytest.raises(ValueError, match="adversarial_epsilon"):
        train(tiny_config(data_dir, tmp_path / "bad", adversarial_epsilon=-1.0), progress=False)
    record = train(tiny_config(data_dir, tmp_path / "adv", adversarial_epsilon=0.5, epochs=3, lr=0.02),
                   progress=False)
    assert record.dev_accuracy > 0.9  # the synthetic data stays learnable under the extra term


def test_eval_command(data_dir, tmp_path, capsys):
    output = tmp_path / "ckpt"
    train(tiny_config(data_dir, output), progress=False)
    parser = argparse.ArgumentParser()
    add_eval_arguments(parser)
    assert run_eval_from_args(parser.parse_args(["--checkpoint", str(output), "--data", str(data_dir), "--json"])) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["count"] == 60 and sum(map(sum, report["confusion"])) == 60
    assert run_eval_from_args(parser.parse_args(["--checkpoint", str(output), "--data", str(data_dir)])) == 0
    assert "accuracy" in capsys.readouterr().out
    assert run_eval_from_args(parser.parse_args(["--checkpoint", str(tmp_path / "nope"), "--data", str(data_dir)])) == 2
