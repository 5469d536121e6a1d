"""x-request-id: a safe one is echoed and logged; anything else is replaced, never echoed, and
cannot forge or colour a log line (text format, the default)."""

from __future__ import annotations

import json
import re

import grpc

from rnn_sentiment.v1 import sentiment_pb2 as pb
from rnn_sentiment.v1 import sentiment_pb2_grpc as pb_grpc
from tests.raw_http2 import raw_unary_call
from tests.support import ServerProcess

PREDICT = "/rnn_sentiment.v1.SentimentService/Predict"
SERVER_MADE = re.compile(r"[0-9a-f]{32}")
FORGED_PREFIX = "2026-01-01 00:00:00,000"


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


def raw_http2_predict(port: int, request: bytes, request_id: bytes) -> tuple[int, dict[str, str]]:
    """One Predict over a bare HTTP/2 connection, `request_id` sent byte for byte; returns the
    grpc-status and the response's headers."""
    headers = raw_unary_call(port, PREDICT, request, [(b"x-request-id", request_id)])
    return int(headers.get("grpc-status", "-1")), headers


def test_hostile_request_ids_are_replaced_never_echoed_and_cannot_forge_log_lines() -> None:
    raw_ids = [  # only a raw HTTP/2 client sends these
        f"qqzz\n{FORGED_PREFIX} ERROR rnn_sentiment.server: forged".encode(),
        b"qqzz\x1b[2J\x1b[31mred",
        b"qqzz\x00def",
    ]
    # A gRPC client sends these; 7,000 characters is about the most that fits gRPC's default 8 KiB
    # limit on a request's metadata along with the usual headers.
    grpc_ids = ['x code=OK grpc_code="OK"', "r" * 7000, "r" * 129]
    blank = pb.PredictRequest(texts=["fine", " "])  # INVALID_ARGUMENT: an access line at INFO
    server = ServerProcess(keep_log=True).start()  # text log format, the default
    try:
        for raw_id in raw_ids:
            status, headers = raw_http2_predict(server.port, pb.PredictRequest(texts=["good"]).SerializeToString(), raw_id)
            assert status == grpc.StatusCode.OK.value[0], headers
            assert SERVER_MADE.fullmatch(headers["x-request-id"]), headers
            status, _ = raw_http2_predict(server.port, blank.SerializeToString(), raw_id)
            assert status == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        with grpc.insecure_channel(server.target) as channel:
            stub = pb_grpc.SentimentServiceStub(channel)
            for request_id in grpc_ids:
                _, call = stub.Predict.with_call(pb.PredictRequest(texts=["good"]),
                                                 metadata=(("x-request-id", request_id),), timeout=30)
                echoed = dict(call.initial_metadata())["x-request-id"]
                assert SERVER_MADE.fullmatch(echoed) and echoed not in request_id
                try:
                    stub.Predict(blank, metadata=(("x-request-id", request_id),), timeout=30)
                except grpc.RpcError as error:
                    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
            try:  # over the limit: gRPC refuses it before any handler, and says why
                stub.Predict(pb.PredictRequest(texts=["good"]), metadata=(("x-request-id", "r" * 8192),), timeout=30)
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "metadata size" in error.details()
            assert stub.Predict(pb.PredictRequest(texts=["good"]), timeout=30).predictions
    finally:
        assert server.stop() == 0
    log = server.log()
    assert server.log_path is not None
    server.log_path.unlink()
    lines = log.splitlines()
    assert not any(line.startswith(FORGED_PREFIX) for line in lines), log
    assert not [c for c in log if not c.isprintable() and c != "\n"], "control characters reached the log"
    assert "code=OK grpc_code" not in log and "rrrrrrrr" not in log and "qqzz" not in log  # never hex, unlike "abc" (server-made ids are)
    replaced = [line for line in lines if "INVALID_ARGUMENT" in line and "request_id_replaced=True" in line]
    assert len(replaced) == len(raw_ids) + len(grpc_ids), log
    assert "grpc_server_handled_total" not in log  # and nothing ended INTERNAL on the way
    assert "INTERNAL" not in log and "Traceback" not in log, log
