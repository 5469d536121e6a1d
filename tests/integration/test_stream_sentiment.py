"""StreamSentiment on a real server: chunked text ends where Predict on the whole text does;
limits, idle timeout, cancel, drain, auth and metrics as docs/streaming.md says."""

from __future__ import annotations

import queue
import random
import signal
import time
from pathlib import Path
from typing import Iterator

import grpc
import pytest

from rnn_sentiment.v1 import sentiment_pb2 as pb
from rnn_sentiment.v1 import sentiment_pb2_grpc as pb_grpc
from tests.scrape import idle_scrape, sample, scrape
from tests.support import ServerProcess, write_untrained_checkpoint

NO_RETRY = [("grpc.enable_retries", 0)]
IDLE_SECONDS = 2
MAX_STREAMS = 3
MAX_TEXT_CHARS = 200
MAX_STREAM_TOKENS = 60
TOKEN_LIMIT = 10  # tiny enough that a test text outgrows it
TINY_TEXT = "a good film , not a bad film . a film not good"
TOKEN = "stream-test-token"


def write_bidirectional_checkpoint(directory: Path, name: str) -> Path:
    import torch

    from rnn_sentiment.model.checkpoint import save_checkpoint
    from rnn_sentiment.model.config import ModelConfig
    from rnn_sentiment.model.network import SentimentRNN
    from rnn_sentiment.model.vocabulary import Vocabulary

    torch.manual_seed(1)
    vocab = Vocabulary.build([["a", "good", "bad", "film"]])
    config = ModelConfig(cell="gru", embedding_dim=8, hidden_size=8, num_layers=1, bidirectional=True,
                         pooling="last", dropout=0.0)
    save_checkpoint(directory, SentimentRNN(config, vocab_size=len(vocab)), vocab, config, name=name, version="1")
    return directory


@pytest.fixture(scope="module")
def tiny_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Tiny models (a GRU and an LSTM that stream, a bidirectional GRU that cannot) and tight stream limits."""
    models = tmp_path_factory.mktemp("stream-models")
    write_untrained_checkpoint(models / "tiny-gru", "tiny-gru", "1", cell="gru")
    write_untrained_checkpoint(models / "tiny-lstm", "tiny-lstm", "1", cell="lstm", seed=2)
    write_bidirectional_checkpoint(models / "tiny-bi", "tiny-bi")
    process = ServerProcess(extra_args=[
        "--model-dir", str(models), "--default-model", "tiny-gru",
        "--max-streams", str(MAX_STREAMS), "--stream-idle-seconds", str(IDLE_SECONDS),
        "--max-stream-tokens", str(MAX_STREAM_TOKENS), "--max-text-chars", str(MAX_TEXT_CHARS),
        "--model-token-limits", f"tiny-gru={TOKEN_LIMIT}:head_tail,tiny-lstm={TOKEN_LIMIT}:head",
    ])
    process.start()
    yield process
    assert process.stop() == 0, process.log()


@pytest.fixture
def stub(tiny_server: ServerProcess) -> Iterator[pb_grpc.SentimentServiceStub]:
    with grpc.insecure_channel(tiny_server.target, options=NO_RETRY) as channel:
        yield pb_grpc.SentimentServiceStub(channel)


class OpenStream:
    """One StreamSentiment call driven message by message from the test."""

    def __init__(self, stub: pb_grpc.SentimentServiceStub, metadata: tuple = ()) -> None:
        self._requests: queue.Queue[pb.StreamSentimentRequest | None] = queue.Queue()
        self.call = stub.StreamSentiment(iter(self._requests.get, None), timeout=60, metadata=metadata)

    def put(self, text: str, model: str = "", include_steps: bool = False) -> None:
        """Send a message without waiting for its answer (for a message the stream ends on)."""
        self._requests.put(pb.StreamSentimentRequest(text=text, model=model, include_steps=include_steps))

    def send(self, text: str, model: str = "", include_steps: bool = False) -> pb.StreamSentimentResponse:
        self.put(text, model, include_steps)
        return next(self.call)

    def close(self) -> pb.StreamSentimentResponse:
        """Half-close: the final response, then the end of the call."""
        self._requests.put(None)
        final = next(self.call)
        assert list(self.call) == []
        return final

    def error(self) -> grpc.RpcError:
        """The status the stream ends with, waiting for it."""
        with pytest.raises(grpc.RpcError) as caught:
            next(self.call)
        return caught.value


def chunked(text: str, seed: int) -> list[str]:
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(text)), k=min(len(text) - 1, rng.randint(1, 12))))
    return [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]


def stream_text(stub: pb_grpc.SentimentServiceStub, chunks: list[str], model: str = "",
                include_steps: bool = False) -> list[pb.StreamSentimentResponse]:
    stream = OpenStream(stub)
    responses = [stream.send(chunk, model=model if i == 0 else "", include_steps=include_steps)
                 for i, chunk in enumerate(chunks)]
    return responses + [stream.close()]


def wait_for_metric(server: ServerProcess, name: str, expected: float, **labels: str) -> None:
    """Poll /metrics until the sample has the expected value (written just after the event)."""
    deadline = time.monotonic() + 10
    while (value := sample(scrape(server), name, **labels)) != expected:
        assert time.monotonic() < deadline, f"{name}{labels} stayed {value}, expected {expected}"
        time.sleep(0.05)


@pytest.mark.parametrize("model", ["tiny-gru", "tiny-lstm"])
def test_any_chunking_ends_where_predict_on_the_whole_text_does(stub, model) -> None:
    whole = stub.Predict(pb.PredictRequest(texts=[TINY_TEXT], model=model), timeout=30).predictions[0]
    for seed in range(4):
        responses = stream_text(stub, chunked(TINY_TEXT, seed), model=model)
        final = responses[-1]
        assert final.final and not any(r.final for r in responses[:-1])
        assert final.model == model and final.model_version == "1"
        assert final.prediction.probabilities == pytest.approx(whole.probabilities, abs=1e-5)
        assert final.prediction.label == whole.label
        assert final.prediction.token_count == whole.token_count
        assert final.prediction.unknown_token_count == whole.unknown_token_count


@pytest.mark.parametrize("model", ["tiny-gru", "tiny-lstm"])  # head_tail and head truncation
def test_every_update_is_predict_on_the_text_so_far_past_the_token_limit_too(stub, model) -> None:
    words = (TINY_TEXT + " , " + TINY_TEXT).split()  # 25 tokens: past the limit of 10
    stream = OpenStream(stub)
    updates = [stream.send(word + " ", model=model if i == 0 else "", include_steps=True)
               for i, word in enumerate(words)]
    updates.append(stream.close())
    prefixes = [" ".join(words[: i + 1]) for i in range(len(words))] + [" ".join(words)]
    expected = stub.Predict(pb.PredictRequest(texts=prefixes, model=model), timeout=30).predictions
    for index, (update, whole) in enumerate(zip(updates, expected, strict=True)):
        assert update.prediction.probabilities == pytest.approx(whole.probabilities, abs=1e-5), index
        assert update.prediction.token_count == whole.token_count == min(index + 1, TOKEN_LIMIT)
        assert update.prediction.truncated == whole.truncated == (min(index + 1, len(words)) > TOKEN_LIMIT)
        assert update.prediction.unknown_token_count == whole.unknown_token_count
    read_steps = [[s.token for s in u.steps] for u in updates[:-1]]
    assert read_steps[:TOKEN_LIMIT] == [[w] for w in words[:TOKEN_LIMIT]]
    # Past the limit, head_tail reads each new token at the end of the text (a step each); head reads none.
    assert read_steps[TOKEN_LIMIT:] == ([[w] for w in words[TOKEN_LIMIT:]] if model == "tiny-gru" else
                                        [[] for _ in words[TOKEN_LIMIT:]])


@pytest.mark.parametrize("model", ["sst2-gru", "sst2-rnn"])
def test_the_shipped_models_stream_word_by_word_to_predicts_answer(server: ServerProcess, model: str) -> None:
    text = "I don't think this (very long) film is good at all... but the acting was great!"
    with grpc.insecure_channel(server.target, options=NO_RETRY) as channel:
        stub = pb_grpc.SentimentServiceStub(channel)
        whole = stub.Predict(pb.PredictRequest(texts=[text], model=model), timeout=30).predictions[0]
        responses = stream_text(stub, [word + " " for word in text.split(" ")], model=model)
    assert responses[-1].model == model
    assert responses[-1].prediction.probabilities == pytest.approx(whole.probabilities, abs=1e-5)
    assert responses[-1].prediction.token_count == whole.token_count


def test_steps_come_only_when_asked_and_match_the_tokens_read(stub) -> None:
    without = stream_text(stub, ["a good ", "film ."])
    assert all(not r.steps for r in without)
    responses = stream_text(stub, ["a good ", "fi", "lm ."], include_steps=True)
    assert [[s.token for s in r.steps] for r in responses] == [["a", "good"], [], ["film"], ["."]]
    assert responses[0].HasField("prediction")  # two tokens read: a prediction
    last_step = responses[-1].steps[-1]
    assert list(last_step.probabilities) == pytest.approx(list(responses[-1].prediction.probabilities), abs=1e-5)
    assert all(s.hidden_state_norm > 0 and not s.hidden_state for r in responses for s in r.steps)


def test_prediction_is_unset_until_the_first_token(stub) -> None:
    stream = OpenStream(stub)
    assert not stream.send("").HasField("prediction")
    assert not stream.send("goo").HasField("prediction")  # an unfinished word is held
    assert stream.send("d ").prediction.token_count == 1
    assert stream.close().prediction.token_count == 1


def test_a_bidirectional_model_is_refused_naming_the_models_that_can_stream(stub) -> None:
    stream = OpenStream(stub)
    stream.put(text="a good film", model="tiny-bi")
    error = stream.error()
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "tiny-bi" in error.details() and "tiny-gru" in error.details() and "tiny-lstm" in error.details()


def test_unknown_model_and_a_changed_model_are_refused(stub) -> None:
    stream = OpenStream(stub)
    stream.put(text="a", model="no-such-model")
    assert stream.error().code() == grpc.StatusCode.NOT_FOUND
    stream = OpenStream(stub)
    stream.send("a ", model="tiny-gru")
    stream.put(text="good", model="tiny-lstm")
    error = stream.error()
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "model" in error.details()


def test_bad_chunks_end_the_stream_with_invalid_argument_and_the_server_goes_on(stub) -> None:
    stream = OpenStream(stub)
    stream.send("a good ")
    stream.put(text="a " * MAX_TEXT_CHARS)
    error = stream.error()
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"the limit is {MAX_TEXT_CHARS} per chunk" in error.details()
    # No whitespace for longer than a text may be: the held word is bounded.
    stream = OpenStream(stub)
    stream.send("x" * (MAX_TEXT_CHARS - 10))
    stream.put(text="y" * 20)
    error = stream.error()
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "without whitespace" in error.details()
    assert stream_text(stub, ["a good film"])[-1].prediction.token_count == 3


def test_a_stream_past_its_token_limit_ends_with_resource_exhausted(stub) -> None:
    stream = OpenStream(stub)
    stream.send("a " * (MAX_STREAM_TOKENS - 1))
    stream.put(text="a a ")
    error = stream.error()
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"the limit is {MAX_STREAM_TOKENS} per stream (--max-stream-tokens)" in error.details()


def test_the_stream_limit_refuses_new_streams_and_the_open_ones_keep_working(tiny_server, stub) -> None:
    streams = [OpenStream(stub) for _ in range(MAX_STREAMS)]
    for stream in streams:
        stream.send("a ")
    wait_for_metric(tiny_server, "rnn_sentiment_streams_active", MAX_STREAMS, model="tiny-gru")
    assert sample(scrape(tiny_server), "rnn_sentiment_stream_session_bytes", model="tiny-gru") > 0  # states held
    refused = OpenStream(stub)
    refused.put(text="a ")
    error = refused.error()
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"--max-streams {MAX_STREAMS}" in error.details() and "never evicted" in error.details()
    for stream in streams:
        assert stream.send("good ").prediction.token_count == 2
    # A cancelled stream frees its slot at once: the gauge falls and a new stream is served.
    streams.pop().call.cancel()
    wait_for_metric(tiny_server, "rnn_sentiment_streams_active", MAX_STREAMS - 1, model="tiny-gru")
    assert stream_text(stub, ["a good film"])[-1].final
    for stream in streams:
        assert stream.close().prediction.token_count == 2
    wait_for_metric(tiny_server, "rnn_sentiment_streams_active", 0, model="tiny-gru")


def test_an_idle_stream_ends_with_deadline_exceeded_naming_the_flag(stub) -> None:
    stream = OpenStream(stub)
    stream.send("a good ")
    error = stream.error()  # nothing more is sent
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert f"idle for {IDLE_SECONDS} s" in error.details() and "--stream-idle-seconds" in error.details()


def test_stream_metrics_move(tiny_server, stub) -> None:
    labels = {"model": "tiny-lstm"}
    before = idle_scrape(tiny_server)
    stream_text(stub, ["a good ", "film"], model="tiny-lstm")  # 2 chunks and the final; 3 tokens
    chunks = sample(before, "rnn_sentiment_stream_chunks_total", **labels) + 3
    wait_for_metric(tiny_server, "rnn_sentiment_stream_chunks_total", chunks, **labels)
    after = scrape(tiny_server)
    assert sample(after, "rnn_sentiment_stream_tokens_total", **labels) == (
        sample(before, "rnn_sentiment_stream_tokens_total", **labels) + 3)
    assert sample(after, "rnn_sentiment_stream_update_seconds_count", **labels) == (
        sample(before, "rnn_sentiment_stream_update_seconds_count", **labels) + 3)
    deadline = time.monotonic() + 10  # the call ends on the server a moment after its last answer
    while sample(scrape(tiny_server), "grpc_server_handled_total", grpc_method="StreamSentiment", grpc_code="OK") == 0:
        assert time.monotonic() < deadline, "the stream was never counted as a handled call"
        time.sleep(0.05)
    assert sample(after, "rnn_sentiment_streams_active", **labels) == 0
    assert sample(after, "rnn_sentiment_stream_session_bytes", **labels) == 0


def test_an_open_stream_keeps_its_model_version_across_a_hot_reload(tmp_path: Path) -> None:
    models = write_untrained_checkpoint(tmp_path / "tiny-gru", "tiny-gru", "1")
    process = ServerProcess(extra_args=["--model-dir", str(models)])
    process.start()
    try:
        with grpc.insecure_channel(process.target, options=NO_RETRY) as channel:
            stub = pb_grpc.SentimentServiceStub(channel)
            before = OpenStream(stub)
            assert before.send("a good ").model_version == "1"
            write_untrained_checkpoint(models, "tiny-gru", "2", seed=5)
            process.signal(signal.SIGHUP)
            deadline = time.monotonic() + 30
            while stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=10).version != "2":
                assert time.monotonic() < deadline, process.log()
                time.sleep(0.05)
            assert stream_text(stub, ["a good film"])[-1].model_version == "2"  # new streams: the new version
            assert before.send("film ").model_version == "1"
            final = before.close()
            assert final.model_version == "1" and final.prediction.token_count == 3
    finally:
        assert process.stop() == 0, process.log()


def test_tokens_and_admission_apply_and_drain_ends_open_streams_with_unavailable(tmp_path: Path) -> None:
    models = write_untrained_checkpoint(tmp_path / "tiny-gru", "tiny-gru", "1")
    process = ServerProcess(extra_args=["--model-dir", str(models), "--grace-seconds", "1", "--drain-seconds", "0.5",
                                        "--max-concurrent-rpcs", "1"],
                            env={"RNN_SENTIMENT_AUTH_TOKENS": TOKEN})
    process.start()
    try:
        with grpc.insecure_channel(process.target, options=NO_RETRY) as channel:
            stub = pb_grpc.SentimentServiceStub(channel)
            refused = OpenStream(stub)
            refused.put(text="a ")
            assert refused.error().code() == grpc.StatusCode.UNAUTHENTICATED
            authorized = (("authorization", f"Bearer {TOKEN}"),)
            stream = OpenStream(stub, metadata=authorized)
            assert stream.send("a good ").prediction.token_count == 2
            # An open stream holds one of --max-concurrent-rpcs for its lifetime.
            second = OpenStream(stub, metadata=authorized)
            second.put(text="a ")
            error = second.error()
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "calls in progress" in error.details()
            process.signal(signal.SIGTERM)
            error = stream.error()  # the stream is left open: the drain ends it after the grace
            assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()
            assert "grace period" in error.details() and "reopen" in error.details()
    finally:
        assert process.stop() == 0, process.log()
