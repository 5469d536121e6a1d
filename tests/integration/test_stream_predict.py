"""StreamPredict on a real server: Predict's answers, in order, errors per message, drain."""

from __future__ import annotations

import queue
import signal
import time
from typing import Iterator

import grpc
import pytest

from rnn_sentiment.client import SentimentClient
from rnn_sentiment.v1 import sentiment_pb2 as pb
from rnn_sentiment.v1 import sentiment_pb2_grpc as pb_grpc
from tests.scrape import idle_scrape, sample, scrape
from tests.support import ServerProcess

TEXTS = [
    "a warm, funny and beautifully acted film",
    "a dull , lifeless and painfully boring movie",
    "the plot is dull but the acting is wonderful",
    "not bad at all",
]
STREAM_PREDICT = {"grpc_service": "rnn_sentiment.v1.SentimentService", "grpc_method": "StreamPredict",
                  "grpc_type": "bidi_stream"}
NO_RETRY = [("grpc.enable_retries", 0)]


def message(text: str | list[str], id: str, model: str = "") -> pb.StreamPredictRequest:
    texts = [text] if isinstance(text, str) else text
    return pb.StreamPredictRequest(id=id, request=pb.PredictRequest(texts=texts, model=model))


@pytest.fixture
def stub(server: ServerProcess) -> Iterator[pb_grpc.SentimentServiceStub]:
    with grpc.insecure_channel(server.target, options=NO_RETRY) as channel:
        yield pb_grpc.SentimentServiceStub(channel)


def test_each_answer_equals_unary_predict_in_request_order(
    stub: pb_grpc.SentimentServiceStub, client: SentimentClient
) -> None:
    requests = [message(TEXTS[i % len(TEXTS)], id=str(i)) for i in range(200)]
    # The generator is drained by gRPC ahead of the answers: all 200 may be in flight at once.
    responses = list(stub.StreamPredict(iter(requests), timeout=60))
    assert [r.id for r in responses] == [str(i) for i in range(200)]
    unary = {text: client.predict(text).predictions[0] for text in TEXTS}
    for i, response in enumerate(responses):
        assert response.WhichOneof("outcome") == "response"
        (prediction,) = response.response.predictions
        expected = unary[TEXTS[i % len(TEXTS)]]
        assert prediction.label == expected.label
        assert prediction.probabilities == pytest.approx(expected.probabilities, abs=1e-5)
        assert prediction.token_count == expected.token_count
        assert response.response.model == "sst2-gru"


def test_a_bad_message_gets_the_unary_error_and_the_stream_goes_on(stub: pb_grpc.SentimentServiceStub) -> None:
    requests = [
        message(TEXTS[0], id="ok-1"),
        message(["fine", " "], id="blank"),
        message(TEXTS[1], id="unknown-model", model="no-such-model"),
        pb.StreamPredictRequest(id="no-request"),
        message(["x" * 1001], id="too-long"),
        message(TEXTS[1], id="ok-2"),
    ]
    responses = {r.id: r for r in stub.StreamPredict(iter(requests), timeout=30)}
    assert responses["ok-1"].response.predictions[0].label == "positive"
    assert responses["ok-2"].response.predictions[0].label == "negative"

    blank = responses["blank"].error
    assert blank.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert [v.field for v in blank.field_violations] == ["request.texts[1]"]
    assert "non-whitespace" in blank.field_violations[0].description
    assert "texts[1]" in blank.message

    assert responses["unknown-model"].error.code == grpc.StatusCode.NOT_FOUND.value[0]
    assert "no-such-model" in responses["unknown-model"].error.message
    assert [v.field for v in responses["no-request"].error.field_violations] == ["request.texts"]
    too_long = responses["too-long"].error
    assert too_long.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "limit is 1000" in too_long.field_violations[0].description


def test_undecodable_bytes_get_an_error_response_and_the_stream_goes_on(server: ServerProcess) -> None:
    good = message(TEXTS[0], id="after").SerializeToString()
    garbage = b"\x0a\xff\xff\xff\xff\x0f"  # field 1, length-delimited, with a length past the end
    with grpc.insecure_channel(server.target, options=NO_RETRY) as channel:
        call = channel.stream_stream(
            "/rnn_sentiment.v1.SentimentService/StreamPredict",
            request_serializer=lambda raw: raw, response_deserializer=pb.StreamPredictResponse.FromString,
        )
        responses = list(call(iter([garbage, good]), timeout=30))
    assert len(responses) == 2
    assert responses[0].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "could not parse" in responses[0].error.message
    assert responses[1].id == "after" and responses[1].response.predictions[0].label == "positive"


def test_the_request_id_is_echoed_and_the_stream_counted_as_one_call(
    server: ServerProcess, stub: pb_grpc.SentimentServiceStub
) -> None:
    before = idle_scrape(server)
    call = stub.StreamPredict(iter([message(t, id=str(i)) for i, t in enumerate(TEXTS)]), timeout=30,
                              metadata=[("x-request-id", "stream-predict-test-1")])
    assert len(list(call)) == len(TEXTS)
    assert ("x-request-id", "stream-predict-test-1") in call.initial_metadata()
    deadline = time.monotonic() + 10
    while sample(after := scrape(server), "grpc_server_handled_total", **STREAM_PREDICT, grpc_code="OK") \
            - sample(before, "grpc_server_handled_total", **STREAM_PREDICT, grpc_code="OK") < 1:
        assert time.monotonic() < deadline, after
        time.sleep(0.05)
    assert sample(after, "grpc_server_started_total", **STREAM_PREDICT) - \
        sample(before, "grpc_server_started_total", **STREAM_PREDICT) == 1
    # The texts went through Predict's model path and its metrics.
    assert sample(after, "rnn_sentiment_tokens_total") - sample(before, "rnn_sentiment_tokens_total") >= 20


def test_drain_refuses_new_streams_and_ends_open_ones_with_unavailable_after_the_grace() -> None:
    with ServerProcess(extra_args=["--drain-seconds", "2", "--grace-seconds", "3"]) as server, \
            grpc.insecure_channel(server.target, options=NO_RETRY) as channel:
        stub = pb_grpc.SentimentServiceStub(channel)
        outbox: queue.Queue[pb.StreamPredictRequest | None] = queue.Queue()
        call = stub.StreamPredict(iter(outbox.get, None), timeout=60)
        outbox.put(message(TEXTS[0], id="before"))
        assert next(call).id == "before"

        server.signal(signal.SIGTERM)
        refused = refused_stream(channel)
        assert refused.code() == grpc.StatusCode.UNAVAILABLE, refused
        # The open stream is still served while the server drains...
        outbox.put(message(TEXTS[1], id="during"))
        assert next(call).response.predictions[0].label == "negative"
        # ...and ends UNAVAILABLE (which the SDK retries elsewhere) once the grace has passed.
        with pytest.raises(grpc.RpcError) as ended:
            next(call)
        assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
        outbox.put(None)
        assert server.stop() == 0


def refused_stream(channel: grpc.Channel) -> grpc.RpcError:
    stub = pb_grpc.SentimentServiceStub(channel)
    deadline = time.monotonic() + 10
    while True:  # SIGTERM is handled a moment after it is sent: until the refusals start
        try:
            list(stub.StreamPredict(iter([message(TEXTS[0], id="new")]), timeout=10))
        except grpc.RpcError as error:
            return error
        assert time.monotonic() < deadline, "a new stream was still served 10 s after SIGTERM"


