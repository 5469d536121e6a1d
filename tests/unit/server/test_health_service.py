"""DrainingHealthServicer on a real grpc.aio server (loopback, no model): what a health-checking
client or a load balancer sees from Check and Watch, before and during a drain."""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from rnn_sentiment.server.health_service import DrainingHealthServicer

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
MODEL = "rnn_sentiment.v1.SentimentService"
# Long enough for a loaded machine; a read that waits this long means no message is coming.
READ_SECONDS = 10.0


Scenario = Callable[[DrainingHealthServicer, health_pb2_grpc.HealthStub], Awaitable[None]]


def _run(scenario: Scenario) -> None:
    async def main() -> None:
        health = DrainingHealthServicer()
        server = aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(health, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                await scenario(health, health_pb2_grpc.HealthStub(channel))
        finally:
            await server.stop(0)

    asyncio.run(main())


def _request(service: str = "") -> health_pb2.HealthCheckRequest:
    return health_pb2.HealthCheckRequest(service=service)


async def _read(watch: aio.UnaryStreamCall) -> int:
    return (await asyncio.wait_for(watch.read(), READ_SECONDS)).status


def test_check_reports_each_service_and_refuses_an_unknown_one_with_not_found() -> None:
    async def scenario(health: DrainingHealthServicer, stub: health_pb2_grpc.HealthStub) -> None:
        await health.set("", SERVING)
        await health.set(MODEL, NOT_SERVING)
        assert (await stub.Check(_request(), timeout=10)).status == SERVING
        assert (await stub.Check(_request(MODEL), timeout=10)).status == NOT_SERVING
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Check(_request("no.such.Service"), timeout=10)
        assert refused.value.code() == grpc.StatusCode.NOT_FOUND
        assert refused.value.details() == "unknown service 'no.such.Service'"

    _run(scenario)


def test_watch_sends_the_current_status_then_each_change_once() -> None:
    async def scenario(health: DrainingHealthServicer, stub: health_pb2_grpc.HealthStub) -> None:
        await health.set("", NOT_SERVING)
        watch = stub.Watch(_request(), timeout=30)
        assert await _read(watch) == NOT_SERVING
        await health.set("", NOT_SERVING)  # no change: nothing is sent for it
        await health.set(MODEL, SERVING)  # another service: not this watcher's business
        await health.set("", SERVING)
        assert await _read(watch) == SERVING  # the next message is the change, not a repeat
        watch.cancel()

    _run(scenario)


def test_watching_an_unknown_service_waits_for_it_to_appear() -> None:
    async def scenario(health: DrainingHealthServicer, stub: health_pb2_grpc.HealthStub) -> None:
        watch = stub.Watch(_request(MODEL), timeout=30)
        assert await _read(watch) == SERVICE_UNKNOWN  # the protocol's answer, not an error
        await health.set(MODEL, SERVING)
        assert await _read(watch) == SERVING
        watch.cancel()

    _run(scenario)


def test_a_drain_sends_every_watcher_not_serving_then_ends_its_stream_unavailable() -> None:
    async def scenario(health: DrainingHealthServicer, stub: health_pb2_grpc.HealthStub) -> None:
        await health.set("", SERVING)
        await health.set(MODEL, SERVING)
        watches = [stub.Watch(_request(), timeout=30), stub.Watch(_request(MODEL), timeout=30)]
        for watch in watches:
            assert await _read(watch) == SERVING
        await health.drain()
        for watch in watches:
            assert await _read(watch) == NOT_SERVING
            with pytest.raises(grpc.aio.AioRpcError) as ended:
                await _read(watch)
            assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
            assert ended.value.details() == "the server is draining; watch another replica"
        # Check answers NOT_SERVING for every known service after the drain.
        assert (await stub.Check(_request(), timeout=10)).status == NOT_SERVING
        assert (await stub.Check(_request(MODEL), timeout=10)).status == NOT_SERVING

    _run(scenario)


def test_a_watch_begun_during_a_drain_gets_one_status_and_ends_at_once() -> None:
    async def scenario(health: DrainingHealthServicer, stub: health_pb2_grpc.HealthStub) -> None:
        await health.set("", SERVING)
        await health.drain()
        watch = stub.Watch(_request(), timeout=30)
        assert await _read(watch) == NOT_SERVING
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            await _read(watch)
        assert ended.value.code() == grpc.StatusCode.UNAVAILABLE

    _run(scenario)
