"""AuthInterceptor on a real grpc.aio server (loopback, no model): every kind of handler is
guarded, health is not, and reflection asked for explicitly needs a token too."""

from __future__ import annotations

import asyncio
import threading

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from rnn_sentiment.server.auth import AuthInterceptor, TokenSet
from rnn_sentiment.v1 import sentiment_pb2 as pb
from rnn_sentiment.v1 import sentiment_pb2_grpc as pb_grpc

TOKEN = "unit-token-77c1a0e4"
SERVICE = pb.DESCRIPTOR.services_by_name["SentimentService"].full_name


class Instant(pb_grpc.SentimentServiceServicer):
    async def Predict(self, request: pb.PredictRequest, context: aio.ServicerContext) -> pb.PredictResponse:
        return pb.PredictResponse(model="instant")


async def _serve() -> tuple[aio.Server, str]:
    server = aio.server(interceptors=[AuthInterceptor(TokenSet((TOKEN.encode(),)))])
    pb_grpc.add_SentimentServiceServicer_to_server(Instant(), server)
    health_servicer = health.aio.HealthServicer()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((SERVICE, reflection.SERVICE_NAME), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


def test_unary_and_streaming_handlers_need_a_token_health_does_not() -> None:
    async def scenario() -> None:
        server, target = await _serve()
        try:
            async with aio.insecure_channel(target) as channel:
                predict = pb_grpc.SentimentServiceStub(channel).Predict
                with pytest.raises(grpc.RpcError) as refused:
                    await predict(pb.PredictRequest(texts=["good"]), timeout=10)
                assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
                ok = await predict(pb.PredictRequest(texts=["good"]), timeout=10,
                                   metadata=(("authorization", f"Bearer {TOKEN}"),))
                assert ok.model == "instant"
                health_stub = health_pb2_grpc.HealthStub(channel)
                checked = await health_stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
                assert checked.status == health_pb2.HealthCheckResponse.SERVING
                watch = health_stub.Watch(health_pb2.HealthCheckRequest(), timeout=10)
                assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
                watch.cancel()
        finally:
            await server.stop(0)

    asyncio.run(scenario())


def test_explicit_reflection_behind_auth_needs_a_token() -> None:
    loop = asyncio.new_event_loop()
    server, target = loop.run_until_complete(_serve())
    # The reflection database is a blocking client: the server's loop runs in a thread meanwhile.
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        with grpc.insecure_channel(target) as channel:
            with pytest.raises(grpc.RpcError) as refused:
                ProtoReflectionDescriptorDatabase(channel).get_services()
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with grpc.intercept_channel(grpc.insecure_channel(target), _BearerToken(TOKEN)) as channel:
            assert SERVICE in ProtoReflectionDescriptorDatabase(channel).get_services()
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(0), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


class _BearerToken(grpc.StreamStreamClientInterceptor):
    def __init__(self, token: str) -> None:
        self._metadata = (("authorization", f"Bearer {token}"),)

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
        details = client_call_details._replace(metadata=tuple(client_call_details.metadata or ()) + self._metadata)
        return continuation(details, request_iterator)
