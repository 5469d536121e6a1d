"""Hashed character n-grams: an unknown word's n-grams reach every forward path, identically."""

from __future__ import annotations

import copy
import random
from pathlib import Path

import pytest
import torch
from rnn_sentiment.model.attribution import gradient_x_input, integrated_gradients, occlusion
from rnn_sentiment.model.checkpoint import LoadedModel, load_checkpoint, save_checkpoint
from rnn_sentiment.model.data import make_batch, read_sst_tsv
from rnn_sentiment.model.evaluation import evaluate
from rnn_sentiment.model.inference import encode_texts, padded_batch, predict_encoded
from rnn_sentiment.model.replay_backward import replayed_gradient_x_input
from rnn_sentiment.model.subwords import char_ngrams, subword_array, subword_ids
from rnn_sentiment.model.trace import TraceOptions, trace_text
from rnn_sentiment.model.training import TrainConfig, train
from rnn_sentiment.model.vocabulary import UNK_ID, Vocabulary

BUCKETS = 64
# "unfunny", "overwrought", "at", "all" are not in the fixture vocabulary.
TEXTS = ["the unfunny movie is not good .", "great", "overwrought plot but great acting and fun",
         "not bad at all , the acting is great and the plot is fun but it 's not great ."]
TEXT = "the unfunny movie is not good but the overwrought acting is great and it 's fun ."
EVERY_ATTRIBUTION = ("prefix", "gradient_x_input", "occlusion", "integrated_gradients")


@pytest.fixture
def subword_vocab(vocab) -> Vocabulary:
    return Vocabulary(vocab.tokens, subword_buckets=BUCKETS)


def subword_network(tiny_network, vocab: Vocabulary, folded: bool = True, **settings):
    """A tiny sub-word network with doubled weights (far from linear, so a wrong path shows)."""
    network = tiny_network(len(vocab), subword_buckets=BUCKETS, hidden_size=8, **settings)
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.mul_(2.0)
    network.set_known_subwords(vocab.known_subword_table())
    if folded:
        network.fold_known_subwords()
    return network


def as_loaded(network, vocab) -> LoadedModel:
    return LoadedModel(name="tiny", version="1", config=network.config, training=None, vocab=vocab,
                       network=network, sha256="", path=Path("."))


def test_ngrams_and_their_hash_are_fixed():
    # Every checkpoint with sub-words depends on these exact ids: a changed hash would silently
    # give each unknown word other vectors.
    assert char_ngrams("fun") == ["<fu", "fun", "un>", "<fun", "fun>", "<fun>"]
    assert subword_ids("fun", 10000) == (1572, 8812, 3499, 1499, 5930, 2252)
    assert char_ngrams("a") == ["<a>"]


def test_only_unknown_tokens_get_ngrams(vocab, subword_vocab):
    tokens = TEXT.split()
    ids = vocab.encode(tokens)
    assert vocab.unknown_subwords(tokens, ids) == ()  # no sub-words at all
    assert subword_vocab.unknown_subwords("the movie".split(), vocab.encode("the movie".split())) == ()
    per_token = subword_vocab.unknown_subwords(tokens, ids)
    assert [t for t, s in zip(tokens, per_token) if s] == ["unfunny", "overwrought"]
    assert per_token[1] == subword_ids("unfunny", BUCKETS)
    (encoded,) = encode_texts([TEXT], subword_vocab, 128)
    assert encoded.subword_ids == per_token and encoded.unknown_count == 2
    # The literal "<unk>" is the unknown token itself (a student's dropped word, for a teacher).
    assert subword_vocab.unknown_subwords(["<unk>", "unfunny"], [UNK_ID, UNK_ID])[0] == ()


def test_folding_the_known_words_keeps_every_answer(subword_vocab, tiny_network):
    unfolded = subword_network(tiny_network, subword_vocab, folded=False, pooling="mean")
    folded = copy.deepcopy(unfolded)
    folded.fold_known_subwords()
    assert unfolded.has_unfolded_subwords and not folded.has_unfolded_subwords
    batch = padded_batch(encode_texts(TEXTS, subword_vocab, 128), BUCKETS)
    assert batch.subword_ids is not None
    with torch.no_grad():
        expected = unfolded(batch.token_ids, batch.lengths, subword_ids=batch.subword_ids).logits
        actual = folded(batch.token_ids, batch.lengths, subword_ids=batch.subword_ids).logits
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)


def test_an_unknown_word_is_read_through_its_ngrams(subword_vocab, tiny_network, vocab):
    network = subword_network(tiny_network, subword_vocab)
    first, second, plain = encode_texts(["the unfunny movie", "the overwrought movie", "the movie"], subword_vocab, 128)
    assert first.ids == second.ids  # both <unk> ...
    answers = predict_encoded(as_loaded(network, subword_vocab), [first, second])
    assert answers[0].probabilities != answers[1].probabilities  # ... yet not the same word
    words_only = tiny_network(len(vocab))
    batch = padded_batch([first], BUCKETS)
    with pytest.raises(ValueError, match="no sub-word table"):
        words_only(batch.token_ids, batch.lengths, subword_ids=batch.subword_ids)
    assert plain.subword_ids == ()


def test_padding_never_changes_a_result(subword_vocab, tiny_network):
    # Rows of different lengths and n-gram counts: each alone gives what it gave in the batch.
    for settings in (dict(cell="gru"), dict(cell="lstm", bidirectional=True, pooling="attention")):
        loaded = as_loaded(subword_network(tiny_network, subword_vocab, **settings), subword_vocab)
        batch = encode_texts(TEXTS, subword_vocab, 128)
        together = predict_encoded(loaded, batch)
        for item, expected in zip(batch, together):
            assert predict_encoded(loaded, [item])[0].probabilities == pytest.approx(expected.probabilities, abs=1e-6)


def test_word_dropout_keeps_the_dropped_words_ngrams(subword_vocab, tiny_network):
    network = subword_network(tiny_network, subword_vocab, folded=False)
    tokens = TEXT.split()
    ids = subword_vocab.encode(tokens)
    unknown = subword_vocab.unknown_subwords(tokens, ids)
    batch = make_batch([ids], [0], subword_lists=[unknown], subword_pad=BUCKETS)
    dropped = torch.zeros_like(batch.token_ids, dtype=torch.bool)
    dropped[0, 2] = True  # "movie"
    new_ids, new_subwords = network.drop_words(batch.token_ids, batch.subword_ids, dropped)
    assert new_ids[0, 2] == UNK_ID and new_ids[0, 3] == batch.token_ids[0, 3]
    with torch.no_grad():
        vectors = network.embed(new_ids, new_subwords)[0]  # [T, E]
        before = network.embed(batch.token_ids, batch.subword_ids)[0]
        ngrams = torch.tensor([subword_ids("movie", BUCKETS)])
        movie_as_unseen = network.embedding.weight[UNK_ID] + network.subword_embedding(ngrams)[0]
    torch.testing.assert_close(vectors[2], movie_as_unseen)  # <unk> plus its own n-grams
    keep = [t for t in range(len(tokens)) if t != 2]
    torch.testing.assert_close(vectors[keep], before[keep])  # the rest, "unfunny" included, unchanged


def test_onnx_runtime_agrees_with_torch(subword_vocab, tiny_network, assert_onnx_agrees):
    for settings in (dict(cell="gru"), dict(cell="rnn", num_layers=2, pooling="max"),
                     dict(cell="lstm", bidirectional=True, pooling="attention")):
        loaded = as_loaded(subword_network(tiny_network, subword_vocab, **settings), subword_vocab)
        assert_onnx_agrees(loaded, TEXTS + ["the movie"])  # with and without unknown words


@pytest.mark.parametrize("settings", [dict(cell="gru"), dict(cell="lstm", num_layers=2, pooling="attention")], ids=str)
def test_onnx_fed_trace_equals_the_torch_trace(subword_vocab, tiny_network, settings):
    pytest.importorskip("onnxruntime", reason="the server extra installs onnxruntime")
    from rnn_sentiment.model.backends import make_predictor

    loaded = as_loaded(subword_network(tiny_network, subword_vocab, **settings), subword_vocab)
    predictor = make_predictor(loaded, "onnxruntime", threads=1)
    (encoded,) = encode_texts([TEXT], subword_vocab, 128)
    options = TraceOptions(attributions=EVERY_ATTRIBUTION, all_layers=True)
    expected = trace_text(loaded, encoded, options)
    actual = trace_text(loaded, encoded, options, predictor.step_states(encoded))
    for mine, theirs in zip(actual.steps, expected.steps, strict=True):
        assert mine.probabilities == pytest.approx(theirs.probabilities, abs=1e-5)
        assert mine.hidden_norm == pytest.approx(theirs.hidden_norm, abs=1e-5)
    for mine, theirs in zip(actual.attributions, expected.attributions, strict=True):
        assert mine.scores == pytest.approx(theirs.scores, abs=1e-5)
    assert actual.prediction == predictor([encoded])[0]


@pytest.mark.parametrize("settings", [dict(cell="rnn"), dict(cell="gru", bidirectional=True, num_layers=2),
                                      dict(cell="lstm", pooling="max")], ids=str)
def test_attributions_take_the_ngrams_into_account(subword_vocab, tiny_network, settings):
    network = subword_network(tiny_network, subword_vocab, **settings)
    (encoded,) = encode_texts([TEXT], subword_vocab, 128)
    ids = torch.tensor(encoded.ids)
    subwords = torch.from_numpy(subword_array([encoded.subword_ids], len(ids), BUCKETS)[0])  # [T, K]
    # The hand-written backward pass equals autograd through embed(ids, n-grams).
    expected = gradient_x_input(network, ids, 1, subwords)
    torch.testing.assert_close(replayed_gradient_x_input(network, ids, 1, subword_ids=subwords), expected,
                               rtol=0, atol=1e-5)
    assert not torch.allclose(gradient_x_input(network, ids, 1), expected)  # without n-grams: other scores
    # Integrated gradients still add up to the answer's change from the zero baseline.
    result = integrated_gradients(network, ids, 1, steps=64, subword_ids=subwords)
    assert result.completeness_gap < 1e-2 * max(1.0, abs(result.logit_difference))
    # Occlusion: the answer without "unfunny" is the text without it, its neighbours keeping theirs.
    scores = occlusion(network, ids, 1, subwords)
    shorter = encode_texts([TEXT.replace("unfunny ", "")], subword_vocab, 128)
    batch = padded_batch(shorter, BUCKETS)
    with torch.no_grad():
        full = network(ids.unsqueeze(0), torch.tensor([len(ids)]), subword_ids=subwords.unsqueeze(0)).logits
        without = network(batch.token_ids, batch.lengths, subword_ids=batch.subword_ids).logits
    odds = lambda logits: float(logits[0, 1] - logits[0, 0])  # noqa: E731 (two labels: the log-odds)
    assert scores[1].item() == pytest.approx(odds(full) - odds(without), abs=1e-5)


def test_a_trace_of_a_subword_network_reports_its_unknown_words(subword_vocab, tiny_network):
    loaded = as_loaded(subword_network(tiny_network, subword_vocab, pooling="mean"), subword_vocab)
    (encoded,) = encode_texts([TEXT], subword_vocab, 128)
    trace = trace_text(loaded, encoded, TraceOptions(attributions=EVERY_ATTRIBUTION, memory=True))
    assert [s.token for s in trace.steps if not s.known] == ["unfunny", "overwrought"]
    expected = predict_encoded(loaded, [encoded])[0]
    assert trace.prediction.probabilities == pytest.approx(expected.probabilities, abs=1e-6)  # mean: a cumsum's rounding


def test_checkpoints_hold_folded_networks(subword_vocab, tiny_network, tmp_path):
    unfolded = subword_network(tiny_network, subword_vocab, folded=False)
    with pytest.raises(ValueError, match="fold"):
        save_checkpoint(tmp_path / "a", unfolded, subword_vocab, unfolded.config, "tiny", "1")
    unfolded.fold_known_subwords()
    words_only_vocab = Vocabulary(subword_vocab.tokens)
    with pytest.raises(ValueError, match="buckets"):
        save_checkpoint(tmp_path / "a", unfolded, words_only_vocab, unfolded.config, "tiny", "1")
    save_checkpoint(tmp_path / "a", unfolded, subword_vocab, unfolded.config, "tiny", "1")
    loaded = load_checkpoint(tmp_path / "a")
    assert loaded.vocab == subword_vocab and loaded.config.subword_buckets == BUCKETS
    batch = encode_texts(TEXTS, loaded.vocab, 128)
    assert [r.probabilities for r in predict_encoded(loaded, batch)] == \
        [r.probabilities for r in predict_encoded(as_loaded(unfolded, subword_vocab), batch)]


def test_training_with_subwords_scores_what_it_ships(tmp_path):
    # Dev holds misspelt sentiment words the vocabulary never saw: the n-gram path is exercised.
    rng = random.Random(0)
    positive, negative, filler = ["great", "charming"], ["boring", "dull"], "the movie plot is a film".split()
    unseen = {"great": "greatt", "charming": "charmingly", "boring": "boringg", "dull": "dulll"}

    def write(path, count, misspell):
        lines = ["label\tsentence"]
        for _ in range(count):
            label = rng.randrange(2)
            word = rng.choice(positive if label else negative)
            lines.append(f"{label}\t{' '.join(rng.sample(filler, 3))} {unseen[word] if misspell else word} .")
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    data = tmp_path / "data"
    data.mkdir()
    write(data / "train.tsv", 300, misspell=False)
    write(data / "dev.tsv", 60, misspell=True)
    config = TrainConfig(data_dir=str(data), output_dir=str(tmp_path / "ckpt"), name="tiny", embedding_dim=16,
                         hidden_size=16, epochs=1, batch_size=16, evals_per_epoch=2, subword_buckets=BUCKETS)
    record = train(config, progress=False)
    loaded = load_checkpoint(tmp_path / "ckpt")
    assert loaded.config.subword_buckets == BUCKETS and not loaded.network.has_unfolded_subwords
    dev = read_sst_tsv(data / "dev.tsv")
    assert all(encode_texts([" ".join(e.tokens)], loaded.vocab, 128)[0].subword_ids for e in dev)
    assert evaluate(loaded, dev).accuracy == pytest.approx(record.dev_accuracy, abs=1e-5)


def test_a_long_word_is_read_by_its_start():
    # One 5,000-character "word" costs 90 n-grams, not 15,000: a batch pads to its longest list.
    assert len(char_ngrams("x" * 5000)) == 31 + 30 + 29  # "<" and 32 characters
    assert max(len(char_ngrams("y" * n)) for n in range(1, 100)) == 32 + 31 + 30  # a whole 32-character word
    assert char_ngrams("x" * 5000) == char_ngrams("x" * 40)  # both past MAX_WORD_CHARS: the same start
    assert not any(g.endswith(">") for g in char_ngrams("x" * 33))  # it does not end there
    assert char_ngrams("y" * 32)[-1] == "yyyy>"  # 32 characters are read whole


def test_batches_with_huge_ngram_lists_run_on_torch(subword_vocab, tiny_network, monkeypatch):
    pytest.importorskip("onnxruntime", reason="the server extra installs onnxruntime")
    from rnn_sentiment.model.backends import MAX_ONNX_SUBWORD_SLOTS, make_predictor

    loaded = as_loaded(subword_network(tiny_network, subword_vocab), subword_vocab)
    predictor = make_predictor(loaded, "onnxruntime", threads=1)
    rng = random.Random(0)
    junk = [" ".join("".join(rng.choice("abcdefgh") for _ in range(40)) for _ in range(128)) for _ in range(6)]
    batch = encode_texts(junk, subword_vocab, 128)
    assert len(batch) * 128 * 93 > MAX_ONNX_SUBWORD_SLOTS  # 6 texts × 128 unknown words × 93 n-grams

    def refuse(token_ids, lengths, subword_ids=None):
        raise AssertionError(f"{subword_ids.size} n-gram slots reached ONNX Runtime")

    monkeypatch.setattr(predictor.onnx, "probabilities", refuse)
    assert predictor(batch) == predict_encoded(loaded, batch)  # torch answered, the same answers
    with pytest.raises(AssertionError, match="reached ONNX Runtime"):
        predictor(batch[:1])  # one such text is small enough for ONNX Runtime
