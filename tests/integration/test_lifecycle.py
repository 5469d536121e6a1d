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
    return gauge(server, "rnn_sentiment_queue_depth{", 'model="sst2-gru"')


def gauge(server: ServerProcess, prefix: str, *needles: str) -> float:
    """The value of the first exposition line starting with `prefix` and containing `needles`."""
    with urllib.request.urlopen(server.metrics_url, timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(prefix) and all(n in line for n in needles):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


# The drain must end when the last in-flight call does, not when the grace runs out: with a
# grace this long, "always waits the grace" and "waits for in-flight work" are minutes apart.
DRAIN_GRACE_SECONDS = 120
# The in-flight Predict is held in the batcher this long, so it is still running while the test
# checks that a call sent after the signal is refused.
HELD_BATCH_MS = 5000


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_drain_finishes_in_flight_calls_refuses_new_ones_and_exits_when_they_are_done(sig: int) -> None:
    server = ServerProcess(extra_args=["--max-batch-delay-ms", str(HELD_BATCH_MS),
                                       "--grace-seconds", str(DRAIN_GRACE_SECONDS)]).start()
    try:
        # No health Watch here: an open stream must not be what keeps the server up.
        with grpc.insecure_channel(server.target) as channel, SentimentClient(server.target, timeout=60) as client:
            health = health_pb2_grpc.HealthStub(channel)
            predict = sentiment_pb2_grpc.SentimentServiceStub(channel).Predict
            assert health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == SERVING
            assert gauge(server, "rnn_sentiment_ready ") == 1
            finished: list[tuple[str, float]] = []
            caller = threading.Thread(target=lambda: finished.append(
                (client.predict("a warm , funny film").predictions[0].label, time.monotonic())))
            caller.start()
            deadline = time.monotonic() + 30
            while queue_depth(server) < 1:  # the call has reached the batcher
                assert time.monotonic() < deadline, server.log()
                time.sleep(0.02)
            signalled = time.monotonic()
            server.signal(sig)
            while health.Check(health_pb2.HealthCheckRequest(), timeout=10).status != NOT_SERVING:
                assert time.monotonic() < deadline, server.log()
                time.sleep(0.01)
            # A new call once the drain has begun: refused by the server itself (RetryInfo says
            # so; a closed port would give UNAVAILABLE too, but without it), not computed.
            with pytest.raises(grpc.RpcError) as refused:
                predict(sentiment_pb2.PredictRequest(texts=["good"]), timeout=10)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, refused.value
            status = rpc_status.from_call(refused.value)
            assert status is not None and any(d.Is(error_details_pb2.RetryInfo.DESCRIPTOR) for d in status.details)
            assert not finished, "the in-flight call ended before the refusal was checked"
            # and operators see it: rnn_sentiment_ready drops to 0 (the endpoint stays up while draining)
            while gauge(server, "rnn_sentiment_ready ") != 0:
                assert time.monotonic() < deadline, server.log()
                time.sleep(0.02)
            caller.join(60)
            assert [label for label, _ in finished] == ["positive"], server.log()
        assert server.process is not None
        assert server.process.wait(DRAIN_GRACE_SECONDS) == 0, server.log()
        exited = time.monotonic()
        # Exit follows the in-flight call's end within seconds (process teardown), far inside the grace.
        assert exited - finished[0][1] < DRAIN_GRACE_SECONDS / 4, (exited - signalled, server.log())
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


def test_a_call_parked_by_the_drain_is_answered_unavailable_before_its_deadline(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Just before the port closes the drain holds refusals (app.py, step 3); a held caller whose
    deadline comes first must still get UNAVAILABLE (retried), not DEADLINE_EXCEEDED."""
    from tests.support import write_untrained_checkpoint

    write_untrained_checkpoint(tmp_path / "tiny", "tiny", "v1")

    async def scenario() -> None:
        config = ServerConfig(address="127.0.0.1:0", metrics_address="", torch_threads=1, model_dir=str(tmp_path))
        running = await bind_server(config)
        try:
            await running.load_models()
            running.state.draining = True  # the drain's state at step 3, without closing the port
            running.state.park_refusals()
            async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
                stub = sentiment_pb2_grpc.SentimentServiceStub(channel)
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await stub.Predict(sentiment_pb2.PredictRequest(texts=["a good film"]), timeout=1.0)
                assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, refused.value
                status = rpc_status.from_call(refused.value)
                assert status is not None and any(d.Is(error_details_pb2.RetryInfo.DESCRIPTOR) for d in status.details)
        finally:
            running.state.release_refusals()
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
