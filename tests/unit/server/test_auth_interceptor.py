"""AuthInterceptor on a real grpc.aio server (loopback, no model): every kind of handler is
guarded, health is not, and reflection asked for explicitly needs a token too."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, AsyncIterator

import grpc
import pytest
from grpc import aio
from google.protobuf.wrappers_pb2 import StringValue
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


ECHO = "test.v1.Echo"
Metadata = tuple[tuple[str, str], ...]


def _text(value: str) -> StringValue:
    return StringValue(value=value)


async def _unary(request: StringValue, context: aio.ServicerContext) -> StringValue:
    return _text(request.value + "!")


async def _server_stream(request: StringValue, context: aio.ServicerContext) -> AsyncIterator[StringValue]:
    for part in request.value.split():
        yield _text(part + "!")


async def _client_stream(requests: AsyncIterator[StringValue], context: aio.ServicerContext) -> StringValue:
    return _text("+".join([r.value async for r in requests]) + "!")


async def _bidi(requests: AsyncIterator[StringValue], context: aio.ServicerContext) -> AsyncIterator[StringValue]:
    async for request in requests:
        yield _text(request.value + "!")


def _echo_handler() -> grpc.GenericRpcHandler:
    # Every kind of handler, each with the (de)serializers the guard must keep.
    kinds = {"Unary": grpc.unary_unary_rpc_method_handler, "ServerStream": grpc.unary_stream_rpc_method_handler,
             "ClientStream": grpc.stream_unary_rpc_method_handler, "Bidi": grpc.stream_stream_rpc_method_handler}
    behaviours = {"Unary": _unary, "ServerStream": _server_stream, "ClientStream": _client_stream, "Bidi": _bidi}
    return grpc.method_handlers_generic_handler(ECHO, {
        name: kind(behaviours[name], request_deserializer=StringValue.FromString,
                    response_serializer=StringValue.SerializeToString)
        for name, kind in kinds.items()})


def _method(channel: aio.Channel, kind: str, name: str) -> Any:
    return getattr(channel, kind)(f"/{ECHO}/{name}", request_serializer=StringValue.SerializeToString,
                                  response_deserializer=StringValue.FromString)


async def _two() -> AsyncIterator[StringValue]:
    yield _text("a")
    yield _text("b")


async def _call_unary(channel: aio.Channel, metadata: Metadata) -> str:
    return (await _method(channel, "unary_unary", "Unary")(_text("hi"), metadata=metadata, timeout=10)).value


async def _call_server_stream(channel: aio.Channel, metadata: Metadata) -> list[str]:
    stream = _method(channel, "unary_stream", "ServerStream")(_text("a b"), metadata=metadata, timeout=10)
    return [r.value async for r in stream]


async def _call_client_stream(channel: aio.Channel, metadata: Metadata) -> str:
    return (await _method(channel, "stream_unary", "ClientStream")(_two(), metadata=metadata, timeout=10)).value


async def _call_bidi(channel: aio.Channel, metadata: Metadata) -> list[str]:
    return [r.value async for r in _method(channel, "stream_stream", "Bidi")(_two(), metadata=metadata, timeout=10)]


def _refusable_calls(channel: aio.Channel, metadata: Metadata) -> dict[str, Any]:
    return {
        "unary": _method(channel, "unary_unary", "Unary")(_text("hi"), metadata=metadata, timeout=10),
        "server stream": _method(channel, "unary_stream", "ServerStream")(_text("a b"), metadata=metadata, timeout=10),
        "client stream": _method(channel, "stream_unary", "ClientStream")(metadata=metadata, timeout=10),
        "bidi": _method(channel, "stream_stream", "Bidi")(metadata=metadata, timeout=10),
    }


def test_every_kind_of_method_is_guarded_and_answers_in_full_with_a_token() -> None:
    calls = (_call_unary, _call_server_stream, _call_client_stream, _call_bidi)

    async def scenario() -> None:
        server = aio.server(interceptors=[AuthInterceptor(TokenSet((TOKEN.encode(),)))])
        server.add_generic_rpc_handlers((_echo_handler(),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                with_token = (("authorization", f"Bearer {TOKEN}"),)
                answers = [await call(channel, with_token) for call in calls]
                assert answers == ["hi!", ["a!", "b!"], "a+b!", ["a!", "b!"]]
                for metadata in ((), (("authorization", "Bearer wrong"),)):
                    for name, call in _refusable_calls(channel, metadata).items():
                        # Streams send nothing: the refusal must come before any request is read.
                        assert await call.code() == grpc.StatusCode.UNAUTHENTICATED, name
                        assert "bearer token" in (await call.details() or ""), name
                # A method nobody serves is UNIMPLEMENTED, token or not: the guard has nothing to wrap.
                with pytest.raises(aio.AioRpcError) as missing:
                    await channel.unary_unary(f"/{ECHO}/Absent")(b"", timeout=10)
                assert missing.value.code() == grpc.StatusCode.UNIMPLEMENTED
        finally:
            await server.stop(0)

    asyncio.run(scenario())
