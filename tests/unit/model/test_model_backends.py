"""ONNX Runtime as Predict's executor: the same probabilities as torch for every architecture."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from rnn_sentiment.model.backends import AGREEMENT_TOLERANCE, Predictor, length_runs, make_predictor, padded_arrays
from rnn_sentiment.model.checkpoint import LoadedModel, load_checkpoint
from rnn_sentiment.model.inference import encode_texts, padded_batch, predict_encoded

pytest.importorskip("onnxruntime", reason="the server extra installs onnxruntime")

SHIPPED = Path(__file__).resolve().parents[3] / "model" / "checkpoints"
TEXTS = ["the movie is not good .", "great", "boring boring plot but great acting and fun", "it 's bad",
         "a movie", "not bad at all , the acting is great and the plot is fun but it 's not great ."]


def _loaded(network, vocab) -> LoadedModel:
    return LoadedModel(name="tiny", version="1", config=network.config, training=None, vocab=vocab,
                       network=network, sha256="", path=Path("."))


ARCHITECTURES = [
    dict(cell=cell, num_layers=layers, bidirectional=bidirectional, pooling=pooling)
    for cell, layers, bidirectional, pooling in itertools.product(
        ("rnn", "gru", "lstm"), (1, 2), (False, True), ("last", "mean", "max", "attention"))
]


@pytest.mark.parametrize("architecture", ARCHITECTURES, ids=lambda a: "-".join(str(v) for v in a.values()))
def test_onnx_runtime_agrees_with_torch_on_a_mixed_length_batch(vocab, tiny_network, architecture,
                                                                assert_onnx_agrees):
    network = tiny_network(len(vocab), seed=3, temperature=1.7, **architecture)
    assert_onnx_agrees(_loaded(network, vocab), TEXTS)


@pytest.mark.parametrize("name", ["sst2-gru", "sst2-rnn"])
def test_shipped_checkpoints_agree_to_1e_5(name):
    loaded = load_checkpoint(SHIPPED / name)
    predictor = make_predictor(loaded, "onnxruntime", threads=1, onnx_max_batch=64)
    batch = encode_texts(TEXTS * 3, loaded.vocab, loaded.config.max_tokens)
    expected = torch.tensor([r.probabilities for r in predict_encoded(loaded, batch)])
    actual = torch.tensor([r.probabilities for r in predictor(batch)])
    torch.testing.assert_close(actual, expected, rtol=0, atol=AGREEMENT_TOLERANCE)
    assert [r.label for r in predictor(batch)] == [r.label for r in predict_encoded(loaded, batch)]


def test_a_batch_runs_on_onnx_runtime_in_length_runs_and_answers_in_order(vocab, tiny_network, monkeypatch):
    loaded = _loaded(tiny_network(len(vocab)), vocab)
    predictor = make_predictor(loaded, "auto", threads=1, onnx_max_batch=2)
    assert predictor.onnx is not None
    runs: list[list[int]] = []
    real = predictor.onnx.probabilities

    def record(token_ids, lengths, subword_ids=None):
        runs.append(lengths.tolist())
        return real(token_ids, lengths, subword_ids)

    monkeypatch.setattr(predictor.onnx, "probabilities", record)
    batch = encode_texts(TEXTS, vocab, 128)
    answers = predictor(batch)
    assert all(len(run) <= 2 for run in runs) and sorted(sum(runs, [])) == sorted(len(e.ids) for e in batch)
    assert runs == sorted(runs)  # shortest texts first
    expected = predict_encoded(loaded, batch)
    assert [a.token_count for a in answers] == [len(e.ids) for e in batch]  # each answer in its text's place
    torch.testing.assert_close(torch.tensor([a.probabilities for a in answers]),
                               torch.tensor([e.probabilities for e in expected]), rtol=0, atol=AGREEMENT_TOLERANCE)


def test_length_runs_group_similar_lengths_within_the_limits():
    lengths = [5, 1, 5, 20, 2, 19, 1]
    runs = length_runs(lengths, max_texts=3)
    assert sorted(i for run in runs for i in run) == list(range(len(lengths)))  # every text once
    assert [[lengths[i] for i in run] for run in runs] == [[1, 1], [2], [5, 5], [19, 20]]
    # 1, 1 and 2 would pad 6 slots for 4 tokens (more than 1.25×); with room for 50% they share a run.
    assert [[lengths[i] for i in run] for run in length_runs(lengths, max_texts=3, slack=1.5)][0] == [1, 1, 2]
    assert [len(run) for run in length_runs([7] * 10, max_texts=4)] == [4, 4, 2]  # one length: only the cap cuts
    assert length_runs([], max_texts=4) == []


def test_torch_backend_and_a_zero_limit_never_build_a_session(vocab, tiny_network):
    loaded = _loaded(tiny_network(len(vocab)), vocab)
    assert make_predictor(loaded, "torch", threads=1).onnx is None
    assert make_predictor(loaded, "auto", threads=1, onnx_max_batch=0).onnx is None
    assert make_predictor(loaded, "torch", threads=1).description == "torch"


def test_a_disagreeing_session_is_refused(vocab, tiny_network, monkeypatch):
    """The probe catches a graph that does not compute what torch computes."""
    from rnn_sentiment.model import backends

    loaded = _loaded(tiny_network(len(vocab)), vocab)
    real = backends.OnnxForward.probabilities
    monkeypatch.setattr(backends.OnnxForward, "probabilities",
                        lambda self, ids, lengths, subword_ids=None: real(self, ids, lengths, subword_ids)[:, ::-1].copy())
    with pytest.raises(ValueError, match="disagree"):
        make_predictor(loaded, "onnxruntime", threads=1)
    assert make_predictor(loaded, "auto", threads=1).onnx is None  # auto keeps serving, on torch


def test_unknown_backend_is_refused(vocab, tiny_network):
    with pytest.raises(ValueError, match="options are"):
        make_predictor(_loaded(tiny_network(len(vocab)), vocab), "tensorrt", threads=1)


def test_predictor_without_onnx_is_predict_encoded(vocab, tiny_network):
    loaded = _loaded(tiny_network(len(vocab)), vocab)
    batch = encode_texts(TEXTS, vocab, 128)
    assert Predictor(loaded)(batch) == predict_encoded(loaded, batch)


def test_padded_arrays_equal_the_torch_padded_batch(vocab):
    texts = ["a", "the film is good", "bad", "an unseen zzyzx word , then more words than the others"]
    batch = encode_texts(texts, vocab, max_tokens=8)
    token_ids, lengths = padded_arrays(batch)
    expected = padded_batch(batch)
    assert token_ids.dtype == np.int64 and lengths.dtype == np.int64
    assert token_ids.tolist() == expected.token_ids.tolist()
    assert lengths.tolist() == expected.lengths.tolist()


@pytest.mark.parametrize("name", ["sst2-gru"])  # the shipped model with sub-words: both tables
def test_sessions_read_the_embedding_tables_in_place_not_a_copy(name):
    """Predict's and the stream's sessions hold no copy of the embedding tables (the largest
    tensors of a model): a change to torch's table is what ONNX Runtime then reads."""
    from rnn_sentiment.model.backends import make_stream_recurrence

    loaded = load_checkpoint(SHIPPED / name)
    predictor = make_predictor(loaded, "onnxruntime", threads=1)
    assert predictor.onnx is not None
    recurrence = make_stream_recurrence(loaded, "onnxruntime", threads=1, forward=predictor.onnx)
    assert recurrence is not None
    ids = np.array([loaded.vocab.encode(["great", "fun", "film"])], dtype=np.int64)
    lengths = np.array([3])
    shape = (loaded.config.num_layers, 1, loaded.config.hidden_size)
    before = predictor.onnx.probabilities(ids, lengths)
    before_outputs = recurrence.run(ids, lengths, None, np.zeros(shape, np.float32), None).outputs
    with torch.no_grad():
        loaded.network.embedding.weight[torch.from_numpy(ids[0])] *= -3.0  # in place: the memory the sessions were lent
    after = predictor.onnx.probabilities(ids, lengths)
    after_outputs = recurrence.run(ids, lengths, None, np.zeros(shape, np.float32), None).outputs
    assert not np.allclose(before, after)
    assert not np.allclose(before_outputs, after_outputs)
    # and ONNX Runtime still answers as torch does on the changed weights
    batch = encode_texts(["great fun"], loaded.vocab, loaded.config.max_tokens)
    expected = torch.tensor([r.probabilities for r in predict_encoded(loaded, batch)])
    actual = torch.tensor([r.probabilities for r in predictor(batch)])
    torch.testing.assert_close(actual, expected, rtol=0, atol=AGREEMENT_TOLERANCE)


def test_an_exported_graph_keeps_its_tables_and_names_their_parameters(vocab, tiny_network):
    """The tag only names the parameter: the graph written for others still carries the data."""
    from onnx import numpy_helper
    from rnn_sentiment.model.onnx_export import PARAMETER_TAG, build_onnx_model

    network = tiny_network(len(vocab))
    graph = build_onnx_model(network)
    tagged = {i.doc_string.removeprefix(PARAMETER_TAG): numpy_helper.to_array(i)
              for i in graph.graph.initializer if i.doc_string.startswith(PARAMETER_TAG)}
    assert set(tagged) == {"embedding.weight"}
    np.testing.assert_array_equal(tagged["embedding.weight"], network.embedding.weight.detach().numpy())


def test_a_bidirectional_graph_carries_no_state_and_cannot_lend_its_session_to_a_stream(vocab, tiny_network):
    from rnn_sentiment.model.backends import OnnxForward, OnnxRecurrence

    loaded = _loaded(tiny_network(len(vocab), bidirectional=True), vocab)
    forward = OnnxForward(loaded, threads=1)
    assert not forward.carries_state
    assert [i.name for i in forward.session.get_inputs()] == ["token_ids", "lengths"]
    with pytest.raises(ValueError, match="bidirectional network cannot stream"):
        OnnxRecurrence(forward, loaded)
