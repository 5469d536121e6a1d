"""server/servicer.py in this process: ServingState's refusals, counted and held while the drain
parks them until the release or just before the caller's deadline; and SentimentServicer on a
real grpc.aio server over a real repository of tiny untrained checkpoints: the series each call
moves, both streams' answers, which model is the default. The drain itself, on a real server, is
in tests/integration/test_lifecycle.py."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Coroutine, TypeVar

import pytest
from grpc import aio

from rnn_sentiment.model.inference import encode_texts
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
LIMIT_SECONDS = 10.0  # far above any scenario here: a refusal never answered fails the test instead of hanging it


def run_limited(main: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(main, LIMIT_SECONDS))


def test_a_refusal_is_counted_and_answered_at_once_while_nothing_is_parked() -> None:
    async def main() -> ServingState:
        state = ServingState()
        state.release_refusals()  # nothing parked: nothing to release
        before = time.monotonic()
        await state.before_refusal(None)
        await state.before_refusal(60.0)
        assert before <= state.last_refused <= time.monotonic()
        return state

    assert run_limited(main()).refused == 2


def test_a_parked_refusal_waits_for_the_release_while_its_deadline_allows() -> None:
    """Released after 0.3 s of a caller's 1 s: answered at the release, not earlier (timers of
    one event loop fire in the order of their times, so the order below is not a race)."""

    async def main() -> list[str]:
        state = ServingState()
        state.park_refusals()
        events: list[str] = []

        def release() -> None:
            events.append("released")
            state.release_refusals()

        asyncio.get_running_loop().call_later(0.3, release)
        await state.before_refusal(1.0)
        events.append("answered")
        return events

    assert run_limited(main()) == ["released", "answered"]


def test_a_parked_refusal_without_a_deadline_waits_for_the_release() -> None:
    async def main() -> list[str]:
        state = ServingState()
        state.park_refusals()
        events: list[str] = []
        asyncio.get_running_loop().call_later(0.2, lambda: (events.append("released"), state.release_refusals()))
        await state.before_refusal(None)
        events.append("answered")
        return events

    assert run_limited(main()) == ["released", "answered"]


def test_a_parked_refusal_never_released_is_answered_before_its_deadline_without_an_error() -> None:
    async def main() -> tuple[ServingState, list[str]]:
        state = ServingState()
        state.park_refusals()
        events: list[str] = []
        # The caller's deadline comes 0.5 s after the last possible answer (1.0 - margin).
        asyncio.get_running_loop().call_later(1.5, events.append, "deadline")
        await state.before_refusal(1.0)
        events.append("answered")
        return state, events

    state, events = run_limited(main())
    assert events == ["answered"] and state.refused == 1


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_gru_and_lstm(tmp_path_factory.mktemp("servicer-models"))


@dataclass
class Served:
    stub: pb_grpc.SentimentServiceStub
    repository: ModelRepository
    metrics: ServerMetrics

    def sample(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0


@contextlib.asynccontextmanager
async def serving(models: Path) -> AsyncIterator[Served]:
    """The servicer over the models in `models` (default tiny-gru), on a loopback port."""
    config = ServerConfig(model_dir=str(models), default_model="tiny-gru", backend="torch", torch_threads=1)
    metrics = ServerMetrics.create()
    repository = await asyncio.to_thread(ModelRepository.load, config, metrics)
    repository.start()
    state = ServingState()
    state.repository = repository
    streams = StreamSentimentService(
        StreamRegistry(StreamLimits(max_streams=4, idle_seconds=0, max_stream_tokens=100, max_chunk_chars=100), metrics),
        StreamExecutor(backend="torch"))
    server = aio.server()
    pb_grpc.add_SentimentServiceServicer_to_server(SentimentServicer(state, RequestLimits(64, 1000), streams), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield Served(pb_grpc.SentimentServiceStub(channel), repository, metrics)
    finally:
        await server.stop(0)
        await repository.close()


def test_a_prediction_counts_its_tokens_unknown_tokens_texts_and_labels(models: Path) -> None:
    texts = ["a good film", "zzqxv blorf film", "a bad , bad film"]

    async def main() -> None:
        async with serving(models) as served:
            response = await served.stub.Predict(pb.PredictRequest(texts=texts), timeout=LIMIT_SECONDS)
            model = served.repository.resolve("")
            encoded = encode_texts(texts, model.loaded.vocab, model.max_tokens, model.truncation)
            unknown = sum(e.unknown_count for e in encoded)
            assert unknown > 0 and encoded[0].unknown_count == 0
            labels = [p.label for p in response.predictions]
            assert served.sample("rnn_sentiment_tokens_total", model="tiny-gru") == sum(len(e.ids) for e in encoded)
            assert served.sample("rnn_sentiment_unknown_tokens_total", model="tiny-gru") == unknown
            assert served.sample("rnn_sentiment_text_tokens_count", model="tiny-gru") == len(texts)
            assert served.sample("rnn_sentiment_text_tokens_sum", model="tiny-gru") == sum(len(e.ids) for e in encoded)
            for label in set(labels):
                assert served.sample("rnn_sentiment_predictions_total", model="tiny-gru", label=label) == labels.count(label)

    run_limited(main())


def test_a_text_of_known_words_adds_no_unknown_tokens(models: Path) -> None:
    async def main() -> None:
        async with serving(models) as served:
            await served.stub.Predict(pb.PredictRequest(texts=["a good film"]), timeout=LIMIT_SECONDS)
            assert served.sample("rnn_sentiment_unknown_tokens_total", model="tiny-gru") == 0
            assert served.sample("rnn_sentiment_tokens_total", model="tiny-gru") == 3

    run_limited(main())


def test_a_trace_counts_its_model_time_tokens_and_label(models: Path) -> None:
    async def main() -> None:
        async with serving(models) as served:
            trace = await served.stub.Trace(pb.TraceRequest(text="a good film", model="tiny-lstm"),
                                            timeout=LIMIT_SECONDS)
            assert served.sample("rnn_sentiment_model_seconds_count", model="tiny-lstm", kind="trace") == 1
            assert served.sample("rnn_sentiment_tokens_total", model="tiny-lstm") == 3
            assert served.sample("rnn_sentiment_predictions_total", model="tiny-lstm",
                                 label=trace.prediction.label) == 1

    run_limited(main())


def test_model_info_and_the_list_mark_only_the_default_model(models: Path) -> None:
    async def main() -> None:
        async with serving(models) as served:
            gru = await served.stub.GetModelInfo(pb.GetModelInfoRequest(model="tiny-gru"), timeout=LIMIT_SECONDS)
            lstm = await served.stub.GetModelInfo(pb.GetModelInfoRequest(model="tiny-lstm"), timeout=LIMIT_SECONDS)
            assert (gru.is_default, lstm.is_default) == (True, False)
            listed = await served.stub.ListModels(pb.ListModelsRequest(), timeout=LIMIT_SECONDS)
            assert {m.name: m.is_default for m in listed.models} == {"tiny-gru": True, "tiny-lstm": False}

    run_limited(main())


def test_both_streams_answer_every_message(models: Path) -> None:
    async def requests() -> AsyncIterator[pb.StreamPredictRequest]:
        for i, text in enumerate(["a good film", "a bad film"]):
            yield pb.StreamPredictRequest(id=str(i), request=pb.PredictRequest(texts=[text]))

    async def main() -> None:
        async with serving(models) as served:
            answers = [a async for a in served.stub.StreamPredict(requests(), timeout=LIMIT_SECONDS)]
            assert [a.id for a in answers] == ["0", "1"]
            assert all(len(a.response.predictions) == 1 for a in answers)
            call = served.stub.StreamSentiment(timeout=LIMIT_SECONDS)
            await call.write(pb.StreamSentimentRequest(text="a good"))
            first = await call.read()
            assert first is not aio.EOF and first.model == "tiny-gru"
            await call.done_writing()
            final = await call.read()
            assert final is not aio.EOF and final.model == "tiny-gru", "a half-closed stream ends with its final answer"

    run_limited(main())
