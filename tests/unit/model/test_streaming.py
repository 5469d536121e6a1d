"""model/streaming.py: a text sent in any chunking ends with Predict's answer on the whole text,
on torch and on ONNX Runtime, with sessions of different lengths advanced in one batch."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from rnn_sentiment.model import pooling
from rnn_sentiment.model.backends import AGREEMENT_TOLERANCE, make_predictor
from rnn_sentiment.model.checkpoint import LoadedModel, load_checkpoint
from rnn_sentiment.model.config import POOLINGS
from rnn_sentiment.model.inference import encode_tokens, predict_encoded
from rnn_sentiment.model.network import AdditiveAttention
from rnn_sentiment.model.streaming import (
    BIDIRECTIONAL_REASON, StreamState, can_stream, make_stream_stepper, stream_refusal,
)
from rnn_sentiment.model.trace import trace_text
from rnn_sentiment.model.vocabulary import Vocabulary

SHIPPED = Path(__file__).resolve().parents[3] / "model" / "checkpoints"
# Word lists of different lengths; "zorpish" and "flimflam" are unknown (n-grams when the model has them).
TEXTS = [
    "the movie is not good , but the acting is great and the plot is fun .".split(),
    ["great"],
    "boring zorpish plot and bad acting but it 's fun".split(),
    "a flimflam movie .".split() * 4,
]
BACKENDS = ("torch", "onnxruntime")


def _loaded(network, vocab) -> LoadedModel:
    return LoadedModel(name="tiny", version="1", config=network.config, training=None, vocab=vocab,
                       network=network, sha256="", path=Path("."))


def _stream(stepper, texts: list[list[str]], seed: int, want_steps: bool = False):
    """Send every text in random chunks (0-4 tokens, so some sessions sit a round out), all sessions
    advancing in one batched call per round; the final states and every round's results."""
    rng = random.Random(seed)
    states = [stepper.start() for _ in texts]
    sent = [0] * len(texts)
    rounds = []
    while any(at < len(text) for at, text in zip(sent, texts)):
        chunks = []
        for row, text in enumerate(texts):
            size = rng.randint(0, 4)
            chunks.append(text[sent[row]:sent[row] + size])
            sent[row] += size
        answers = stepper.advance(states, chunks, [want_steps] * len(texts))
        states = [state for state, _ in answers]
        rounds.append((chunks, [result for _, result in answers]))
    return states, rounds


def _assert_predicts_as_a_whole(loaded, states: list[StreamState], texts, limit: int) -> None:
    expected = predict_encoded(loaded, [encode_tokens(text, loaded.vocab, limit) for text in texts])
    for state, whole in zip(states, expected, strict=True):
        assert state.prediction is not None
        torch.testing.assert_close(torch.tensor(state.prediction.probabilities), torch.tensor(whole.probabilities),
                                   rtol=0, atol=AGREEMENT_TOLERANCE)
        assert state.prediction.label == whole.label
        assert (state.prediction.token_count, state.prediction.unknown_count, state.prediction.truncated) == (
            whole.token_count, whole.unknown_count, whole.truncated)


ARCHITECTURES = [dict(cell=cell, pooling=pooling, num_layers=layers, subword_buckets=buckets)
                 for cell, pooling, layers, buckets in itertools.product(("rnn", "gru", "lstm"), POOLINGS, (1, 2),
                                                                          (0, 50))]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("architecture", ARCHITECTURES, ids=lambda a: "-".join(str(v) for v in a.values()))
def test_random_chunkings_end_with_predicts_answer_on_the_whole_text(architecture, backend, tiny_network, vocab):
    if backend == "onnxruntime":
        pytest.importorskip("onnxruntime", reason="the server extra installs onnxruntime")
    vocab = Vocabulary(vocab.tokens, subword_buckets=architecture["subword_buckets"])
    loaded = _loaded(tiny_network(len(vocab), seed=2, temperature=1.3, **architecture), vocab)
    stepper = make_stream_stepper(loaded, backend, threads=1)
    assert (stepper.recurrence is not None) == (backend == "onnxruntime")
    for seed in range(2):
        states, _ = _stream(stepper, TEXTS, seed)
        _assert_predicts_as_a_whole(loaded, states, TEXTS, loaded.config.max_tokens)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["sst2-gru", "sst2-rnn"])
def test_shipped_models_stream_to_predicts_answer(name, backend):
    if backend == "onnxruntime":
        pytest.importorskip("onnxruntime", reason="the server extra installs onnxruntime")
    loaded = load_checkpoint(SHIPPED / name)
    stepper = make_stream_stepper(loaded, backend, threads=1)
    states, _ = _stream(stepper, TEXTS, seed=7)
    _assert_predicts_as_a_whole(loaded, states, TEXTS, loaded.config.max_tokens)
    if backend == "onnxruntime":  # and what Predict serves on that executor
        served = make_predictor(loaded, "onnxruntime", threads=1)(
            [encode_tokens(text, loaded.vocab, loaded.config.max_tokens) for text in TEXTS])
        torch.testing.assert_close(torch.tensor([s.prediction.probabilities for s in states]),
                                   torch.tensor([p.probabilities for p in served]), rtol=0, atol=AGREEMENT_TOLERANCE)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("pooling", POOLINGS)
def test_each_tokens_step_is_what_trace_reports_for_that_prefix(pooling, backend, tiny_network, vocab):
    if backend == "onnxruntime":
        pytest.importorskip("onnxruntime", reason="the server extra installs onnxruntime")
    loaded = _loaded(tiny_network(len(vocab), seed=4, pooling=pooling, cell="lstm"), vocab)
    stepper = make_stream_stepper(loaded, backend, threads=1)
    states, rounds = _stream(stepper, TEXTS, seed=3, want_steps=True)
    for row, text in enumerate(TEXTS):
        steps = [step for chunks, results in rounds for step in results[row].steps]
        assert [step.token for step in steps] == text
        traced = trace_text(loaded, encode_tokens(text, vocab, loaded.config.max_tokens)).steps
        for step, expected in zip(steps, traced, strict=True):
            assert step.known == expected.known
            torch.testing.assert_close(torch.tensor(step.probabilities), torch.tensor(expected.probabilities),
                                       rtol=0, atol=AGREEMENT_TOLERANCE)
            for name in ("delta_positive", "hidden_norm", "change_norm"):
                assert getattr(step, name) == pytest.approx(getattr(expected, name), abs=AGREEMENT_TOLERANCE)
        assert steps[-1].probabilities == states[row].prediction.probabilities


def test_a_stream_reads_at_most_the_limit_it_is_given_as_predict_keeps_the_head(tiny_network, vocab):
    loaded = _loaded(tiny_network(len(vocab), seed=5, pooling="mean"), vocab)
    text = TEXTS[0]
    stepper = make_stream_stepper(loaded, "torch", threads=1, max_tokens=6)
    states, rounds = _stream(stepper, [text], seed=1)
    _assert_predicts_as_a_whole(loaded, states, [text], limit=6)
    assert states[0].prediction.truncated and states[0].tokens_seen == len(text)
    assert sum(results[0].tokens_dropped for _, results in rounds) == len(text) - 6
    (after, result), = stepper.advance(states, [["more"]], [True])
    assert result.prediction.probabilities == states[0].prediction.probabilities
    assert result.prediction.token_count == 6 and result.prediction.text_token_count == len(text) + 1
    assert result.steps == () and result.tokens_dropped == 1 and after.packed is states[0].packed


def test_an_empty_chunk_changes_nothing_and_before_the_first_token_there_is_no_prediction(tiny_network, vocab):
    stepper = make_stream_stepper(_loaded(tiny_network(len(vocab)), vocab), "torch", threads=1)
    start = stepper.start()
    (state, result), = stepper.advance([start], [[]], [True])
    assert state is start and result.prediction is None
    (state, result), = stepper.advance([state], [["fun"]], [False])
    (again, unchanged), = stepper.advance([state], [[]], [False])
    assert again is state and unchanged.prediction == result.prediction and result.steps == ()


def test_token_ids_and_encoded_texts_are_chunks_too(tiny_network, vocab):
    loaded = _loaded(tiny_network(len(vocab), pooling="attention"), vocab)
    stepper = make_stream_stepper(loaded, "torch", threads=1)
    text = TEXTS[0]
    encoded = encode_tokens(text, vocab, 128)
    answers = stepper.advance([stepper.start()] * 3, [text, list(encoded.ids), encoded], [False] * 3)
    assert len({result.prediction for _, result in answers}) == 1
    with pytest.raises(ValueError, match="token ids must be in"):
        stepper.advance([stepper.start()], [[len(vocab)]], [False])


def test_bidirectional_models_are_refused_with_the_reason(tiny_network, vocab):
    loaded = _loaded(tiny_network(len(vocab), bidirectional=True), vocab)
    assert not can_stream(loaded.config) and stream_refusal(loaded.config) == BIDIRECTIONAL_REASON
    with pytest.raises(ValueError, match=BIDIRECTIONAL_REASON):
        make_stream_stepper(loaded, "torch", threads=1)
    assert can_stream(tiny_network(len(vocab)).config)


@pytest.mark.parametrize("cell, pooling, expected", [
    # L × H floats of state (twice for LSTM) + the carry: count, then the pooling's own fields.
    ("gru", "last", 2 * 6 * 4 + 8 + 6 * 4),
    ("lstm", "mean", 2 * 2 * 6 * 4 + 8 + 6 * 4),
    ("rnn", "max", 2 * 6 * 4 + 8 + 6 * 4),
    ("gru", "attention", 2 * 6 * 4 + 8 + (1 + 1 + 6) * 4),
])
def test_nbytes_reports_the_sessions_tensors(cell, pooling, expected, tiny_network, vocab):
    stepper = make_stream_stepper(_loaded(tiny_network(len(vocab), cell=cell, pooling=pooling, num_layers=2), vocab),
                                  "torch", threads=1)
    (state, _), = stepper.advance([stepper.start()], [["fun", "plot"]], [False])
    assert state.nbytes() == stepper.start().nbytes() == expected


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_batch_answers_each_session_as_if_it_were_alone(backend, tiny_network, vocab):
    """Sessions at different points (one at its limit, one past it within this chunk), chunks of
    different lengths (an empty one, unknown words) and steps for some: each as advanced alone."""
    if backend == "onnxruntime":
        pytest.importorskip("onnxruntime", reason="the server extra installs onnxruntime")
    vocab = Vocabulary(vocab.tokens, subword_buckets=50)
    loaded = _loaded(tiny_network(len(vocab), seed=6, cell="lstm", pooling="attention", num_layers=2,
                                  subword_buckets=50), vocab)
    stepper = make_stream_stepper(loaded, backend, threads=1, max_tokens=8)
    openings = [[], ["fun"], "boring zorpish plot and".split(), "a flimflam movie . the acting is great".split()]
    states = [stepper.advance([stepper.start()], [text], [False])[0][0] for text in openings]
    chunks = [["great", "."], [], "not good , but fun".split(), ["zorpish"]]
    wants = [True, True, False, True]
    together = stepper.advance(states, chunks, wants)
    for state, chunk, want, (new_state, result) in zip(states, chunks, wants, together, strict=True):
        ((alone_state, alone),) = stepper.advance([state], [chunk], [want])
        torch.testing.assert_close(torch.from_numpy(new_state.packed), torch.from_numpy(alone_state.packed),
                                   rtol=0, atol=AGREEMENT_TOLERANCE)
        assert (result.tokens_read, result.tokens_dropped, len(result.steps)) == (
            alone.tokens_read, alone.tokens_dropped, len(alone.steps))
        assert [step.token for step in result.steps] == [step.token for step in alone.steps]
        assert (new_state.tokens_read, new_state.tokens_seen, new_state.unknown_count, new_state.truncated) == (
            alone_state.tokens_read, alone_state.tokens_seen, alone_state.unknown_count, alone_state.truncated)
        if alone.prediction is not None:
            torch.testing.assert_close(torch.tensor(result.prediction.probabilities),
                                       torch.tensor(alone.prediction.probabilities), rtol=0, atol=AGREEMENT_TOLERANCE)
    assert [len(result.steps) for _, result in together] == [2, 0, 0, 0]  # asked for where something was read
    assert [(result.tokens_read, result.tokens_dropped) for _, result in together] == [(2, 0), (0, 0), (4, 1), (0, 1)]


@pytest.mark.parametrize("pooling_name", POOLINGS)
def test_the_numpy_running_form_is_the_torch_one(pooling_name):
    """pooling.advance_arrays (a stream's usual update, on numpy) against advance + read on torch, over
    chunks that start from an empty carry, a row that reads nothing, and a carry read before."""
    torch.manual_seed(3)
    attention = AdditiveAttention(6).eval()
    carry = pooling.empty_carry(pooling_name, 3, 6)
    for lengths in ([2, 0, 3], [1, 1, 1], [4, 2, 0]):
        outputs = torch.randn(3, max(lengths), 6)  # [B, T, H]
        lengths_tensor = torch.tensor(lengths)
        fields = {name: value.numpy().copy() for name, value in carry.tensors().items() if name != "count"}
        with torch.inference_mode():
            scores = attention(outputs).numpy() if pooling_name == "attention" else None
            carry, _ = pooling.advance(carry, outputs, lengths_tensor, attention, steps=False)
            expected = pooling.read(carry)
        count_before = (carry.count - lengths_tensor).numpy()
        new_fields, pooled = pooling.advance_arrays(pooling_name, fields, count_before, outputs.numpy(),
                                                    np.array(lengths), scores)
        assert pooled.dtype == np.float32
        torch.testing.assert_close(torch.from_numpy(pooled), expected, rtol=0, atol=1e-6)
        for name, value in new_fields.items():
            torch.testing.assert_close(torch.from_numpy(np.asarray(value)), getattr(carry, name), rtol=0, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("pooling_name", POOLINGS)
def test_an_update_without_steps_equals_one_with_steps(pooling_name, backend, tiny_network, vocab):
    """Without steps a CPU update pools and classifies on numpy, with steps on torch: same states, same answers."""
    if backend == "onnxruntime":
        pytest.importorskip("onnxruntime", reason="the server extra installs onnxruntime")
    stepper = make_stream_stepper(_loaded(tiny_network(len(vocab), seed=8, pooling=pooling_name), vocab), backend,
                                  threads=1)
    plain = stepped = [stepper.start()] * len(TEXTS)
    for at in range(0, 16, 3):
        chunks = [text[at:at + 3] for text in TEXTS]
        plain_answers = stepper.advance(plain, chunks, [False] * len(TEXTS))
        stepped_answers = stepper.advance(stepped, chunks, [True] * len(TEXTS))
        for (a, a_result), (b, b_result) in zip(plain_answers, stepped_answers, strict=True):
            torch.testing.assert_close(torch.from_numpy(a.packed), torch.from_numpy(b.packed), rtol=0, atol=1e-6)
            if b_result.prediction is not None:
                torch.testing.assert_close(torch.tensor(a_result.prediction.probabilities),
                                           torch.tensor(b_result.prediction.probabilities), rtol=0, atol=1e-6)
        plain, stepped = [s for s, _ in plain_answers], [s for s, _ in stepped_answers]
