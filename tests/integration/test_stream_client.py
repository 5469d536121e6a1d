"""The SDK's streams on a real server: stream(), stream_texts(), predict_stream(), and failover."""

from __future__ import annotations

import asyncio
import itertools
import signal
import time
from typing import AsyncIterator, Iterator

import pytest

from rnn_sentiment.client import AsyncSentimentClient, SentimentClient, SentimentError
from tests.support import ServerProcess

TEXT = "the plot is dull but the acting is wonderful"
CHUNKS = ["the plot is du", "ll but the ", "acting is wonder", "ful"]  # two chunks end mid-word
TEXTS = ["a warm, funny and beautifully acted film", "a dull , lifeless and painfully boring movie",
         TEXT, "not bad at all", "i kept checking my watch"]


def assert_same_prediction(streamed, unary) -> None:  # type: ignore[no-untyped-def]
    assert streamed.label == unary.label
    assert streamed.probabilities == pytest.approx(unary.probabilities, abs=1e-5)
    assert streamed.token_count == unary.token_count


def test_a_stream_gives_the_running_sentiment_and_ends_with_predict_on_the_whole_text(client: SentimentClient) -> None:
    with client.stream(include_steps=True) as stream:
        updates = [stream.send(chunk) for chunk in CHUNKS]
        final = stream.close()
    assert [u.prediction.token_count for u in updates] == [3, 6, 8, 8]  # "du" and "wonder" wait
    assert [s.token for u in updates for s in u.steps] == "the plot is dull but the acting is".split()
    assert [s.token for s in final.steps] == ["wonderful"]
    assert final.final and not any(u.final for u in updates)
    assert final.model == "sst2-gru" and final.model_version
    assert_same_prediction(final.prediction, client.predict(TEXT).predictions[0])
    # Each update is what Predict says of the text read so far.
    assert_same_prediction(updates[1].prediction, client.predict("the plot is dull but the").predictions[0])


def test_a_stream_refusal_raises_the_sdk_error(client: SentimentClient) -> None:
    with pytest.raises(SentimentError) as refused, client.stream(model="no-such-model") as stream:
        stream.send("good")
    assert refused.value.code == "NOT_FOUND"
    with client.stream() as stream:
        update = stream.send("")
        assert update.prediction is None  # nothing read yet
        with pytest.raises(SentimentError) as bad:
            stream.send("good")
            stream.send("x" * 1001)
        assert bad.value.code == "INVALID_ARGUMENT" and "text" in bad.value.field_violations


def test_the_async_stream_and_its_async_iterator_form(server: ServerProcess, client: SentimentClient) -> None:
    async def chunks() -> AsyncIterator[str]:
        for chunk in CHUNKS:
            yield chunk

    async def run() -> tuple[list, list]:  # type: ignore[type-arg]
        async with AsyncSentimentClient(server.target) as aclient:
            async with aclient.stream() as stream:
                sent = [await stream.send(chunk) for chunk in CHUNKS] + [await stream.close()]
            iterated = [u async for u in aclient.stream_texts(chunks())]
        return sent, iterated

    sent, iterated = asyncio.run(run())
    assert [u.prediction.token_count for u in sent] == [3, 6, 8, 8, 9]
    assert [u.final for u in iterated] == [False] * 4 + [True]
    assert_same_prediction(iterated[-1].prediction, sent[-1].prediction)
    assert_same_prediction(sent[-1].prediction, client.predict(TEXT).predictions[0])


def test_predict_stream_yields_predict_answers_in_order(client: SentimentClient) -> None:
    texts = [TEXTS[i % len(TEXTS)] for i in range(150)]
    unary = {t: client.predict(t).predictions[0] for t in TEXTS}
    for batch in (1, 4):
        streamed = list(client.predict_stream(texts, batch=batch))
        assert len(streamed) == len(texts)
        for text, prediction in zip(texts, streamed):
            assert_same_prediction(prediction, unary[text])


def test_predict_stream_reads_its_texts_lazily(client: SentimentClient) -> None:
    endless = (TEXTS[i % len(TEXTS)] for i in itertools.count())
    first = list(itertools.islice(client.predict_stream(endless), 300))
    assert len(first) == 300  # an endless iterable is fine: at most 64 requests run ahead


def test_predict_stream_raises_for_a_bad_text_as_predict_would(client: SentimentClient) -> None:
    with pytest.raises(SentimentError) as unary:
        client.predict(["fine", " "])
    streamed = client.predict_stream(["good", "fine", "fine", " ", "bad"], batch=2)
    assert next(streamed).label == "positive"
    with pytest.raises(SentimentError) as raised:
        list(streamed)
    assert raised.value.code == unary.value.code == "INVALID_ARGUMENT"
    assert raised.value.field_violations == unary.value.field_violations == {
        "texts[1]": unary.value.field_violations["texts[1]"]}


def test_async_predict_stream(server: ServerProcess, client: SentimentClient) -> None:
    async def texts() -> AsyncIterator[str]:
        for i in range(40):
            yield TEXTS[i % len(TEXTS)]

    async def run() -> tuple[list, SentimentError]:  # type: ignore[type-arg]
        async with AsyncSentimentClient(server.target) as aclient:
            streamed = [p async for p in aclient.predict_stream(texts(), batch=3)]
            with pytest.raises(SentimentError) as refused:
                [p async for p in aclient.predict_stream(["good", " ", "bad"])]
            return streamed, refused.value

    streamed, refused = asyncio.run(run())
    assert [p.label for p in streamed] == [client.predict(TEXTS[i % len(TEXTS)]).predictions[0].label
                                           for i in range(40)]
    assert refused.code == "INVALID_ARGUMENT" and list(refused.field_violations) == ["texts[0]"]


@pytest.fixture
def two_servers() -> Iterator[tuple[ServerProcess, ServerProcess]]:
    # Short drain and grace: the test waits until the drained server has ended the stream and exited.
    with ServerProcess(extra_args=["--grace-seconds", "1", "--drain-seconds", "1"]) as first, \
            ServerProcess(extra_args=["--grace-seconds", "1", "--drain-seconds", "1"]) as second:
        yield first, second


def test_a_drained_server_mid_stream_is_invisible_to_the_caller(two_servers: tuple[ServerProcess, ServerProcess]) -> None:
    first, second = two_servers
    # gRPC's own round robin over both servers: a reopened stream lands on the live one.
    target = f"ipv4:{first.target},{second.target}"
    with SentimentClient(target, options=[("grpc.lb_policy_name", "round_robin")]) as client:
        expected = client.predict(TEXT).predictions[0]
        with client.stream() as stream:
            stream.send(CHUNKS[0])
            stream.send(CHUNKS[1])
            serving = serving_stream(first, second)
            serving.signal(signal.SIGTERM)
            assert serving.process.wait(30) == 0  # drained: the open stream was ended UNAVAILABLE
            updates = [stream.send(chunk) for chunk in CHUNKS[2:]]
            final = stream.close()
        assert stream.reopened >= 1
    assert [u.prediction.token_count for u in updates] == [8, 8]
    assert_same_prediction(final.prediction, expected)


def test_the_async_stream_fails_over_too(two_servers: tuple[ServerProcess, ServerProcess]) -> None:
    first, second = two_servers
    target = f"ipv4:{first.target},{second.target}"

    async def run() -> tuple:  # type: ignore[type-arg]
        async with AsyncSentimentClient(target, options=[("grpc.lb_policy_name", "round_robin")]) as client:
            expected = (await client.predict(TEXT)).predictions[0]
            async with client.stream() as stream:
                await stream.send(CHUNKS[0])
                await stream.send(CHUNKS[1])
                serving = serving_stream(first, second)
                serving.signal(signal.SIGTERM)
                assert await asyncio.to_thread(serving.process.wait, 30) == 0
                updates = [await stream.send(chunk) for chunk in CHUNKS[2:]]
                final = await stream.close()
            return expected, updates, final, stream.reopened

    expected, updates, final, reopened = asyncio.run(run())
    assert reopened >= 1
    assert [u.prediction.token_count for u in updates] == [8, 8]
    assert_same_prediction(final.prediction, expected)


def test_a_stream_the_server_ended_as_idle_is_reopened_on_the_next_chunk() -> None:
    # --max-text-chars 1000: the lowest per-chunk limit a replay is cut to fit (client/stream_core.py).
    with ServerProcess(extra_args=["--stream-idle-seconds", "1", "--max-text-chars", "1000"]) as server, \
            SentimentClient(server.target) as client:
        expected = client.predict(TEXT).predictions[0]
        with client.stream() as stream:
            stream.send(CHUNKS[0])
            stream.send(CHUNKS[1])
            # The caller pauses (here: until the server has ended the stream as idle).
            deadline = time.monotonic() + 30
            while open_streams(server) > 0:
                assert time.monotonic() < deadline, "the idle stream was not ended"
                time.sleep(0.1)
            updates = [stream.send(chunk) for chunk in CHUNKS[2:]]
            final = stream.close()
        assert stream.reopened == 1
        assert [u.prediction.token_count for u in updates] == [8, 8]
        assert_same_prediction(final.prediction, expected)
        with pytest.raises(SentimentError) as own_deadline, client.stream(timeout=30) as bounded:
            bounded.send(CHUNKS[0])
            while open_streams(server) > 0:
                time.sleep(0.1)
            bounded.send(CHUNKS[1])  # a stream with its own deadline is not reopened
        assert own_deadline.value.code == "DEADLINE_EXCEEDED" and "idle" in own_deadline.value.message
        # A text longer than the server takes in one chunk, sent in small chunks, is replayed in
        # pieces the server accepts.
        with client.stream() as long_stream:
            for _ in range(60):
                long_stream.send("a warm , funny film ")  # 5 tokens, 1,200 characters in all
            while open_streams(server) > 0:
                time.sleep(0.1)
            assert long_stream.send("ok ").prediction.text_token_count == 301  # every token read once
        assert long_stream.reopened == 1


def open_streams(server: ServerProcess) -> float:
    """rnn_sentiment_streams_active summed over models, from the server's /metrics."""
    import urllib.request

    with urllib.request.urlopen(server.metrics_url, timeout=10) as response:
        return sum(float(line.rsplit(" ", 1)[1]) for line in response.read().decode().splitlines()
                   if line.startswith("rnn_sentiment_streams_active{"))


def serving_stream(*servers: ServerProcess) -> ServerProcess:
    """The server whose /metrics counts an open stream (rnn_sentiment_streams_active)."""
    for server in servers:
        if open_streams(server) > 0:
            return server
    raise AssertionError("no server reports an open stream")


def test_predict_stream_keeps_64_requests_ahead_of_the_answers_and_no_more(client: SentimentClient) -> None:
    # SentimentClient.predict_stream: texts are read lazily, at most 64 requests ahead of the answers.
    pulled = 0

    def texts() -> Iterator[str]:
        nonlocal pulled
        for i in itertools.count():
            pulled += 1
            yield TEXTS[i % len(TEXTS)]

    stream = client.predict_stream(texts())
    assert next(stream).label  # one answer taken: 65 requests may be sent, the 66th text waits
    deadline = time.monotonic() + 30
    while pulled < 66 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # time enough to read further, were it allowed to
    assert pulled == 66
    stream.close()  # type: ignore[attr-defined]
