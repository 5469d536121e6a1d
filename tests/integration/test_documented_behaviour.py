"""Documented behaviour held end to end, on live servers: the status codes of the README's error
table that only unit tests reached, `--no-reflection`, the CLI's `predict`, `info` and `health`
(output and exit codes), and the asyncio SDK's `model_info`, `list_models` and `health`.

Draining (UNAVAILABLE for new calls) is in test_lifecycle.py, worker restarts in
test_workers.py, SIGHUP forwarding in test_signals.py, metric names in test_metric_names.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from rnn_sentiment.client import AsyncSentimentClient, SentimentClient
from rnn_sentiment.server.app import bind_server
from rnn_sentiment.server.config import ServerConfig
from rnn_sentiment.v1 import sentiment_pb2, sentiment_pb2_grpc
from tests.support import ServerProcess, free_port, write_untrained_checkpoint

CLI = [sys.executable, "-m", "rnn_sentiment.cli"]
# A call waits this long in the batcher on the held server: long past the short deadlines below.
HELD_BATCH_MS = 1500
QUEUE_TEXTS = 2


@pytest.fixture(scope="module")
def held_server() -> Iterator[ServerProcess]:
    """Calls wait in the batcher, the queue holds two texts, and reflection is off."""
    process = ServerProcess(extra_args=["--max-batch-delay-ms", str(HELD_BATCH_MS),
                                        "--max-queue-texts", str(QUEUE_TEXTS), "--no-reflection"])
    process.start()
    yield process
    assert process.stop() == 0, process.log()


def metric(server: ServerProcess, name: str, **labels: str) -> float:
    with urllib.request.urlopen(server.metrics_url, timeout=10) as response:
        text = response.read().decode()
    return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def wait_until(condition, what: str, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def raw_predict(server: ServerProcess, texts: list[str], timeout: float) -> sentiment_pb2.PredictResponse:
    """Predict on a channel of its own, without the SDK's retries: the status as the server sent it."""
    with grpc.insecure_channel(server.target) as channel:
        return sentiment_pb2_grpc.SentimentServiceStub(channel).Predict(
            sentiment_pb2.PredictRequest(texts=texts), timeout=timeout)


def test_a_deadline_that_passes_while_the_call_waits_is_deadline_exceeded_and_not_computed(
        held_server: ServerProcess) -> None:
    # A batch's size is recorded in the event-loop turn that takes it off the queue, and a scrape
    # flushes the metric buffer first: an empty queue means every earlier batch is counted.
    wait_until(lambda: metric(held_server, "rnn_sentiment_queue_depth") == 0, "an empty queue")
    computed = metric(held_server, "rnn_sentiment_batch_size_count")
    with pytest.raises(grpc.RpcError) as raised:
        raw_predict(held_server, ["a warm , funny film"], timeout=0.3)
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # Past the batch delay the dropped text has left the queue without reaching the model.
    wait_until(lambda: metric(held_server, "rnn_sentiment_queue_depth") == 0, "the queue emptied")
    assert metric(held_server, "rnn_sentiment_batch_size_count") == computed
    # and the server serves the next caller
    assert raw_predict(held_server, ["a warm , funny film"], timeout=30).predictions[0].label == "positive"


def test_a_full_queue_is_resource_exhausted_and_the_waiting_calls_still_finish(held_server: ServerProcess) -> None:
    wait_until(lambda: metric(held_server, "rnn_sentiment_queue_depth") == 0, "an empty queue")
    answers: list[sentiment_pb2.PredictResponse] = []
    filler = threading.Thread(target=lambda: answers.append(
        raw_predict(held_server, ["a warm , funny film"] * QUEUE_TEXTS, timeout=30)))
    filler.start()
    try:
        wait_until(lambda: metric(held_server, "rnn_sentiment_queue_depth") == QUEUE_TEXTS, "a full queue")
        with pytest.raises(grpc.RpcError) as raised:
            raw_predict(held_server, ["good"], timeout=30)
        assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert f"limit {QUEUE_TEXTS}" in raised.value.details()
    finally:
        filler.join(30)
    assert [p.label for p in answers[0].predictions] == ["positive"] * QUEUE_TEXTS


def test_no_reflection_turns_reflection_off_and_leaves_the_rest(held_server: ServerProcess) -> None:
    with grpc.insecure_channel(held_server.target) as channel:
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        with pytest.raises(grpc.RpcError) as raised:
            list(reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                                 timeout=10))
        assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
        health = health_pb2_grpc.HealthStub(channel)
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_is_on_by_default(server: ServerProcess) -> None:
    with grpc.insecure_channel(server.target) as channel:
        responses = list(reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10))
    names = {s.name for s in responses[0].list_services_response.service}
    assert "rnn_sentiment.v1.SentimentService" in names


def test_an_internal_error_reaches_the_caller_without_a_stack_trace(tmp_path: Path) -> None:
    """A model that fails at run time (a fault put into the real server's model call) is INTERNAL
    with a fixed message: no traceback, file name or exception text leaves the server."""
    write_untrained_checkpoint(tmp_path / "tiny", "tiny", "v1")
    secret = "secret-detail-/srv/models/weights"

    def failing_batch(items: list) -> list:
        raise RuntimeError(secret)

    async def scenario() -> None:
        config = ServerConfig(address="127.0.0.1:0", metrics_address="", torch_threads=1, model_dir=str(tmp_path))
        running = await bind_server(config)
        try:
            repository = await running.load_models()
            batcher = repository.resolve("tiny").batcher
            working = batcher._run_batch
            batcher._run_batch = failing_batch  # type: ignore[method-assign]
            async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
                stub = sentiment_pb2_grpc.SentimentServiceStub(channel)
                with pytest.raises(grpc.aio.AioRpcError) as raised:
                    await stub.Predict(sentiment_pb2.PredictRequest(texts=["a good film"]), timeout=30)
                error = raised.value
                assert error.code() == grpc.StatusCode.INTERNAL
                details = error.details() or ""
                trailers = str(error.trailing_metadata())
                for leak in ("Traceback", "File \"", secret, "RuntimeError", ".py"):
                    assert leak not in details and leak not in trailers, (leak, details, trailers)
                assert details == "internal error; the server logged the details"
                batcher._run_batch = working  # type: ignore[method-assign]
                answer = await stub.Predict(sentiment_pb2.PredictRequest(texts=["a good film"]), timeout=30)
                assert len(answer.predictions) == 1  # and it keeps serving
        finally:
            await running.drain()

    asyncio.run(scenario())


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120)


def test_cli_predict_info_and_health_against_a_live_server(server: ServerProcess) -> None:
    predicted = _cli("predict", "--target", server.target, "a warm , funny film", "a dull , lifeless film")
    assert predicted.returncode == 0, predicted.stderr
    lines = predicted.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["positive", "negative"]
    assert lines[0].endswith("a warm , funny film")

    as_json = _cli("predict", "--target", server.target, "--json", "a warm , funny film")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["predictions"][0]["label"] == "positive"

    with SentimentClient(server.target, timeout=30) as client:
        default = client.model_info()
        served = client.list_models()
    info = _cli("info", "--target", server.target)
    assert info.returncode == 0, info.stderr
    assert info.stdout.startswith(f"{default.name}@{default.version} (default): ")
    every = _cli("info", "--target", server.target, "--all", "--json")
    assert every.returncode == 0, every.stderr
    assert [m["name"] for m in json.loads(every.stdout)] == [m.name for m in served]
    unknown = _cli("info", "--target", server.target, "--model", "no-such-model")
    assert unknown.returncode != 0 and "NOT_FOUND" in unknown.stderr

    health = _cli("health", server.target)
    assert (health.returncode, health.stdout.strip()) == (0, "SERVING"), health.stderr


def test_cli_target_and_timeout_from_the_environment(server: ServerProcess) -> None:
    """docs/sdk.md: RNN_SENTIMENT_TARGET stands in for --target; a bad RNN_SENTIMENT_TIMEOUT is a
    usage error (exit 2) that names the variable, not a traceback."""
    environment = {**os.environ, "RNN_SENTIMENT_TARGET": server.target}
    health = subprocess.run([*CLI, "health"], capture_output=True, text=True, timeout=120, env=environment)
    assert (health.returncode, health.stdout.strip()) == (0, "SERVING"), health.stderr
    bad = subprocess.run([*CLI, "health"], capture_output=True, text=True, timeout=120,
                         env={**environment, "RNN_SENTIMENT_TIMEOUT": "soon"})
    assert bad.returncode == 2 and "RNN_SENTIMENT_TIMEOUT='soon'" in bad.stderr, bad
    assert "Traceback" not in bad.stderr


def test_cli_health_is_nonzero_unless_serving() -> None:
    """Scripts and container probes rely on the exit code: NOT_SERVING (models not loaded yet)
    and no server at all both exit non-zero."""
    async def scenario() -> None:
        running = await bind_server(ServerConfig(address="127.0.0.1:0", metrics_address="", torch_threads=1))
        try:
            process = await asyncio.create_subprocess_exec(
                *CLI, "health", f"127.0.0.1:{running.port}", stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE)
            stdout, stderr = await asyncio.wait_for(process.communicate(), 120)
            assert process.returncode == 1, (stdout, stderr)
            assert stdout.decode().strip() == "NOT_SERVING", stderr
        finally:
            await running.drain()

    asyncio.run(scenario())
    nobody = _cli("health", f"127.0.0.1:{free_port()}", "--timeout", "2")
    assert nobody.returncode == 1 and nobody.stderr.split(":")[0] in {"UNAVAILABLE", "DEADLINE_EXCEEDED"}, nobody


def test_the_asyncio_sdk_describes_the_server(server: ServerProcess) -> None:
    async def scenario() -> None:
        async with AsyncSentimentClient(server.target, timeout=30) as client:
            assert await client.health() == "SERVING"
            assert await client.health("rnn_sentiment.v1.SentimentService") == "SERVING"
            models = await client.list_models()
            default = await client.model_info()
            assert default.is_default and default.name in [m.name for m in models]
            assert [m for m in models if m.is_default] == [default]
            other = models[-1]
            assert (await client.model_info(other.name)).version == other.version
            assert default.max_tokens > 0 and default.architecture.parameter_count > 0

    asyncio.run(scenario())
