"""/metrics counts the calls made, with the standard gRPC names, and passes promtool."""

from __future__ import annotations

import shutil
import subprocess
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from rnn_sentiment.client import SentimentClient, SentimentError
from tests.scrape import idle_scrape, sample, scrape
from tests.support import ServerProcess

PREDICT = {"grpc_service": "rnn_sentiment.v1.SentimentService", "grpc_method": "Predict", "grpc_type": "unary"}


def test_calls_are_counted_by_method_and_code(server: ServerProcess, client: SentimentClient) -> None:
    before = idle_scrape(server)
    client.predict(["a warm, funny and beautifully acted film", "a dull , lifeless and painfully boring movie"])
    client.predict("good")
    with pytest.raises(SentimentError):
        client.predict(" ")
    # A refused call is counted just after its status is sent (the abort sends it), so the client
    # can be a moment ahead: scrape until the three calls are all counted (bounded).
    deadline = time.monotonic() + 10
    while True:
        after = scrape(server)
        if sample(after, "grpc_server_handling_seconds_count", **PREDICT) - sample(before, "grpc_server_handling_seconds_count", **PREDICT) >= 3:
            break
        assert time.monotonic() < deadline, after
        time.sleep(0.05)

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert delta("grpc_server_started_total", **PREDICT) == 3
    assert delta("grpc_server_handled_total", **PREDICT, grpc_code="OK") == 2
    assert delta("grpc_server_handled_total", **PREDICT, grpc_code="INVALID_ARGUMENT") == 1
    assert delta("grpc_server_handling_seconds_count", **PREDICT) == 3
    assert delta("rnn_sentiment_model_seconds_count", kind="predict") >= 1
    assert delta("rnn_sentiment_predictions_total", label="positive") >= 1
    assert delta("rnn_sentiment_predictions_total", label="negative") >= 1
    assert delta("rnn_sentiment_tokens_total") >= 9
    assert sample(after, "rnn_sentiment_model_info", model="sst2-gru", default="true") == 1


def test_a_scrape_right_after_a_call_counts_it(server: ServerProcess, client: SentimentClient) -> None:
    """The hot-path updates are buffered (server/metric_buffer.py); /metrics flushes them before it
    renders, so a scrape made as soon as a call has returned counts that call, with no wait.
    Several rounds: one alone could land just after a periodic flush by chance."""
    for _ in range(5):
        before = scrape(server)
        client.predict("good")
        after = scrape(server)
        assert sample(after, "grpc_server_handled_total", **PREDICT, grpc_code="OK") \
            - sample(before, "grpc_server_handled_total", **PREDICT, grpc_code="OK") >= 1, after
        assert sample(after, "rnn_sentiment_predictions_total", model="sst2-gru", label="positive") \
            - sample(before, "rnn_sentiment_predictions_total", model="sst2-gru", label="positive") >= 1, after


def test_histogram_buckets_span_100us_to_10s(server: ServerProcess, client: SentimentClient) -> None:
    # Its own Predict: the series appears with the first call, and no other test may be relied on
    # to have made one (the suite runs in random order).
    client.predict("good")
    text = scrape(server)
    assert 'grpc_server_handling_seconds_bucket{grpc_method="Predict",grpc_service="rnn_sentiment.v1.SentimentService",grpc_type="unary",le="0.0001"}' in text
    assert 'le="10.0"' in text


def test_exposition_passes_promtool(server: ServerProcess, client: SentimentClient) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package `prometheus`; .ci/run installs it)")
    client.predict("good")
    checked = subprocess.run([promtool, "check", "metrics"], input=scrape(server), capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_health_checks_and_model_listing_are_measured_too(server: ServerProcess, client: SentimentClient) -> None:
    """Every unary method of every service is wrapped when it is registered, not only Predict."""
    before = idle_scrape(server)
    with grpc.insecure_channel(server.target) as channel:
        assert health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10).status == \
            health_pb2.HealthCheckResponse.SERVING
    client.list_models()
    check = {"grpc_service": "grpc.health.v1.Health", "grpc_method": "Check", "grpc_type": "unary"}
    listing = {"grpc_service": "rnn_sentiment.v1.SentimentService", "grpc_method": "ListModels", "grpc_type": "unary"}
    after = scrape(server)
    counted = [sample(after, "grpc_server_handled_total", **labels, grpc_code="OK")
               - sample(before, "grpc_server_handled_total", **labels, grpc_code="OK") for labels in (check, listing)]
    assert counted == [1, 1], after
