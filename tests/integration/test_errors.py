"""Bad input gets a clear error naming the field and the limit; the server keeps serving."""

from __future__ import annotations

import time
import urllib.request

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from rnn_sentiment.client import SentimentClient, SentimentError
from rnn_sentiment.server.instrumentation import REFUSAL_LOG_SECONDS
from tests.support import ServerProcess

# The session server runs with --max-texts-per-request 8 --max-text-chars 1000.


def _error(call) -> SentimentError:  # type: ignore[no-untyped-def]
    with pytest.raises(SentimentError) as raised:
        call()
    return raised.value


@pytest.mark.parametrize("text", ["", "   ", "\n\t "])
def test_blank_text_is_invalid(client: SentimentClient, text: str) -> None:
    error = _error(lambda: client.predict(["fine", text]))
    assert error.code == "INVALID_ARGUMENT"
    assert "texts[1]" in error.field_violations
    assert "non-whitespace" in error.field_violations["texts[1]"]


def test_no_texts_is_invalid(client: SentimentClient) -> None:
    error = _error(lambda: client.predict([]))
    assert error.code == "INVALID_ARGUMENT" and "texts" in error.field_violations


def test_too_many_texts_names_the_limit(client: SentimentClient) -> None:
    error = _error(lambda: client.predict(["good"] * 9))
    assert error.code == "INVALID_ARGUMENT"
    assert "limit is 8" in error.field_violations["texts"]


def test_too_long_text_names_the_limit(client: SentimentClient) -> None:
    error = _error(lambda: client.predict(["good", "x" * 1001]))
    assert error.code == "INVALID_ARGUMENT"
    assert "1001 characters" in error.field_violations["texts[1]"]
    assert "limit is 1000" in error.field_violations["texts[1]"]


def test_trace_validates_its_text(client: SentimentClient) -> None:
    error = _error(lambda: client.trace("  "))
    assert error.code == "INVALID_ARGUMENT" and "text" in error.field_violations


def test_unknown_model_is_not_found_and_lists_the_served_ones(client: SentimentClient) -> None:
    for call in (
        lambda: client.predict("good", model="no-such-model"),
        lambda: client.trace("good", model="no-such-model"),
        lambda: client.model_info("no-such-model"),
    ):
        error = _error(call)
        assert error.code == "NOT_FOUND"
        assert "no-such-model" in error.message and "sst2-gru" in error.message


def test_server_keeps_serving_after_bad_requests(client: SentimentClient) -> None:
    for _ in range(3):
        _error(lambda: client.predict(["", "x" * 5000]))
    assert client.predict("a warm and funny film").predictions[0].label == "positive"
    assert client.health() == "SERVING"


@pytest.mark.parametrize("text", ["\0", "\u200b", "\u200b\0 \ufeff"])
def test_text_with_nothing_visible_is_invalid_like_a_blank_one(client: SentimentClient, text: str) -> None:
    error = _error(lambda: client.predict(["fine", text]))
    assert error.code == "INVALID_ARGUMENT"
    assert "visible" in error.field_violations["texts[1]"]
    error = _error(lambda: client.trace(text))
    assert error.code == "INVALID_ARGUMENT" and "visible" in error.field_violations["text"]


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


def _handled(text: str, method: str, code: str) -> float:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "grpc_server_handled_total" and s.labels.get("grpc_method") == method \
                    and s.labels.get("grpc_code") == code:
                return s.value
    return 0.0


MALFORMED = bytes.fromhex("0a02fffe")  # field 1, two bytes that are not UTF-8
SENTIMENT = "/rnn_sentiment.v1.SentimentService/"
MALFORMED_CALLS = [  # (full method, bytes that do not parse as its request)
    (SENTIMENT + "Predict", MALFORMED),
    (SENTIMENT + "Trace", MALFORMED),
    (SENTIMENT + "GetModelInfo", MALFORMED),
    (SENTIMENT + "ListModels", b"\x0a\x05ab"),  # a field cut short
    ("/grpc.health.v1.Health/Check", MALFORMED),
]


def test_malformed_bytes_are_invalid_argument_counted_and_logged_once_in_a_while() -> None:
    server = ServerProcess(keep_log=True).start()
    repeats = 30
    try:
        before = _scrape(server.metrics_url)
        started = time.monotonic()
        with grpc.insecure_channel(server.target) as channel:
            for full_method, request in MALFORMED_CALLS:
                call = channel.unary_unary(full_method, request_serializer=None, response_deserializer=None)
                method = full_method.rsplit("/", 1)[1]
                for _ in range(repeats):
                    with pytest.raises(grpc.RpcError) as raised:
                        call(request, timeout=30)
                    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, raised.value.details()
                    assert f"{method}: could not parse the request" in raised.value.details()
                    assert "<class" not in raised.value.details() and "Error" not in raised.value.details()
            watch = channel.unary_stream("/grpc.health.v1.Health/Watch", request_serializer=None,
                                         response_deserializer=None)
            with pytest.raises(grpc.RpcError) as raised:
                next(iter(watch(MALFORMED, timeout=30)))
            assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "Watch: could not parse the request" in raised.value.details()
            predict = channel.unary_unary(SENTIMENT + "Predict")
            assert predict(b"\x0a\x04good", timeout=30)  # the server keeps serving
        elapsed = time.monotonic() - started
        # Counted like any other end of a call, just after it ends: poll.
        deadline = time.monotonic() + 10
        while True:
            after = _scrape(server.metrics_url)
            counted = {m.rsplit("/", 1)[1]: _handled(after, m.rsplit("/", 1)[1], "INVALID_ARGUMENT")
                       - _handled(before, m.rsplit("/", 1)[1], "INVALID_ARGUMENT") for m, _ in MALFORMED_CALLS}
            if all(n == repeats for n in counted.values()) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert all(n == repeats for n in counted.values()), counted
    finally:
        assert server.stop() == 0
    log = server.log()
    assert server.log_path is not None
    server.log_path.unlink()
    assert "Traceback" not in log and "DecodeError" not in log and "Unexpected" not in log, log[-3000:]
    warnings = [line for line in log.splitlines() if "could not parse a request" in line]
    # One line, then at most one per REFUSAL_LOG_SECONDS, however many malformed calls came.
    assert 1 <= len(warnings) <= 2 + elapsed / REFUSAL_LOG_SECONDS, warnings
    assert "WARNING" in warnings[0] and "suppressed=0" in warnings[0]
