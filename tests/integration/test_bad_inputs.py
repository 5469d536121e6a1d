"""The bad-input catalogue: every hostile or careless request gets its exact status, and the next
valid request to the same RPC succeeds.

Requests go out as raw bytes (identity serializers), so malformed protobuf is sent exactly like
a well-formed message. Header values that gRPC clients refuse to send (newline, ESC) go over a raw
HTTP/2 connection. The rows of the reliability and hardening issues that are inputs are here, and
the README's error table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterator

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2

from rnn_sentiment.v1 import sentiment_pb2 as pb
from tests.raw_http2 import raw_unary_call
from tests.support import ServerProcess

MAX_TEXTS = 8
MAX_CHARS = 1000
SERVICE = "/rnn_sentiment.v1.SentimentService/"
PREDICT, TRACE, INFO, LIST = (SERVICE + m for m in ("Predict", "Trace", "GetModelInfo", "ListModels"))
HEALTH = "/grpc.health.v1.Health/Check"
# An error's message and its grpc-status-details-bin trailer stay far below gRPC's 8 KB metadata
# limit, whatever the request held.
MAX_MESSAGE_CHARS = 1024
MAX_DETAILS_BYTES = 4096
IG = pb.ATTRIBUTION_METHOD_INTEGRATED_GRADIENTS
MALFORMED = bytes.fromhex("0a02fffe")  # field 1, 2 bytes of invalid UTF-8 (the sample)

VALID = {
    PREDICT: pb.PredictRequest(texts=["a warm , funny film"]).SerializeToString(),
    TRACE: pb.TraceRequest(text="a warm , funny film").SerializeToString(),
    INFO: pb.GetModelInfoRequest().SerializeToString(),
    LIST: pb.ListModelsRequest().SerializeToString(),
    HEALTH: health_pb2.HealthCheckRequest().SerializeToString(),
}


@dataclass(frozen=True)
class BadInput:
    """One request and what the server must answer."""

    name: str
    method: str
    request: bytes
    code: grpc.StatusCode
    field: str | None = None  # the BadRequest field violation the answer must name
    request_id: str | None = None  # sent as x-request-id (over raw HTTP/2 when gRPC refuses it)


def predict(*texts: str, model: str = "") -> bytes:
    return pb.PredictRequest(texts=texts, model=model).SerializeToString()


def trace(text: str = "a warm , funny film", **options: object) -> bytes:
    return pb.TraceRequest(text=text, **options).SerializeToString()  # type: ignore[arg-type]


INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
OK = grpc.StatusCode.OK
LONG_NAME = "m" * 16_384
LONG_TEXT = "good " * 100  # 500 characters: within the text limit, more than 64 tokens

CATALOGUE = [
    # Predict: the request's texts.
    BadInput("predict-no-texts", PREDICT, predict(), INVALID, "texts"),
    BadInput("predict-too-many-texts", PREDICT, predict(*["good"] * (MAX_TEXTS + 1)), INVALID, "texts"),
    BadInput("predict-10000-texts", PREDICT, predict(*["good"] * 10_000), INVALID, "texts"),
    BadInput("predict-empty-text", PREDICT, predict(""), INVALID, "texts[0]"),
    BadInput("predict-whitespace-text", PREDICT, predict(" \t\n "), INVALID, "texts[0]"),
    BadInput("predict-second-text-empty", PREDICT, predict("good", ""), INVALID, "texts[1]"),
    BadInput("predict-text-too-long", PREDICT, predict("a" * (MAX_CHARS + 1)), INVALID, "texts[0]"),
    BadInput("predict-nul-only-text", PREDICT, predict("\0\0\0"), INVALID, "texts[0]"),
    BadInput("predict-zero-width-only-text", PREDICT, predict("\u200b\u200b\u200b"), INVALID, "texts[0]"),
    BadInput("predict-bom-and-zero-width-joiner", PREDICT, predict("\ufeff\u200d"), INVALID, "texts[0]"),
    BadInput("predict-quote-dot-run", PREDICT, predict("x'.'." * (MAX_CHARS // 5)), OK),
    BadInput("predict-unknown-model", PREDICT, predict("good", model="no-such-model"), NOT_FOUND),
    BadInput("predict-16kb-model-name", PREDICT, predict("good", model=LONG_NAME), NOT_FOUND),
    BadInput("predict-model-name-with-control-chars", PREDICT, predict("good", model="sst2\n\x1b[31mgru"), NOT_FOUND),
    BadInput("predict-malformed-utf8", PREDICT, MALFORMED, INVALID),
    BadInput("predict-truncated-field", PREDICT, b"\x0a\x05ab", INVALID),
    BadInput("predict-field-number-zero", PREDICT, b"\x00", INVALID),
    BadInput("predict-over-message-size-limit", PREDICT, predict("a" * (5 << 20)), grpc.StatusCode.RESOURCE_EXHAUSTED),
    # Trace: its text and its options.
    BadInput("trace-empty-text", TRACE, trace(""), INVALID, "text"),
    BadInput("trace-whitespace-text", TRACE, trace("   "), INVALID, "text"),
    BadInput("trace-text-too-long", TRACE, trace("a" * (MAX_CHARS + 1)), INVALID, "text"),
    BadInput("trace-nul-only-text", TRACE, trace("\0"), INVALID, "text"),
    BadInput("trace-zero-width-only-text", TRACE, trace("\u200b"), INVALID, "text"),
    BadInput("trace-unknown-attribution", TRACE, trace(attributions=[99]), INVALID, "attributions[0]"),
    BadInput("trace-unspecified-attribution", TRACE, trace(attributions=[0]), INVALID, "attributions[0]"),
    BadInput("trace-100000-bad-attributions", TRACE, trace(attributions=[99] * 100_000), INVALID, "attributions"),
    BadInput("trace-negative-ig-steps", TRACE, trace(attributions=[IG], integrated_gradients_steps=-1),
             INVALID, "integrated_gradients_steps"),
    BadInput("trace-too-many-ig-steps", TRACE, trace(attributions=[IG], integrated_gradients_steps=257),
             INVALID, "integrated_gradients_steps"),
    BadInput("trace-ig-steps-times-tokens-over-limit", TRACE,
             trace(LONG_TEXT, attributions=[IG], integrated_gradients_steps=256), INVALID, "integrated_gradients_steps"),
    BadInput("trace-memory-profile-too-long", TRACE, trace(LONG_TEXT, include_memory_profile=True),
             INVALID, "include_memory_profile"),
    BadInput("trace-negative-top-k-units", TRACE, trace(top_k_units=-1), INVALID, "top_k_units"),
    BadInput("trace-unknown-model", TRACE, trace(model="no-such-model"), NOT_FOUND),
    BadInput("trace-16kb-model-name", TRACE, trace(model=LONG_NAME), NOT_FOUND),
    BadInput("trace-malformed-utf8", TRACE, MALFORMED, INVALID),
    BadInput("trace-truncated-packed-attributions", TRACE, b"\x22\x08\x01\x02", INVALID),
    # GetModelInfo and ListModels.
    BadInput("info-unknown-model", INFO, pb.GetModelInfoRequest(model="no-such-model").SerializeToString(), NOT_FOUND),
    BadInput("info-16kb-model-name", INFO, pb.GetModelInfoRequest(model=LONG_NAME).SerializeToString(), NOT_FOUND),
    BadInput("info-model-name-with-nul", INFO, pb.GetModelInfoRequest(model="sst2-gru\0").SerializeToString(), NOT_FOUND),
    BadInput("info-malformed-utf8", INFO, MALFORMED, INVALID),
    BadInput("list-truncated-field", LIST, b"\x0a\x05ab", INVALID),
    BadInput("list-bad-varint", LIST, b"\x08" + b"\xff" * 11, INVALID),
    BadInput("list-unknown-field-is-ignored", LIST, MALFORMED, OK),
    # Health.
    BadInput("health-unknown-service", HEALTH, health_pb2.HealthCheckRequest(service="no.such.Service").SerializeToString(),
             NOT_FOUND),
    BadInput("health-16kb-service-name", HEALTH, health_pb2.HealthCheckRequest(service=LONG_NAME).SerializeToString(),
             NOT_FOUND),
    BadInput("health-malformed-utf8", HEALTH, MALFORMED, INVALID),
    # Methods that do not exist.
    BadInput("unknown-method", SERVICE + "Explain", VALID[PREDICT], grpc.StatusCode.UNIMPLEMENTED),
    BadInput("unknown-service", "/rnn_sentiment.v2.SentimentService/Predict", VALID[PREDICT],
             grpc.StatusCode.UNIMPLEMENTED),
    # Request ids: a safe one is echoed; anything else is answered OK under a server-made id.
    BadInput("request-id-safe-is-echoed", PREDICT, VALID[PREDICT], OK, request_id="req-42.a:b_c"),
    BadInput("request-id-with-spaces", PREDICT, VALID[PREDICT], OK, request_id="x code=OK grpc_code=OK"),
    # Over 128 characters, under gRPC's 8 KiB metadata limit (above it gRPC itself refuses the call).
    BadInput("request-id-4kb", PREDICT, VALID[PREDICT], OK, request_id="r" * 4096),
    BadInput("request-id-newline", PREDICT, VALID[PREDICT], OK,
             request_id="abc\n2026-01-01 00:00:00,000 ERROR forged-line"),
    BadInput("request-id-escape", PREDICT, VALID[PREDICT], OK, request_id="abc\x1b[2J\x1b[31mred"),
    BadInput("request-id-nul", PREDICT, VALID[PREDICT], OK, request_id="abc\0def"),
]


def _needs_raw_http2(value: str) -> bool:
    # gRPC clients send only printable ASCII in text metadata.
    return any(not " " <= c <= "~" for c in value)


@dataclass
class Answer:
    code: grpc.StatusCode
    message: str
    details: bytes  # grpc-status-details-bin, serialized google.rpc.Status
    request_id: str | None  # x-request-id in the response's headers


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    process = ServerProcess(
        extra_args=["--max-texts-per-request", str(MAX_TEXTS), "--max-text-chars", str(MAX_CHARS)], keep_log=True
    )
    process.start()
    yield process
    assert process.stop() == 0, process.log()


@pytest.fixture(scope="module")
def channel(server: ServerProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.target) as channel:
        yield channel


def call(channel: grpc.Channel, method: str, request: bytes, request_id: str | None = None) -> Answer:
    stub = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
    metadata = [("x-request-id", request_id)] if request_id is not None else None
    try:
        _, rpc = stub.with_call(request, timeout=30, metadata=metadata)
        return Answer(OK, "", b"", dict(rpc.initial_metadata()).get("x-request-id"))
    except grpc.RpcError as error:
        trailers = dict(error.trailing_metadata() or ())  # type: ignore[attr-defined]
        initial = dict(error.initial_metadata() or ())  # type: ignore[attr-defined]
        return Answer(error.code(), error.details() or "", trailers.get("grpc-status-details-bin", b""),  # type: ignore[attr-defined]
                      initial.get("x-request-id"))


def raw_http2_call(port: int, method: str, request: bytes, request_id: str) -> Answer:
    """One unary gRPC call over a bare HTTP/2 connection, with a header value sent as is."""
    headers = raw_unary_call(port, method, request, [(b"x-request-id", request_id.encode())])
    code = next(c for c in grpc.StatusCode if c.value[0] == int(headers.get("grpc-status", "2")))
    return Answer(code, headers.get("grpc-message", ""), b"", headers.get("x-request-id"))


def field_violations(details: bytes) -> list[str]:
    status = status_pb2.Status.FromString(details)
    fields = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            fields.extend(v.field for v in bad_request.field_violations)
    return fields


def test_the_catalogue_is_large_and_covers_every_rpc() -> None:
    assert len(CATALOGUE) >= 40
    assert {PREDICT, TRACE, INFO, LIST, HEALTH} <= {case.method for case in CATALOGUE}
    assert len({case.name for case in CATALOGUE}) == len(CATALOGUE)


@pytest.mark.parametrize("case", CATALOGUE, ids=lambda case: case.name)
def test_bad_input_gets_its_status_and_the_server_keeps_serving(
    server: ServerProcess, channel: grpc.Channel, case: BadInput
) -> None:
    if case.request_id is not None and _needs_raw_http2(case.request_id):
        answer = raw_http2_call(server.port, case.method, case.request, case.request_id)
    else:
        answer = call(channel, case.method, case.request, case.request_id)

    assert answer.code == case.code, f"{case.name}: {answer.code.name} {answer.message[:300]!r}"
    assert len(answer.message) <= MAX_MESSAGE_CHARS, f"{len(answer.message)}-character message"
    assert len(answer.details) <= MAX_DETAILS_BYTES, f"{len(answer.details)}-byte details trailer"
    assert "<class" not in answer.message and "Traceback" not in answer.message, answer.message
    if case.field is not None:
        violations = field_violations(answer.details)
        assert case.field in violations, violations[:5]
    if case.request_id is not None:
        if re.fullmatch(r"[A-Za-z0-9._:-]{1,128}", case.request_id):
            assert answer.request_id == case.request_id
        else:  # never echoed, not even a prefix of it
            assert not answer.request_id or not case.request_id.startswith(answer.request_id), answer.request_id
            assert not any(line.startswith("2026-01-01") for line in server.log().splitlines()), "forged log line"

    follow_up = case.method if case.method in VALID else PREDICT
    assert call(channel, follow_up, VALID[follow_up]).code == OK
