"""Fuzz: seeded random and mutated bytes to every RPC, and property tests of request validation.

The fuzz sends FUZZ_MESSAGES raw messages (identity serializers, so nothing is parsed on our
side) and then requires what the reliability issue asks: the server alive and SERVING, no call
answered UNKNOWN or INTERNAL, every call counted in grpc_server_handled_total, and a log that
grows by a bounded number of lines, not a traceback per message.
"""

from __future__ import annotations

import random
import time
import urllib.request
from collections import Counter
from typing import Callable, Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from rnn_sentiment.server.errors import ServiceError
from rnn_sentiment.server.trace_options import trace_options_from
from rnn_sentiment.server.validation import RequestLimits, check_text, check_texts
from rnn_sentiment.v1 import sentiment_pb2 as pb
from tests.support import ServerProcess

FUZZ_MESSAGES = 2_000
SEED = 14
IN_FLIGHT = 32  # calls on the wire at once: quick, and far below any overload limit
MAX_LOG_LINES_ADDED = 50
MAX_DETAILS_BYTES = 4096  # the error trailer, whatever the request

SERVICE = "/rnn_sentiment.v1.SentimentService/"
SEEDS = {
    SERVICE + "Predict": pb.PredictRequest(texts=["a warm , funny film", "dull"], model="sst2-rnn").SerializeToString(),
    SERVICE + "Trace": pb.TraceRequest(
        text="not good", attributions=[pb.ATTRIBUTION_METHOD_PREFIX], integrated_gradients_steps=4, top_k_units=3,
    ).SerializeToString(),
    SERVICE + "GetModelInfo": pb.GetModelInfoRequest(model="sst2-gru").SerializeToString(),
    SERVICE + "ListModels": pb.ListModelsRequest().SerializeToString(),
    "/grpc.health.v1.Health/Check": health_pb2.HealthCheckRequest(service="rnn_sentiment.v1.SentimentService")
    .SerializeToString(),
}


def _random_bytes(rng: random.Random, seed: bytes) -> bytes:
    return rng.randbytes(rng.randint(0, 96))


def _flipped(rng: random.Random, seed: bytes) -> bytes:
    data = bytearray(seed or b"\0")
    for _ in range(rng.randint(1, 4)):
        data[rng.randrange(len(data))] = rng.randrange(256)
    return bytes(data)


def _truncated(rng: random.Random, seed: bytes) -> bytes:
    return seed[: rng.randint(0, max(0, len(seed) - 1))]


def _spliced(rng: random.Random, seed: bytes) -> bytes:
    at = rng.randint(0, len(seed))
    return seed[:at] + rng.randbytes(rng.randint(1, 16)) + seed[at:]


def _tag_soup(rng: random.Random, seed: bytes) -> bytes:
    """Well-framed fields with random numbers, wire types and payloads: deeper into the parser."""
    out = bytearray()
    for _ in range(rng.randint(1, 6)):
        number, wire_type = rng.randint(1, 12), rng.choice((0, 1, 2, 5))
        out += _varint(number << 3 | wire_type)
        if wire_type == 0:
            out += _varint(rng.getrandbits(rng.choice((7, 32, 64))))
        elif wire_type == 1:
            out += rng.randbytes(8)
        elif wire_type == 5:
            out += rng.randbytes(4)
        else:
            payload = rng.randbytes(rng.randint(0, 24))
            out += _varint(len(payload)) + payload
    return bytes(out)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


MUTATORS: list[Callable[[random.Random, bytes], bytes]] = [_random_bytes, _flipped, _truncated, _spliced, _tag_soup]


def fuzz_messages(count: int, seed: int) -> list[tuple[str, bytes]]:
    rng = random.Random(seed)
    methods = sorted(SEEDS)
    return [(method, rng.choice(MUTATORS)(rng, SEEDS[method])) for method in (methods[i % len(methods)] for i in range(count))]


def handled_total(server: ServerProcess) -> float:
    with urllib.request.urlopen(server.metrics_url, timeout=10) as response:
        text = response.read().decode()
    return sum(
        s.value for family in text_string_to_metric_families(text) for s in family.samples
        if s.name == "grpc_server_handled_total"
    )


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    process = ServerProcess(keep_log=True)
    process.start()
    yield process
    assert process.stop() == 0, process.log()


def test_random_bytes_to_every_rpc_leave_the_server_serving(server: ServerProcess) -> None:
    messages = fuzz_messages(FUZZ_MESSAGES, SEED)
    log_lines_before = len(server.log().splitlines())
    handled_before = handled_total(server)
    codes: Counter[str] = Counter()
    samples: dict[str, str] = {}
    with grpc.insecure_channel(server.target) as channel:
        stubs = {m: channel.unary_unary(m, request_serializer=None, response_deserializer=None) for m in SEEDS}
        for start in range(0, len(messages), IN_FLIGHT):
            futures = [stubs[m].future(body, timeout=30) for m, body in messages[start:start + IN_FLIGHT]]
            for future in futures:
                code = future.code()
                codes[code.name] += 1
                samples.setdefault(code.name, future.details() or "")
        health = health_pb2_grpc.HealthStub(channel)
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == health_pb2.HealthCheckResponse.SERVING
        predict = channel.unary_unary(SERVICE + "Predict", request_serializer=None, response_deserializer=None)
        predict(SEEDS[SERVICE + "Predict"], timeout=30)

    assert server.process is not None and server.process.poll() is None
    assert sum(codes.values()) == FUZZ_MESSAGES
    assert codes["UNKNOWN"] == 0 and codes["INTERNAL"] == 0, (dict(codes), samples)
    added = len(server.log().splitlines()) - log_lines_before
    assert added < MAX_LOG_LINES_ADDED, f"{added} log lines for {FUZZ_MESSAGES} messages: {dict(codes)}"
    # Every call counted (the fuzz, the health check and the Predict after it), bounded wait for
    # the last ones: the server counts a call just after sending its status.
    deadline = time.monotonic() + 10
    while (counted := handled_total(server) - handled_before) < FUZZ_MESSAGES + 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert counted == FUZZ_MESSAGES + 2, (counted, dict(codes))


def test_the_fuzz_is_seeded() -> None:
    assert fuzz_messages(50, SEED) == fuzz_messages(50, SEED)
    assert {m for m, _ in fuzz_messages(FUZZ_MESSAGES, SEED)} == set(SEEDS)


# Property tests of request validation, in process: any input is either accepted within the
# limits or refused with INVALID_ARGUMENT and a bounded error, never another exception.
LIMITS = RequestLimits(max_texts_per_request=8, max_text_chars=200)
PROPERTY_SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _assert_bounded_invalid_argument(error: ServiceError) -> None:
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.violations
    ((_, details),) = error.trailing_metadata()
    assert len(details) <= MAX_DETAILS_BYTES


@PROPERTY_SETTINGS
@given(st.lists(st.text(max_size=260), max_size=40))
def test_texts_are_accepted_within_limits_or_refused_with_a_field(texts: list[str]) -> None:
    try:
        check_texts(texts, LIMITS)
    except ServiceError as error:
        _assert_bounded_invalid_argument(error)
        assert all(v.field == "texts" or v.field.startswith("texts[") for v in error.violations)
        return
    assert 1 <= len(texts) <= LIMITS.max_texts_per_request
    assert all(t.strip() and len(t) <= LIMITS.max_text_chars for t in texts)


@PROPERTY_SETTINGS
@given(st.text(alphabet=st.sampled_from(" \t\n\r\x0b\x0c\u00a0\u2000\u3000\0\u200b\u200c\u200d\ufeff\u2060"), max_size=50))
def test_text_of_invisible_characters_is_refused(text: str) -> None:
    with pytest.raises(ServiceError) as raised:
        check_text(text, LIMITS)
    _assert_bounded_invalid_argument(raised.value)


@PROPERTY_SETTINGS
@given(
    attributions=st.lists(st.integers(-(2**31), 2**31 - 1), max_size=5_000),
    steps=st.integers(-(2**31), 2**31 - 1),
    top_k=st.integers(-(2**31), 2**31 - 1),
)
def test_trace_options_are_valid_or_refused_with_a_bounded_error(attributions: list[int], steps: int, top_k: int) -> None:
    request = pb.TraceRequest(text="good", attributions=attributions, integrated_gradients_steps=steps,
                              top_k_units=top_k)
    try:
        options = trace_options_from(request)
    except ServiceError as error:
        _assert_bounded_invalid_argument(error)
        return
    assert 1 <= options.integrated_gradients_steps and top_k >= 0
