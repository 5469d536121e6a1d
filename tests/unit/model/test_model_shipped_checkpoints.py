"""The checkpoints shipped in model/checkpoints/ load, stay small, and score what they record."""

from pathlib import Path

import pytest

import rnn_sentiment.model
from rnn_sentiment.model.checkpoint import load_checkpoint
from rnn_sentiment.model.data import read_sst_tsv
from rnn_sentiment.model.evaluation import evaluate

CHECKPOINTS = Path(rnn_sentiment.model.__file__).resolve().parent / "checkpoints"
SHIPPED = {"sst2-gru": 0.87, "sst2-rnn": 0.78}  # name -> the least dev accuracy it must record
VERSIONS = {"sst2-gru": "2.1.0", "sst2-rnn": "1.0.0"}  # sst2-gru 2: sub-word n-grams; 2.1: adversarial training
MAX_BYTES = 15 * 1024 * 1024  # issue 3's limit for a checkpoint


@pytest.fixture(params=sorted(SHIPPED))
def shipped(request):
    directory = CHECKPOINTS / request.param
    if not (directory / "config.json").is_file():
        pytest.skip(f"{directory} is not present (trained by `rnn-sentiment train`)")
    return request.param, directory


def test_shipped_checkpoint_loads_and_is_small(shipped):
    name, directory = shipped
    loaded = load_checkpoint(directory)
    assert loaded.name == name and loaded.version == VERSIONS[name]
    assert loaded.training is not None and loaded.training.dev_accuracy >= SHIPPED[name]
    assert sum(f.stat().st_size for f in directory.iterdir() if f.is_file()) <= MAX_BYTES


def test_shipped_checkpoint_scores_what_it_records(shipped, sst2_dir):
    _, directory = shipped
    loaded = load_checkpoint(directory)
    report = evaluate(loaded, read_sst_tsv(sst2_dir / "dev.tsv"))
    assert report.accuracy == pytest.approx(loaded.training.dev_accuracy, abs=1e-4)
