"""Every metric the docs and the dashboard name exists on a live server and moves when its event happens.

The names are read from README.md, docs/*.md, the Grafana dashboard and the alert rules, so a
renamed metric (or a new documented one without a test) turns this module red. Each event is
caused for real on a server of this module's own: a Predict, a Trace, a call held in the
batcher, a SIGHUP with the checkpoint directory unchanged, replaced, corrupted and removed.
"""

from __future__ import annotations

import re
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from rnn_sentiment.client import SentimentClient
from tests.scrape import idle_scrape, scrape
from tests.support import REPO_ROOT, ServerProcess, write_untrained_checkpoint

MODEL = "tiny"
# The untrained test checkpoint's vocabulary is "a good bad film not . ,": this word is unknown.
UNKNOWN_WORD = "zorblax"
# Long enough that a call is seen waiting in the queue by a scrape; short enough to keep the module fast.
BATCH_DELAY_MS = 1000

DOCUMENTED_IN = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md")),
                 *sorted((REPO_ROOT / "deploy" / "grafana" / "dashboards").glob("*.json")),
                 REPO_ROOT / "deploy" / "prometheus" / "alerts.yml"]
# A metric name, not a recording rule (`rnn_sentiment:grpc_server_errors:rate5m`) nor a module path.
METRIC_NAME = re.compile(r"(?<![\w:.])(?:rnn_sentiment|grpc_server)_[a-z0-9_]*[a-z0-9](?![\w:])")
HISTOGRAM_SUFFIX = re.compile(r"_(bucket|count|sum)$")

# Documented metrics whose event needs a setup of its own, asserted by name in another module.
ASSERTED_ELSEWHERE = {
    "rnn_sentiment_worker_restarts_total": "tests/integration/test_workers.py",  # --workers 2, a worker killed
    "rnn_sentiment_ready": "tests/integration/test_lifecycle.py",  # 1 serving, 0 once a drain begins
}

def documented_metric_names() -> set[str]:
    return {HISTOGRAM_SUFFIX.sub("", name) for path in DOCUMENTED_IN for name in METRIC_NAME.findall(path.read_text())}


def value(text: str, name: str, **labels: str) -> float | None:
    """The sum of `name`'s samples with these labels (a histogram: its _count); None if there is none."""
    names = {name, f"{name}_count"}
    found = [s.value for family in text_string_to_metric_families(text) for s in family.samples
             if s.name in names and all(s.labels.get(k) == v for k, v in labels.items())]
    return sum(found) if found else None


def wait_for(server: ServerProcess, condition: Callable[[str], bool], what: str, timeout: float = 30.0) -> str:
    """Scrape until `condition(text)` (a metric is written a moment after the event)."""
    deadline = time.monotonic() + timeout
    while True:
        text = scrape(server)
        if condition(text):
            return text
        assert time.monotonic() < deadline, f"{what}; last scrape:\n{text}\nlog:\n{server.log()[-3000:]}"
        time.sleep(0.05)


def moved(before: str, after: str, name: str, **labels: str) -> float:
    now = value(after, name, **labels)
    assert now is not None, f"no series {name}{labels} on the live server"
    return now - (value(before, name, **labels) or 0.0)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("metric-models")
    write_untrained_checkpoint(root / MODEL, MODEL, "v1")
    return root


@pytest.fixture(scope="module")
def metrics_server(model_dir: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(extra_args=["--model-dir", str(model_dir), "--max-batch-delay-ms", str(BATCH_DELAY_MS),
                                        "--model-poll-seconds", "0"])
    process.start()
    yield process
    assert process.stop() == 0, process.log()


def test_every_documented_metric_is_asserted_on_a_live_server() -> None:
    """A documented name needs a test here (EXERCISED) or an assertion by name in another test module."""
    names = documented_metric_names()
    assert {"grpc_server_handled_total", "rnn_sentiment_batch_size", "rnn_sentiment_queue_seconds"} <= names
    this_module = Path(__file__).resolve()
    other_tests = "\n".join(p.read_text() for p in (REPO_ROOT / "tests").rglob("test_*.py") if p.resolve() != this_module)
    uncovered = sorted(n for n in names - EXERCISED if n not in other_tests)
    assert not uncovered, f"documented metrics asserted by no test: {uncovered}"
    for name, module in ASSERTED_ELSEWHERE.items():
        assert name in (REPO_ROOT / module).read_text(), (name, module)


def test_a_predict_moves_the_request_and_model_metrics(metrics_server: ServerProcess) -> None:
    before = idle_scrape(metrics_server)
    with SentimentClient(metrics_server.target, timeout=30) as client:
        result = client.predict([f"a good film {UNKNOWN_WORD}", "not bad"])
    predict = {"grpc_service": "rnn_sentiment.v1.SentimentService", "grpc_method": "Predict"}
    after = scrape(metrics_server)  # current: /metrics flushes the metric buffer before it renders
    assert moved(before, after, "grpc_server_started_total", **predict) == 1
    assert moved(before, after, "grpc_server_handled_total", **predict, grpc_code="OK") == 1
    assert moved(before, after, "grpc_server_handling_seconds", **predict) == 1
    model = {"model": MODEL}
    assert moved(before, after, "rnn_sentiment_model_seconds", **model, kind="predict") >= 1
    assert moved(before, after, "rnn_sentiment_queue_seconds", **model) == 2  # one observation per text
    assert moved(before, after, "rnn_sentiment_batch_size", **model) >= 1
    # both texts in one request are one batch of 2: the batch size histogram's sum says so
    assert moved(before, after, "rnn_sentiment_batch_size_sum", **model) == 2
    assert moved(before, after, "rnn_sentiment_text_tokens", **model) == 2
    assert moved(before, after, "rnn_sentiment_tokens_total", **model) == 6
    assert moved(before, after, "rnn_sentiment_unknown_tokens_total", **model) == 1
    for label in {p.label for p in result.predictions}:
        count = sum(p.label == label for p in result.predictions)
        assert moved(before, after, "rnn_sentiment_predictions_total", **model, label=label) == count


def test_a_trace_moves_model_seconds_for_trace(metrics_server: ServerProcess) -> None:
    before = idle_scrape(metrics_server)
    with SentimentClient(metrics_server.target, timeout=30) as client:
        client.trace("a good film")
    after = wait_for(metrics_server, lambda t: (value(t, "rnn_sentiment_model_seconds", model=MODEL, kind="trace") or 0)
                     > (value(before, "rnn_sentiment_model_seconds", model=MODEL, kind="trace") or 0),
                     "rnn_sentiment_model_seconds{kind=\"trace\"} to move")
    assert moved(before, after, "rnn_sentiment_model_seconds", model=MODEL, kind="predict") == 0


def test_a_call_waiting_in_the_batcher_shows_in_queue_depth(metrics_server: ServerProcess) -> None:
    wait_for(metrics_server, lambda t: value(t, "rnn_sentiment_queue_depth", model=MODEL) == 0, "an empty queue")
    with SentimentClient(metrics_server.target, timeout=30) as client:
        caller = threading.Thread(target=client.predict, args=("a good film",))
        caller.start()
        wait_for(metrics_server, lambda t: value(t, "rnn_sentiment_queue_depth", model=MODEL) == 1,
                 "queue depth 1 while the call waits")
        caller.join(30)
    wait_for(metrics_server, lambda t: value(t, "rnn_sentiment_queue_depth", model=MODEL) == 0, "the queue emptied")


def test_reload_metrics_and_model_info_follow_the_checkpoint_directory(metrics_server: ServerProcess,
                                                                       model_dir: Path) -> None:
    def reloads(result: str) -> float:
        return value(scrape(metrics_server), "rnn_sentiment_model_reload_total", model=MODEL, result=result) or 0.0

    def sighup_and_wait(result: str) -> str:
        wanted = reloads(result) + 1
        metrics_server.signal(signal.SIGHUP)
        return wait_for(metrics_server, lambda t: value(t, "rnn_sentiment_model_reload_total", model=MODEL,
                                                        result=result) == wanted, f"a reload counted as {result}")

    checkpoint = model_dir / MODEL
    version = "v1"
    text = scrape(metrics_server)
    for line in text.splitlines():  # the version served now (an earlier run of this test may have replaced v1)
        if line.startswith("rnn_sentiment_model_info{") and f'model="{MODEL}"' in line and line.endswith(" 1.0"):
            version = re.search(r'version="([^"]+)"', line).group(1)  # type: ignore[union-attr]
    assert value(text, "rnn_sentiment_model_info", model=MODEL, version=version) == 1

    sighup_and_wait("unchanged")

    replaced = f"{version}-next"
    staging = model_dir.parent / f"staging-{replaced}"
    write_untrained_checkpoint(staging, MODEL, replaced, seed=1)
    shutil.rmtree(checkpoint)
    staging.rename(checkpoint)
    text = sighup_and_wait("success")
    assert value(text, "rnn_sentiment_model_info", model=MODEL, version=replaced) == 1
    assert not value(text, "rnn_sentiment_model_info", model=MODEL, version=version)

    weights = checkpoint / "model.safetensors"
    good = weights.read_bytes()
    failures_before = value(text, "rnn_sentiment_model_reload_failures_total", model=MODEL) or 0.0
    weights.write_bytes(b"not a safetensors file")
    try:
        text = sighup_and_wait("failure")
        assert value(text, "rnn_sentiment_model_reload_failures_total", model=MODEL) == failures_before + 1
        assert value(text, "rnn_sentiment_model_info", model=MODEL, version=replaced) == 1  # still serving
    finally:
        weights.write_bytes(good)

    hidden = model_dir.parent / f"hidden-{MODEL}"
    checkpoint.rename(hidden)
    try:
        assert value(scrape(metrics_server), "rnn_sentiment_model_directory_missing", model=MODEL) == 0
        metrics_server.signal(signal.SIGHUP)
        wait_for(metrics_server, lambda t: value(t, "rnn_sentiment_model_directory_missing", model=MODEL) == 1,
                 "the directory reported missing")
    finally:
        hidden.rename(checkpoint)
    metrics_server.signal(signal.SIGHUP)
    wait_for(metrics_server, lambda t: value(t, "rnn_sentiment_model_directory_missing", model=MODEL) == 0,
             "the directory back")
    with SentimentClient(metrics_server.target, timeout=30) as client:
        assert client.model_info(MODEL).version == replaced


# What the tests above make move; test_every_documented_metric_is_asserted_on_a_live_server holds
# the documented names to this set (or to another module's assertion).
EXERCISED = {
    "grpc_server_started_total", "grpc_server_handled_total", "grpc_server_handling_seconds",
    "rnn_sentiment_model_seconds", "rnn_sentiment_queue_seconds", "rnn_sentiment_batch_size",
    "rnn_sentiment_text_tokens", "rnn_sentiment_tokens_total", "rnn_sentiment_unknown_tokens_total",
    "rnn_sentiment_predictions_total", "rnn_sentiment_queue_depth", "rnn_sentiment_model_info",
    "rnn_sentiment_model_reload_total", "rnn_sentiment_model_reload_failures_total",
    "rnn_sentiment_model_directory_missing",
}
