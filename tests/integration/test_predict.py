"""Predict, Trace and model info through the SDK against a real server."""

from __future__ import annotations

import dataclasses
import math

import pytest

from rnn_sentiment.client import (
    Architecture, Attribution, CellStep, ModelInfo, Prediction, SentimentClient, TraceResult, TraceStep,
)
from rnn_sentiment.v1 import sentiment_pb2 as pb

NEGATIVE = "a dull , lifeless and painfully boring movie"
POSITIVE = "a warm, funny and beautifully acted film"


def test_the_readme_sentences_get_the_right_labels(client: SentimentClient) -> None:
    result = client.predict([NEGATIVE, POSITIVE])
    assert [p.label for p in result.predictions] == ["negative", "positive"]
    info = client.model_info()
    assert result.model == info.name and result.model_version == info.version


def test_prediction_fields_are_consistent(client: SentimentClient) -> None:
    info = client.model_info()
    (p,) = client.predict("it 's not a bad film , but the ending xyzzyqq is silly").predictions
    assert math.isclose(sum(p.probabilities), 1.0, abs_tol=1e-5)
    assert p.score == pytest.approx(max(p.probabilities))
    assert p.label == info.labels[p.probabilities.index(max(p.probabilities))]
    assert p.token_count == 13  # it 's not a bad film , but the ending xyzzyqq is silly
    assert p.unknown_token_count >= 1  # the nonsense word
    assert not p.truncated


def test_huge_unknown_words_are_answered_and_the_server_keeps_serving(client: SentimentClient) -> None:
    # sst2-gru reads unknown words through their character n-grams: a 999-character "word" (the
    # test server's limit is 1,000) and a text of 28 long made-up words, end to end through the
    # hashing, the padding and the executor. The bounds on their cost (MAX_WORD_CHARS,
    # MAX_ONNX_SUBWORD_SLOTS) are unit-tested in tests/unit/model/test_model_subwords.py.
    junk = " ".join(f"qzx{index:03d}" + "k" * 26 for index in range(28))
    result = client.predict(["a" * 999, junk, POSITIVE])
    assert [p.unknown_token_count for p in result.predictions[:2]] == [1, 28]
    assert result.predictions[2].label == "positive"
    assert client.predict(NEGATIVE).predictions[0].label == "negative"


def test_predictions_keep_request_order(client: SentimentClient) -> None:
    texts = [NEGATIVE, POSITIVE, NEGATIVE, POSITIVE, POSITIVE]
    labels = [p.label for p in client.predict(texts).predictions]
    assert labels == ["negative", "positive", "negative", "positive", "positive"]


def test_long_text_is_truncated_to_max_tokens(client: SentimentClient) -> None:
    info = client.model_info()
    (p,) = client.predict("good " * (info.max_tokens + 5)).predictions
    assert p.truncated and p.token_count == info.max_tokens


def test_trace_last_step_equals_predict(client: SentimentClient) -> None:
    for text in (NEGATIVE, POSITIVE):
        trace = client.trace(text)
        (predicted,) = client.predict(text).predictions
        assert [s.token for s in trace.steps][:2] == text.lower().replace(",", " ,").split()[:2]
        assert len(trace.steps) == predicted.token_count
        assert trace.steps[-1].probabilities == pytest.approx(predicted.probabilities, abs=1e-6)
        assert trace.prediction.probabilities == pytest.approx(predicted.probabilities, abs=1e-6)


def test_trace_steps_carry_hidden_state_and_deltas(client: SentimentClient) -> None:
    info = client.model_info()
    trace = client.trace(POSITIVE)
    width = info.architecture.hidden_size * (2 if info.architecture.bidirectional else 1)
    # The first step is measured from the answer before any token (the baseline).
    previous = trace.baseline_probabilities[trace.labels.index("positive")]
    for step in trace.steps:
        assert len(step.hidden_state) == width
        assert step.hidden_state_norm == pytest.approx(math.sqrt(sum(x * x for x in step.hidden_state)), rel=1e-4)
        positive = trace.positive_probability(step)
        assert step.positive_delta == pytest.approx(positive - previous, abs=1e-5)
        previous = positive
    lean = client.trace(POSITIVE, include_hidden_states=False)
    assert all(len(s.hidden_state) == 0 for s in lean.steps)


def test_model_info_describes_the_shipped_default(client: SentimentClient) -> None:
    info = client.model_info()
    assert info.is_default
    assert info.labels == ("negative", "positive")
    assert info.dev_accuracy >= 0.84
    assert len(info.checkpoint_sha256) == 64
    assert info.architecture.cell_type in ("rnn", "gru", "lstm")
    assert info.architecture.parameter_count > 0
    assert info.architecture.subword_buckets == 10000  # sst2-gru 2.x reads unknown words' n-grams
    assert info.device == "cpu"
    models = client.list_models()
    assert models[0] == info
    assert {m.name for m in models} >= {"sst2-gru", "sst2-rnn"}


def test_every_shipped_model_answers_by_name(client: SentimentClient) -> None:
    for info in client.list_models():
        result = client.predict([NEGATIVE, POSITIVE], model=info.name)
        assert result.model == info.name
        assert client.model_info(info.name).name == info.name
        trace = client.trace(POSITIVE, model=info.name)
        assert trace.steps[-1].probabilities == pytest.approx(result.predictions[1].probabilities, abs=1e-6)


def test_results_are_immutable_values_a_caller_can_keep_hash_and_share(client: SentimentClient) -> None:
    predicted = client.predict(POSITIVE)
    trace = client.trace(POSITIVE, attributions=["occlusion"], include_memory_profile=True, all_layers=True)
    with client.stream() as stream:
        update = stream.send("a warm film ")
    assert update.prediction is not None
    values = [predicted, predicted.predictions[0], trace, trace.steps[0], trace.steps[0].cells[0],
              trace.attributions[0], trace.memory_profile, client.model_info(),
              client.model_info().architecture, update]
    for value in values:
        # Equal results are one dict key (a cache of answers); none can be altered after the fact.
        assert {value: "kept"}[dataclasses.replace(value)] == "kept", type(value).__name__
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(value, dataclasses.fields(value)[0].name, None)


def test_results_built_by_hand_read_the_fields_they_omit_as_absent() -> None:
    # Code written against an older SDK builds these without the newer fields: each must read
    # as "not known / not asked for", never as a made-up value.
    prediction = Prediction(label="positive", score=0.9, probabilities=(0.1, 0.9), token_count=3,
                            unknown_token_count=0, truncated=False)
    assert prediction.text_token_count == 0
    step = TraceStep(token="good", in_vocabulary=True, hidden_state=(), hidden_state_norm=1.0,
                     probabilities=(0.1, 0.9), positive_delta=0.4)
    assert (step.hidden_change_norm, step.attention_weight, step.memory, step.cells) == (0.0, None, None, ())
    cell = CellStep(layer=0, direction="forward", hidden_state_norm=1.0, hidden_change_norm=0.5)
    assert all(getattr(cell, name) is None for name in ("update_gate", "reset_gate", "input_gate", "forget_gate",
                                                       "output_gate", "cell_state_norm", "memory"))
    attribution = Attribution(method="prefix", scores=(0.4,), target_label="positive")
    assert (attribution.steps, attribution.logit_difference, attribution.completeness_gap) == (0, None, None)
    arch = Architecture(cell_type="gru", num_layers=1, embedding_dim=8, hidden_size=8, bidirectional=False,
                        pooling="last", parameter_count=10)
    assert arch.subword_buckets == 0  # whole words only
    info = ModelInfo(name="m", version="1", architecture=arch, labels=("negative", "positive"), vocabulary_size=10,
                     max_tokens=64, checkpoint_sha256="0" * 64, dev_accuracy=0.0, device="cpu", is_default=True)
    assert (info.truncation, info.truncation_head_tokens) == ("head", 0)
    assert (info.max_texts_per_request, info.max_text_chars) == (0, 0)  # an older server: limits unknown
    trace = TraceResult(prediction=prediction, steps=(step,), labels=("negative", "positive"), model="m",
                        model_version="1")
    assert (trace.attributions, trace.memory_profile, trace.hidden_units, trace.baseline_probabilities) == (
        (), None, (), ())


def test_model_info_reads_the_truncation_a_server_sends_and_an_older_servers_silence(client: SentimentClient) -> None:
    info = client.model_info()
    # The documented default (--truncation head_tail): a quarter of max_tokens from the text's start.
    assert (info.truncation, info.truncation_head_tokens) == ("head_tail", info.max_tokens // 4)
    # An older server sends no truncation: it always kept the head, all max_tokens of it.
    older = ModelInfo.from_message(pb.ModelInfo(name="old", max_tokens=64, truncation_head_tokens=0))
    assert (older.truncation, older.truncation_head_tokens) == ("head", 64)
    head_tail = ModelInfo.from_message(pb.ModelInfo(name="new", max_tokens=64, truncation=pb.TRUNCATION_HEAD_TAIL,
                                                    truncation_head_tokens=16))
    assert (head_tail.truncation, head_tail.truncation_head_tokens) == ("head_tail", 16)
    head = ModelInfo.from_message(pb.ModelInfo(name="new", max_tokens=64, truncation=pb.TRUNCATION_HEAD,
                                               truncation_head_tokens=64))
    assert (head.truncation, head.truncation_head_tokens) == ("head", 64)


def test_model_info_of_a_model_without_a_training_record(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """An untrained checkpoint (no training record) is described from its config, and its dev
    accuracy is 0 (unknown), never a made-up value; the served limits are the server's."""
    import asyncio

    from rnn_sentiment.client import AsyncSentimentClient
    from rnn_sentiment.server.app import bind_server
    from rnn_sentiment.server.config import ServerConfig
    from tests.support import write_untrained_checkpoint

    write_untrained_checkpoint(tmp_path / "tiny", "tiny", "v1", cell="lstm")

    async def scenario() -> ModelInfo:
        config = ServerConfig(address="127.0.0.1:0", metrics_address="", torch_threads=1, model_dir=str(tmp_path),
                              max_tokens=48, truncation="head")
        running = await bind_server(config)
        try:
            await running.load_models()
            async with AsyncSentimentClient(f"127.0.0.1:{running.port}") as client:
                return await client.model_info()
        finally:
            await running.drain()

    info = asyncio.run(scenario())
    assert (info.name, info.version, info.is_default) == ("tiny", "v1", True)
    assert info.dev_accuracy == 0.0
    arch = info.architecture
    assert (arch.cell_type, arch.num_layers, arch.embedding_dim, arch.hidden_size, arch.bidirectional,
            arch.pooling, arch.subword_buckets) == ("lstm", 1, 8, 8, False, "last", 0)
    assert arch.parameter_count > 0
    assert info.labels == ("negative", "positive")
    assert info.vocabulary_size >= 7  # the seven words written, plus the special tokens
    assert (info.max_tokens, info.truncation, info.truncation_head_tokens) == (48, "head", 48)
    assert info.device == "cpu" and len(info.checkpoint_sha256) == 64
