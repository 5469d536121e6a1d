"""StreamSentimentService (server/stream_sentiment.py) on a real grpc.aio server in this process,
with a real model repository of tiny untrained checkpoints: the edges of its limits, a stream
with no message, an internal error, the series it moves, and the head_tail reading of a stream
past the token limit for chunkings the integration test's word-by-word stream does not reach. The whole server, end to end, is in
tests/integration/test_stream_sentiment.py."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Coroutine, TypeVar

import grpc
import pytest
from grpc import aio

from rnn_sentiment.server.app import build_services
from rnn_sentiment.server.config import ServerConfig
from rnn_sentiment.server.metrics import ServerMetrics
from rnn_sentiment.server.repository import ModelRepository
from rnn_sentiment.server.servicer import SentimentServicer, ServingState
from rnn_sentiment.server.stream_sentiment import StreamExecutor, StreamSentimentService
from rnn_sentiment.server.stream_sessions import StreamLimits, StreamRegistry
from rnn_sentiment.server.validation import RequestLimits
from rnn_sentiment.v1 import sentiment_pb2 as pb
from rnn_sentiment.v1 import sentiment_pb2_grpc as pb_grpc
from tests.support import write_tiny_gru_and_lstm

T = TypeVar("T")
LIMIT_SECONDS = 30.0  # far above any scenario here: a lost answer fails the test instead of hanging it
MAX_CHUNK_CHARS = 100
MAX_STREAM_TOKENS = 40
TOKEN_LIMIT = 10  # the models read at most 10 tokens of a text: head_tail for tiny-gru (2 + 8), head for tiny-lstm
WORDS = "a good film , not a bad film . a film not good , a bad film not a good film . good bad a film".split()


def run_limited(main: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(main, LIMIT_SECONDS))


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_gru_and_lstm(tmp_path_factory.mktemp("stream-sentiment-models"))


@dataclass
class Served:
    stub: pb_grpc.SentimentServiceStub
    service: StreamSentimentService
    metrics: ServerMetrics

    def sample(self, name: str, model: str) -> float | None:
        return self.metrics.registry.get_sample_value(name, {"model": model})


@contextlib.asynccontextmanager
async def stream_server(models: Path, executor: StreamExecutor = StreamExecutor(backend="torch")
                        ) -> AsyncIterator[Served]:
    """The servicer with its StreamSentimentService over the models in `models`, on a loopback port."""
    server_config = ServerConfig(model_dir=str(models), default_model="tiny-gru", backend="torch", torch_threads=1,
                                 model_token_limits=f"tiny-gru={TOKEN_LIMIT}:head_tail,tiny-lstm={TOKEN_LIMIT}:head")
    metrics = ServerMetrics.create()
    repository = await asyncio.to_thread(ModelRepository.load, server_config, metrics)
    repository.start()
    state = ServingState()
    state.repository = repository
    limits = StreamLimits(max_streams=8, idle_seconds=0, max_stream_tokens=MAX_STREAM_TOKENS,
                          max_chunk_chars=MAX_CHUNK_CHARS)
    service = StreamSentimentService(StreamRegistry(limits, metrics), executor)
    server = aio.server()
    pb_grpc.add_SentimentServiceServicer_to_server(
        SentimentServicer(state, RequestLimits(64, 1000), service), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield Served(pb_grpc.SentimentServiceStub(channel), service, metrics)
    finally:
        await server.stop(0)
        await repository.close()


class OpenStream:
    """One StreamSentiment call driven message by message."""

    def __init__(self, stub: pb_grpc.SentimentServiceStub) -> None:
        self.call = stub.StreamSentiment(timeout=LIMIT_SECONDS)

    async def send(self, text: str, model: str = "", include_steps: bool = False) -> pb.StreamSentimentResponse:
        await self.call.write(pb.StreamSentimentRequest(text=text, model=model, include_steps=include_steps))
        return await self.call.read()

    async def close(self) -> list[pb.StreamSentimentResponse]:
        """Half-close: the responses left, up to the end of the call."""
        await self.call.done_writing()
        responses = []
        while (response := await self.call.read()) is not aio.EOF:
            responses.append(response)
        return responses

    async def error(self, text: str) -> aio.AioRpcError:
        """The status the stream ends with when it is sent `text`."""
        with pytest.raises(aio.AioRpcError) as caught:
            await self.send(text)
        return caught.value


def test_the_default_executor_is_the_servers_default_backend_and_threads() -> None:
    config = ServerConfig()
    assert (StreamExecutor().backend, StreamExecutor().threads) == (config.backend, config.resolved_torch_threads)


def test_an_executor_cannot_change_once_made() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        StreamExecutor().threads = 2  # type: ignore[misc]


def test_a_stream_batch_runs_in_one_onnx_runtime_run_whatever_predicts_onnx_max_batch(models: Path) -> None:
    # Predict splits its batches into runs of --onnx-max-batch texts; a stream batch (a word per
    # session) is cheaper per update in one run, so the server's streams do not take that setting.
    async def scenario() -> int:
        config = ServerConfig(model_dir=str(models), default_model="tiny-gru", backend="onnxruntime", torch_threads=1,
                              onnx_max_batch=4)
        services = await build_services(config)  # the server's own wiring of its stream service
        repository = await asyncio.to_thread(ModelRepository.load, config, services.metrics)
        repository.start()
        try:
            batcher = await services.sentiment._streams._batcher(repository.resolve("tiny-gru"))
            recurrence = batcher.stepper.recurrence
            assert recurrence is not None  # served on ONNX Runtime
            runs = []
            run = recurrence._run
            recurrence._run = lambda *args: runs.append(len(args[0])) or run(*args)  # type: ignore[method-assign]
            states = [batcher.start_state()] * 10
            answers = batcher.stepper.advance(states, [[word] for word in WORDS[:10]], [False] * 10)
            assert len(answers) == 10
            return len(runs)
        finally:
            await repository.close()

    assert run_limited(scenario()) == 1


def test_a_stream_closed_before_any_message_gets_one_final_answer_from_the_default_model(models: Path) -> None:
    async def main() -> list[pb.StreamSentimentResponse]:
        async with stream_server(models) as served:
            return await OpenStream(served.stub).close()

    [final] = run_limited(main())
    assert final.final and final.model == "tiny-gru" and final.model_version == "1"
    assert not final.HasField("prediction") and not final.steps  # no text: nothing read


def test_a_chunk_of_exactly_the_limit_is_read_and_one_character_more_refused(models: Path) -> None:
    async def main() -> tuple[pb.StreamSentimentResponse, aio.AioRpcError]:
        async with stream_server(models) as served:
            stream = OpenStream(served.stub)
            read = await stream.send("film " * (MAX_CHUNK_CHARS // 5))  # MAX_CHUNK_CHARS characters
            return read, await stream.error("a" * (MAX_CHUNK_CHARS + 1))

    read, error = run_limited(main())
    assert read.prediction.text_token_count == MAX_CHUNK_CHARS // 5
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"has {MAX_CHUNK_CHARS + 1} characters; the limit is {MAX_CHUNK_CHARS} per chunk" in error.details()


def test_a_stream_may_send_exactly_its_token_limit_and_no_token_more(models: Path) -> None:
    async def main() -> tuple[list[pb.StreamSentimentResponse], aio.AioRpcError]:
        async with stream_server(models) as served:
            full = OpenStream(served.stub)
            await full.send("a " * (MAX_STREAM_TOKENS - 1))
            await full.send("good ")
            answers = await full.close()
            over = OpenStream(served.stub)
            await over.send("a " * MAX_STREAM_TOKENS)
            return answers, await over.error("good ")

    answers, error = run_limited(main())
    assert [a.final for a in answers] == [True]
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert (f"has sent {MAX_STREAM_TOKENS + 1} tokens; the limit is {MAX_STREAM_TOKENS} per stream"
            in error.details())


def test_the_session_bytes_count_the_held_unfinished_word(models: Path) -> None:
    async def main() -> tuple[float | None, float | None, float | None]:
        async with stream_server(models) as served:
            stream = OpenStream(served.stub)
            await stream.send("a good ")
            state_only = served.sample("rnn_sentiment_stream_session_bytes", "tiny-gru")
            await stream.send("fil")  # no token completes: the state stays, three characters are held
            with_held = served.sample("rnn_sentiment_stream_session_bytes", "tiny-gru")
            await stream.close()
            return state_only, with_held, served.sample("rnn_sentiment_stream_session_bytes", "tiny-gru")

    state_only, with_held, after = run_limited(main())
    assert state_only is not None and state_only > 0
    assert with_held == state_only + 3
    assert after == 0


def test_each_update_is_timed_from_its_message_to_its_answer(models: Path) -> None:
    async def main() -> tuple[float | None, float | None, float]:
        async with stream_server(models) as served:
            started = time.perf_counter()
            stream = OpenStream(served.stub)
            await stream.send("a good ")
            await stream.send("film")
            await stream.close()
            elapsed = time.perf_counter() - started
            count = served.sample("rnn_sentiment_stream_update_seconds_count", "tiny-gru")
            return count, served.sample("rnn_sentiment_stream_update_seconds_sum", "tiny-gru"), elapsed

    count, seconds, elapsed = run_limited(main())
    assert count == 3  # two chunks and the final answer
    assert seconds is not None and 0 <= seconds <= elapsed


def test_an_unexpected_error_ends_the_stream_with_internal_and_the_details_only_in_the_log(
        models: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> tuple[aio.AioRpcError, pb.StreamSentimentResponse]:
        # The stream stepper cannot be built (no such backend): a failure no caller can cause.
        async with stream_server(models, executor=StreamExecutor(backend="no-such-backend")) as served:
            error = await OpenStream(served.stub).error("a good ")
            # The cause goes away (as a transient failure does): the next stream builds its stepper again.
            served.service._executor = StreamExecutor(backend="torch")
            return error, await OpenStream(served.stub).send("a good ")

    with caplog.at_level(logging.ERROR, logger="rnn_sentiment.server.stream_sentiment"):
        error, next_stream = run_limited(main())
    assert error.code() == grpc.StatusCode.INTERNAL
    assert error.details() == "internal error; the server logged the details"
    [logged] = [r for r in caplog.records if r.getMessage() == "internal error in a stream"]
    assert logged.exc_info is not None and "no-such-backend" in str(logged.exc_info[1])
    assert next_stream.prediction.token_count == 2


def read_positions(count: int, model: str) -> range | list[int]:
    """The token positions Predict reads of a text of `count` tokens."""
    if count <= TOKEN_LIMIT:
        return range(count)
    return list(range(TOKEN_LIMIT)) if model == "tiny-lstm" else [0, 1, *range(count - 8, count)]


@pytest.mark.parametrize("model", ["tiny-gru", "tiny-lstm"])
@pytest.mark.parametrize("sizes", [
    [1, 3, 2, 9, 1],  # the head's last token arrives with others; a chunk past the limit longer than the tail
    [2, 1, 7, 1, 12],  # a chunk ends exactly at the head, the next starts the tail; one at the limit exactly
    [12, 1, 9],  # one chunk holds the head, the tail and more
])
def test_every_update_is_predict_on_the_text_so_far_with_the_steps_of_the_tokens_it_reads(
        models: Path, model: str, sizes: list[int]) -> None:
    chunks, start = [], 0
    for size in sizes:
        chunks.append(WORDS[start:start + size])
        start += size

    async def main() -> tuple[list[pb.StreamSentimentResponse], list[pb.Prediction]]:
        async with stream_server(models) as served:
            stream = OpenStream(served.stub)
            updates = [await stream.send(" ".join(chunk) + " ", model=model if i == 0 else "", include_steps=True)
                       for i, chunk in enumerate(chunks)]
            prefixes = [" ".join(WORDS[:end]) for end in itertools.accumulate(sizes)]
            expected = await served.stub.Predict(pb.PredictRequest(texts=prefixes, model=model))
            return updates, list(expected.predictions)

    updates, expected = run_limited(main())
    sent = 0
    for index, (update, whole) in enumerate(zip(updates, expected, strict=True)):
        assert update.prediction.probabilities == pytest.approx(whole.probabilities, abs=1e-5), index
        assert (update.prediction.token_count, update.prediction.truncated) == (whole.token_count, whole.truncated)
        chunk_positions = range(sent, sent + sizes[index])
        sent += sizes[index]
        read = [WORDS[p] for p in read_positions(sent, model) if p in chunk_positions]
        assert [step.token for step in update.steps] == read, index
