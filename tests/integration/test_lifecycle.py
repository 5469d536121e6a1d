"""Health transitions and graceful drain on SIGTERM/SIGINT, on a server of the test's own.

The drain loses nothing a client would not retry: calls in flight finish, new calls get
UNAVAILABLE with RetryInfo, nothing is CANCELLED, and a health Watch does not hold it up.
"""

from __future__ import annotations

import asyncio
import collections
import signal
import threading
import time
import urllib.request

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from rnn_sentiment.client import AsyncSentimentClient, SentimentClient, SentimentError
from rnn_sentiment.server.app import bind_server
from rnn_sentiment.server.config import ServerConfig
from rnn_sentiment.v1 import sentiment_pb2, sentiment_pb2_grpc
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


DRAIN_RUNS = 3
DRAIN_CALLERS = 30
PREDICT = "a warm , funny film"


async def _call_through_sigterm(server: ServerProcess) -> collections.Counter:
    """DRAIN_CALLERS callers in a loop (no retries), SIGTERM, calls until the server has exited.

    Also checks that a call sent once the drain has begun gets UNAVAILABLE with RetryInfo."""
    codes: collections.Counter = collections.Counter()
    calling = True

    async def caller() -> None:
        # A connection of its own per caller, as separate client processes would have.
        async with grpc.aio.insecure_channel(server.target, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
            stub = sentiment_pb2_grpc.SentimentServiceStub(channel)
            while calling:
                try:
                    await stub.Predict(sentiment_pb2.PredictRequest(texts=[PREDICT]), timeout=10)
                    codes["OK"] += 1
                except grpc.aio.AioRpcError as error:
                    codes[error.code().name] += 1
                    await asyncio.sleep(0.01)  # a refused connection fails at once: do not spin

    callers = [asyncio.ensure_future(caller()) for _ in range(DRAIN_CALLERS)]
    deadline = time.monotonic() + 60
    while codes["OK"] < DRAIN_CALLERS:  # every caller is under way
        assert time.monotonic() < deadline, (codes, server.log())
        await asyncio.sleep(0.05)
    server.signal(signal.SIGTERM)
    while "draining" not in server.log():
        assert time.monotonic() < deadline, server.log()
        await asyncio.sleep(0.02)
    async with grpc.aio.insecure_channel(server.target, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await sentiment_pb2_grpc.SentimentServiceStub(channel).Predict(
                sentiment_pb2.PredictRequest(texts=[PREDICT]), timeout=10)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, refused.value
    status = rpc_status.from_call(refused.value)
    assert status is not None and any(detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR) for detail in status.details)
    assert server.process is not None
    while server.process.poll() is None:
        assert time.monotonic() < deadline + 60, server.log()
        await asyncio.sleep(0.05)
    calling = False
    await asyncio.gather(*callers)
    return codes


def test_drain_under_load_cancels_nothing_and_refuses_new_calls_with_unavailable() -> None:
    # gRPC's shutdown cancels the calls it has received but not handed to a handler yet: with
    # callers in a loop that was 40-50 CANCELLED per run before the drain parked them.
    for run in range(DRAIN_RUNS):
        server = ServerProcess(extra_args=["--drain-seconds", "3"], keep_log=True).start()
        try:
            codes = asyncio.run(_call_through_sigterm(server))
            assert server.process is not None and server.process.returncode == 0, server.log()
            assert set(codes) == {"OK", "UNAVAILABLE"}, f"run {run}: {dict(codes)}\n{server.log()}"
        finally:
            server.stop()


def test_a_health_watch_does_not_hold_the_drain() -> None:
    # A grace far longer than the bounded wait below: a Watch held open would hold the stop for it.
    server = ServerProcess(extra_args=["--grace-seconds", "300"]).start()
    try:
        with grpc.insecure_channel(server.target) as channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=120)
            assert next(watch).status == SERVING
            server.signal(signal.SIGTERM)
            statuses = []
            with pytest.raises(grpc.RpcError) as ended:
                for response in watch:
                    statuses.append(response.status)
            assert statuses == [NOT_SERVING]  # told first, then the stream ends
            assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
        assert server.process is not None
        assert server.process.wait(60) == 0, server.log()
    finally:
        server.stop()
