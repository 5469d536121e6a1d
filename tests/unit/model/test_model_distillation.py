import argparse
import json
import random

import pytest
import torch
import torch.nn.functional as F

from rnn_sentiment.cli.train_command import add_train_arguments, train_config_from_args
from rnn_sentiment.model.checkpoint import load_checkpoint
from rnn_sentiment.model.data import Example, read_sst_tsv
from rnn_sentiment.model.data import length_bucketed_batches
from rnn_sentiment.model.distillation import OnlineTeachers, distillation_loss, teacher_probabilities
from rnn_sentiment.model.inference import EncodedText, padded_batch
from rnn_sentiment.model.subwords import subword_ids
from rnn_sentiment.model.vocabulary import UNK_ID, Vocabulary
from rnn_sentiment.model.training import TrainConfig, train

from test_model_training import tiny_config, write_tsv


@pytest.fixture
def clean_and_noisy(tmp_path):
    """Two data dirs with the same texts and dev set: `clean` labels, and `noisy` coin-flip train labels."""
    rng = random.Random(0)
    clean, noisy = tmp_path / "clean", tmp_path / "noisy"
    clean.mkdir()
    noisy.mkdir()
    write_tsv(clean / "train.tsv", 300, rng)
    write_tsv(clean / "dev.tsv", 60, rng)
    header, *rows = (clean / "train.tsv").read_text(encoding="utf-8").splitlines()
    flips = random.Random(1)
    noisy_rows = [f"{flips.randrange(2)}\t{row.split(chr(9), 1)[1]}" for row in rows]
    (noisy / "train.tsv").write_text("\n".join([header, *noisy_rows]) + "\n", encoding="utf-8")
    (noisy / "dev.tsv").write_text((clean / "dev.tsv").read_text(encoding="utf-8"), encoding="utf-8")
    return clean, noisy


def test_loss_is_cross_entropy_at_weight_zero_and_zero_when_matching_the_teacher():
    torch.manual_seed(0)
    logits, labels = torch.randn(5, 2), torch.tensor([0, 1, 1, 0, 1])
    teacher = torch.softmax(torch.randn(5, 2), dim=-1)
    assert torch.allclose(distillation_loss(logits, labels, teacher, 0.0, 2.0), F.cross_entropy(logits, labels))
    own = torch.softmax(logits / 3.0, dim=-1)
    assert distillation_loss(logits, labels, own, 1.0, 3.0).item() == pytest.approx(0.0, abs=1e-6)
    # Half and half: the mean of the two terms.
    soft = distillation_loss(logits, labels, teacher, 1.0, 2.0)
    hard = F.cross_entropy(logits, labels)
    assert torch.allclose(distillation_loss(logits, labels, teacher, 0.5, 2.0), (soft + hard) / 2)


def test_teacher_probabilities_follow_example_order(clean_and_noisy, tmp_path):
    clean, _ = clean_and_noisy
    train(tiny_config(clean, tmp_path / "t1", epochs=2, lr=0.01), progress=False)
    train(tiny_config(clean, tmp_path / "t2", epochs=2, lr=0.01, seed=2, cell="lstm"), progress=False)
    examples = read_sst_tsv(clean / "dev.tsv")[:25]  # lengths vary, so batches reorder them
    report = teacher_probabilities([tmp_path / "t1", tmp_path / "t2"], examples,
                                   ("negative", "positive"), temperature=2.0)
    assert report.probabilities.shape == (25, 2)
    assert torch.allclose(report.probabilities.sum(dim=-1), torch.ones(25))
    # Row i is the average of each teacher's own answer for example i alone.
    expected = torch.zeros(25, 2)
    for directory in (tmp_path / "t1", tmp_path / "t2"):
        teacher = load_checkpoint(directory)
        for row, example in enumerate(examples):
            ids = torch.tensor([teacher.vocab.encode(example.tokens)])
            with torch.inference_mode():
                logits = teacher.network(ids, torch.tensor([ids.shape[1]])).logits[0]
            expected[row] += torch.softmax(logits / 2.0, dim=-1) / 2
    assert torch.allclose(report.probabilities, expected, atol=1e-5)
    assert len(report.accuracies) == 2 and 0.0 <= report.ensemble_accuracy <= 1.0


def test_teacher_labels_must_match(clean_and_noisy, tmp_path):
    clean, _ = clean_and_noisy
    train(tiny_config(clean, tmp_path / "t"), progress=False)
    with pytest.raises(ValueError, match="labels"):
        teacher_probabilities([tmp_path / "t"], [Example(0, ("fun",))], ("neg", "pos"))


def test_a_student_learns_from_the_teacher_not_the_noisy_labels(clean_and_noisy, tmp_path):
    clean, noisy = clean_and_noisy
    teacher = train(tiny_config(clean, tmp_path / "teacher", epochs=3, lr=0.01), progress=False)
    assert teacher.dev_accuracy > 0.9
    settings = dict(epochs=3, lr=0.01, teachers=(str(tmp_path / "teacher"),))
    gold_only = train(tiny_config(noisy, tmp_path / "gold", distill_weight=0.0, **settings), progress=False)
    student = train(tiny_config(noisy, tmp_path / "student", distill_weight=1.0, **settings), progress=False)
    # Coin-flip labels teach nothing; the teacher's soft labels carry what it learned.
    assert gold_only.dev_accuracy < 0.7 < student.dev_accuracy
    start = json.loads((tmp_path / "student" / "training_log.jsonl").read_text().splitlines()[0])
    assert start["teacher_ensemble_dev_accuracy"] == pytest.approx(teacher.dev_accuracy, abs=1e-4)
    assert load_checkpoint(tmp_path / "student").config.hidden_size == 16  # an ordinary checkpoint


def test_distillation_flags(tmp_path):
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    args = parser.parse_args(["--teachers", "a", "b", "--distill-weight", "0.7", "--distill-temperature", "3",
                              "--distill-online"])
    config = train_config_from_args(args)
    assert (config.teachers, config.distill_weight, config.distill_temperature) == (("a", "b"), 0.7, 3.0)
    assert config.distill_online and not TrainConfig().distill_online
    assert train_config_from_args(parser.parse_args([])).teachers == TrainConfig().teachers == ()


def test_distill_weight_outside_zero_one_is_refused(clean_and_noisy, tmp_path):
    clean, _ = clean_and_noisy
    train(tiny_config(clean, tmp_path / "t"), progress=False)
    with pytest.raises(ValueError, match="distill_weight"):
        train(tiny_config(clean, tmp_path / "s", teachers=(str(tmp_path / "t"),), distill_weight=1.5),
              progress=False)


def test_online_teachers_read_the_student_ids_through_their_own_vocabulary(clean_and_noisy, tmp_path):
    clean, _ = clean_and_noisy
    train(tiny_config(clean, tmp_path / "t", epochs=2, lr=0.01), progress=False)
    examples = read_sst_tsv(clean / "dev.tsv")[:20]
    # The student numbers words in another order and lacks one: the teacher must see that
    # word as <unk> and every other word as itself.
    words = sorted({t for e in examples for t in e.tokens}, reverse=True)
    missing = words[0]
    student_vocab = Vocabulary(["<pad>", "<unk>", *words[1:]])
    online = OnlineTeachers([tmp_path / "t"], student_vocab, ("negative", "positive"), temperature=2.0)
    as_unknown = [Example(e.label, tuple("<unk>" if t == missing else t for t in e.tokens)) for e in examples]
    offline = teacher_probabilities([tmp_path / "t"], as_unknown, ("negative", "positive"), temperature=2.0)
    for batch in length_bucketed_batches(examples, student_vocab, 8):
        got = online.probabilities(batch.token_ids, batch.lengths)
        assert torch.allclose(got, offline.probabilities[batch.indices], atol=1e-5)


def test_online_distillation_also_learns_from_the_teacher(clean_and_noisy, tmp_path):
    clean, noisy = clean_and_noisy
    train(tiny_config(clean, tmp_path / "teacher", epochs=3, lr=0.01), progress=False)
    student = train(tiny_config(noisy, tmp_path / "student", epochs=3, lr=0.01, distill_weight=1.0,
                                teachers=(str(tmp_path / "teacher"),), distill_online=True,
                                word_dropout=0.1), progress=False)
    assert student.dev_accuracy > 0.7


def test_online_teachers_with_the_students_buckets_read_its_unknown_words_ngrams(clean_and_noisy, tmp_path):
    clean, _ = clean_and_noisy
    train(tiny_config(clean, tmp_path / "t", epochs=2, lr=0.01, subword_buckets=97), progress=False)
    teacher = load_checkpoint(tmp_path / "t")
    examples = read_sst_tsv(clean / "dev.tsv")[:20]
    words = sorted({t for e in examples for t in e.tokens}, reverse=True)
    missing = words[0]
    labels = ("negative", "positive")
    # The student lacks one word the teacher knows; it hashes into the teacher's 97 buckets.
    sharing = OnlineTeachers([tmp_path / "t"], Vocabulary(["<pad>", "<unk>", *words[1:]], 97), labels, 2.0)
    plain = OnlineTeachers([tmp_path / "t"], Vocabulary(["<pad>", "<unk>", *words[1:]], 13), labels, 2.0)
    student_vocab = Vocabulary(["<pad>", "<unk>", *words[1:]], 97)
    batches = [b for b in length_bucketed_batches(examples, student_vocab, 8) if b.subword_ids is not None]
    assert batches  # some batch holds the missing word
    for batch in batches:
        got = sharing.probabilities(batch.token_ids, batch.lengths, batch.subword_ids)
        # Expected: the teacher reads the missing word as <unk> plus that word's own n-grams.
        texts = [examples[i].tokens for i in batch.indices.tolist()]
        encoded = []
        for tokens in texts:
            ids = tuple(UNK_ID if t == missing else i for t, i in zip(tokens, teacher.vocab.encode(tokens)))
            ngrams = tuple(subword_ids(t, 97) if t == missing else () for t in tokens)
            encoded.append(EncodedText(tokens=tokens, ids=ids, unknown_count=0, truncated=False,
                                       subword_ids=ngrams if any(ngrams) else ()))
        tensors = padded_batch(encoded, 97)
        with torch.no_grad():
            logits = teacher.network(tensors.token_ids, tensors.lengths, subword_ids=tensors.subword_ids).logits
        torch.testing.assert_close(got, torch.softmax(logits / 2.0, dim=-1), rtol=0, atol=1e-5)
        # A teacher hashing into other buckets sees a plain <unk>: another answer.
        assert not torch.allclose(plain.probabilities(batch.token_ids, batch.lengths, batch.subword_ids), got)
