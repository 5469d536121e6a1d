"""Health transitions and graceful drain on SIGTERM/SIGINT, on a server of the test's own."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from rnn_sentiment.client import AsyncSentimentClient, SentimentClient, SentimentError
from rnn_sentiment.server.app import bind_server
from rnn_sentiment.server.config import ServerConfig
from tests.support import ServerProcess

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def queue_depth(server: ServerProcess) -> float:
    with urllib.request.urlopen(server.metrics_url, timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("rnn_sentiment_queue_depth{") and 'model="sst2-gru"' in line:
                return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_drain_finishes_in_flight_calls_and_exits_zero(sig: int) -> None:
    # A long batch delay holds the first Predict in the batcher, so it is reliably in flight.
    server = ServerProcess(extra_args=["--max-batch-delay-ms", "1500", "--grace-seconds", "20"]).start()
    try:
        channel = grpc.insecure_channel(server.target)
        health = health_pb2_grpc.HealthStub(channel)
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == SERVING
        assert health.Check(health_pb2.HealthCheckRequest(service="rnn_sentiment.v1.SentimentService"), timeout=10).status == SERVING
        statuses: list[int] = []
        watch = health.Watch(health_pb2.HealthCheckRequest(), timeout=60)

        def collect() -> None:
            try:
                statuses.extend(r.status for r in watch)
            except grpc.RpcError:
                pass  # the stream ends when the server goes away

        watcher = threading.Thread(target=collect, daemon=True)
        watcher.start()

        with SentimentClient(server.target, timeout=60) as client:
            results: list[str] = []
            caller = threading.Thread(target=lambda: results.append(client.predict("a warm , funny film").predictions[0].label))
            caller.start()
            deadline = time.monotonic() + 30
            while queue_depth(server) < 1:  # the call has reached the batcher
                assert time.monotonic() < deadline, server.log()
                time.sleep(0.02)
            server.signal(sig)
            caller.join(60)
            assert results == ["positive"], server.log()
        assert server.process is not None
        assert server.process.wait(60) == 0, server.log()
        watcher.join(10)
        assert statuses[0] == SERVING and NOT_SERVING in statuses, statuses
        channel.close()
    finally:
        server.stop()


def test_health_is_not_serving_and_calls_unavailable_until_models_load() -> None:
    async def scenario() -> None:
        config = ServerConfig(address="127.0.0.1:0", metrics_address="", torch_threads=1)
        running = await bind_server(config)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
                health = health_pb2_grpc.HealthStub(channel)
                assert (await health.Check(health_pb2.HealthCheckRequest(), timeout=10)).status == NOT_SERVING
                async with AsyncSentimentClient(f"127.0.0.1:{running.port}") as client:
                    with pytest.raises(SentimentError) as raised:
                        await client.predict("good")
                    assert raised.value.code == "UNAVAILABLE"
                    await running.load_models()
                    assert (await health.Check(health_pb2.HealthCheckRequest(), timeout=10)).status == SERVING
                    assert (await client.predict("a warm , funny film")).predictions[0].label == "positive"
        finally:
            await running.drain()

    asyncio.run(scenario())
