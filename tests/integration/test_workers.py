"""`--workers 2`: two processes share one port, both answer, metrics add up, drain exits 0."""

from __future__ import annotations

import json
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from rnn_sentiment.client import SentimentClient
from tests.support import ServerProcess

CALLS = 40


def handled_ok(metrics_url: str) -> float:
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        text = response.read().decode()
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "grpc_server_handled_total" and s.labels.get("grpc_method") == "Predict" and s.labels.get("grpc_code") == "OK"
    )


def test_two_workers_share_the_port_and_one_metrics_endpoint() -> None:
    server = ServerProcess(extra_args=["--workers", "2", "--log-format", "json", "--log-level", "DEBUG"]).start()
    try:
        for _ in range(CALLS):  # a fresh connection per call, so the kernel spreads them
            with SentimentClient(server.target, timeout=30) as client:
                assert client.predict("a warm , funny film").predictions[0].label == "positive"
        records = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
        serving_pids = {r["pid"] for r in records if r["message"] == "serving"}
        answering_pids = {r["pid"] for r in records if r["message"] == "rpc" and r.get("method") == "Predict"}
        assert len(serving_pids) == 2
        assert answering_pids == serving_pids, "both workers should have answered"
        assert all(r.get("torch_threads") == 1 for r in records if r["message"] == "serving")
        assert handled_ok(server.metrics_url) == CALLS  # the sum over both workers
    finally:
        assert server.stop() == 0, server.log()
