"""Trace is bounded, abandoned at its deadline and isolated from Predict, on a real server.

The heaviest trace the limits allow costs seconds of model-thread CPU; a caller who gives it half
a second gets DEADLINE_EXCEEDED and the model thread is free again right after (before the fix it
ran every queued trace to the end, expired or not, and Predict waited behind them all). Options
over the limits are refused up front, naming the field.
"""

from __future__ import annotations

from typing import Iterator

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from rnn_sentiment.model.trace import MAX_INTEGRATED_GRADIENTS_TOKEN_STEPS
from rnn_sentiment.v1 import sentiment_pb2 as pb
from rnn_sentiment.v1 import sentiment_pb2_grpc as pb_grpc
from tests.support import ServerProcess

MODEL = "sst2-gru"
EVERY_METHOD = [pb.ATTRIBUTION_METHOD_PREFIX, pb.ATTRIBUTION_METHOD_GRADIENT_X_INPUT,
                pb.ATTRIBUTION_METHOD_INTEGRATED_GRADIENTS, pb.ATTRIBUTION_METHOD_OCCLUSION]


def words(count: int) -> str:
    """A text of exactly `count` tokens."""
    return " ".join((["so", "good", "but", "bad"] * count)[:count])


# Everything at once on a 64-token text: every option is within its limit there.
HEAVIEST = pb.TraceRequest(text=words(64), model=MODEL, attributions=EVERY_METHOD, include_memory_profile=True,
                           integrated_gradients_steps=MAX_INTEGRATED_GRADIENTS_TOKEN_STEPS // 64)


@pytest.fixture(scope="module")
def stub() -> Iterator[pb_grpc.SentimentServiceStub]:
    with ServerProcess(extra_args=["--max-text-chars", "5000"]) as server, \
            grpc.insecure_channel(server.target) as channel:
        yield pb_grpc.SentimentServiceStub(channel)


def violations_of(error: grpc.RpcError) -> dict[str, str]:
    status = rpc_status.from_call(error)
    assert status is not None
    found: dict[str, str] = {}
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            found.update({v.field: v.description for v in bad_request.field_violations})
    return found


def test_heavy_traces_past_their_deadline_stop_and_predict_answers_soon_after(stub) -> None:
    # Three at once: before the fix each ran to its end (seconds each) behind the others.
    calls = [stub.Trace.future(HEAVIEST, timeout=0.5) for _ in range(3)]
    codes = [call.exception().code() if call.exception() else grpc.StatusCode.OK for call in calls]
    assert set(codes) <= {grpc.StatusCode.DEADLINE_EXCEEDED}, codes
    # "Eventually answers": a few tries of one second each, far less than the traces' work.
    answered = None
    for _ in range(5):
        try:
            answered = stub.Predict(pb.PredictRequest(texts=["a good film"], model=MODEL), timeout=1.0)
            break
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED, error
    assert answered is not None and answered.predictions[0].label in ("positive", "negative")


def test_the_heaviest_allowed_trace_completes_with_time_to_do_it(stub) -> None:
    response = stub.Trace(HEAVIEST, timeout=300)
    assert len(response.steps) == 64 and response.HasField("memory_profile")
    assert [a.method for a in response.attributions] == EVERY_METHOD


@pytest.mark.parametrize("request_, field", [
    (pb.TraceRequest(text=words(65), model=MODEL, include_memory_profile=True), "include_memory_profile"),
    (pb.TraceRequest(text=words(128), model=MODEL, attributions=[pb.ATTRIBUTION_METHOD_INTEGRATED_GRADIENTS],
                     integrated_gradients_steps=MAX_INTEGRATED_GRADIENTS_TOKEN_STEPS // 128 + 1),
     "integrated_gradients_steps"),
    (pb.TraceRequest(text="good", model=MODEL, attributions=[99] * 100_000), "attributions"),
])
def test_a_trace_over_the_limits_is_refused_naming_the_field(stub, request_, field) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        stub.Trace(request_, timeout=30)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = violations_of(raised.value)
    assert list(violations) == [field], violations
    assert len(raised.value.details()) < 1024
    # The server keeps serving.
    assert stub.Predict(pb.PredictRequest(texts=["fine"], model=MODEL), timeout=30).predictions
