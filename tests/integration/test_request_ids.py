"""x-request-id is echoed back and lands in the log line of a failed call."""

from __future__ import annotations

import json
import re

import grpc

from rnn_sentiment.v1 import sentiment_pb2 as pb
from rnn_sentiment.v1 import sentiment_pb2_grpc as pb_grpc
from tests.support import ServerProcess


def test_request_id_is_echoed_and_logged() -> None:
    # The access line is written just after the status is sent: read the log once stopped.
    server = ServerProcess(extra_args=["--log-format", "json"], keep_log=True).start()
    try:
        with grpc.insecure_channel(server.target) as channel:
            stub = pb_grpc.SentimentServiceStub(channel)
            _, call = stub.Predict.with_call(
                pb.PredictRequest(texts=["good"]), metadata=(("x-request-id", "req-123"),), timeout=30
            )
            assert ("x-request-id", "req-123") in call.initial_metadata()
            _, plain = stub.Predict.with_call(pb.PredictRequest(texts=["good"]), timeout=30)
            assert all(key != "x-request-id" for key, _ in plain.initial_metadata())
            try:
                stub.Predict(pb.PredictRequest(texts=[" "]), metadata=(("x-request-id", "bad-456"),), timeout=30)
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert ("x-request-id", "bad-456") in error.initial_metadata()
            else:
                raise AssertionError("a blank text must fail")
            try:  # no id sent: the server makes one up for the log line
                stub.Predict(pb.PredictRequest(texts=["\t"]), timeout=30)
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        assert server.stop() == 0
    log = server.log()
    assert server.log_path is not None
    server.log_path.unlink()
    failures = [json.loads(line) for line in log.splitlines() if line.startswith("{") and '"rpc"' in line]
    assert any(r["request_id"] == "bad-456" and r["code"] == "INVALID_ARGUMENT" for r in failures), log
    made_up = [r["request_id"] for r in failures if r["request_id"] != "bad-456"]
    assert len(made_up) == 1 and re.fullmatch(r"[0-9a-f]{32}", made_up[0]), log
