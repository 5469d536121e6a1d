"""The front-door interceptor on a real grpc.aio server on loopback, around handlers of this test's own.

What a caller and an operator see of every call: its `grpc_server_*` series (type, service,
method, code, duration), admission refusals (RESOURCE_EXHAUSTED, never for health checks, the
slot given back when the call ends), malformed bytes answered INVALID_ARGUMENT, and the echoed
request id. The model is not involved, so each test takes milliseconds.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import re
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, TypeVar

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2

from rnn_sentiment.server.admission import AdmissionLimit
from rnn_sentiment.server.errors import not_found
from rnn_sentiment.server.instrumentation import (
    _ID_WHEN_LOGGED, FAILURE_LINES_PER_INTERVAL, UNPARSABLE, MetricsInterceptor, RequestIdFilter, current_request_id, request_id_replaced,
)
from rnn_sentiment.server.metrics import ServerMetrics

T = TypeVar("T")
SERVICE = "probe.v1.Probe"
Request = health_pb2.HealthCheckRequest
Response = health_pb2.HealthCheckResponse
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# A length-delimited field 1 that claims 5 bytes and brings 2: not a valid message.
MALFORMED = b"\x0a\x05ab"
SLOW_SECONDS = 0.2


class Probe:
    """Handlers that end each call the way the request asks."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.entered = asyncio.Event()
        self.seen_unparsable = 0

    async def unary(self, request: Any, context: aio.ServicerContext) -> Response:
        match request.service:
            case "slow":
                await asyncio.sleep(SLOW_SECONDS)
            case "hold":
                self.entered.set()
                await self.release.wait()
            case "abort":
                await context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
            case "refuse":
                raise not_found("no model named 'x'")
            case "raise":
                raise RuntimeError("a bug")
        return Response(status=SERVING)

    async def watch(self, request: Any, context: aio.ServicerContext) -> AsyncIterator[Response]:
        for _ in range(2):
            yield Response(status=SERVING)

    async def watch_writes(self, request: Any, context: aio.ServicerContext) -> None:
        """A handler that writes its responses instead of yielding them, as health's Watch does."""
        for _ in range(2):
            await context.write(Response(status=SERVING))

    async def chat(self, requests: AsyncIterator[Any], context: aio.ServicerContext) -> AsyncIterator[Response]:
        async for request in requests:
            if request.service == "hold":
                self.entered.set()
                await self.release.wait()
            if request.service == "raise":
                raise RuntimeError("a bug")
            if request.service == "abort":
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "not this one")
            yield Response(status=SERVING)

    async def flood(self, requests: AsyncIterator[bytes], context: aio.ServicerContext) -> AsyncIterator[bytes]:
        """Answers far larger than the flow-control window: a client that stops reading parks it at `yield`."""
        async for _ in requests:
            for _ in range(64):
                yield b"x" * (1 << 20)

    async def stream_predict(self, requests: AsyncIterator[Any], context: aio.ServicerContext) -> AsyncIterator[Response]:
        async for request in requests:
            if request is UNPARSABLE:
                self.seen_unparsable += 1
                yield Response(status=NOT_SERVING)
            else:
                yield Response(status=SERVING)

    async def health_check(self, request: Any, context: aio.ServicerContext) -> Response:
        return Response(status=SERVING)


def handlers(probe: Probe) -> list[grpc.GenericRpcHandler]:
    def rpc(kind: Callable[..., grpc.RpcMethodHandler], behaviour: Any) -> grpc.RpcMethodHandler:
        return kind(behaviour, request_deserializer=Request.FromString, response_serializer=Response.SerializeToString)

    return [
        grpc.method_handlers_generic_handler(SERVICE, {
            "Unary": rpc(grpc.unary_unary_rpc_method_handler, probe.unary),
            "Watch": rpc(grpc.unary_stream_rpc_method_handler, probe.watch),
            "WatchWrites": rpc(grpc.unary_stream_rpc_method_handler, probe.watch_writes),
            "Chat": rpc(grpc.stream_stream_rpc_method_handler, probe.chat),
            "StreamPredict": rpc(grpc.stream_stream_rpc_method_handler, probe.stream_predict),
        }),
        grpc.method_handlers_generic_handler(SERVICE, {
            "Flood": grpc.stream_stream_rpc_method_handler(probe.flood),  # raw bytes both ways
        }),
        grpc.method_handlers_generic_handler("grpc.health.v1.Health", {
            "Check": rpc(grpc.unary_unary_rpc_method_handler, probe.health_check),
        }),
    ]


class Front:
    """A server with the interceptor in front of the probe handlers, and a channel to it."""

    def __init__(self, metrics: ServerMetrics, probe: Probe, server: aio.Server, channel: aio.Channel) -> None:
        self.metrics, self.probe, self.server, self.channel = metrics, probe, server, channel

    def unary(self, method: str = "Unary", raw: bool = False) -> aio.UnaryUnaryMultiCallable:
        serializer = None if raw else Request.SerializeToString
        return self.channel.unary_unary(f"/{SERVICE}/{method}", request_serializer=serializer,
                                        response_deserializer=Response.FromString)

    def stream(self, method: str, raw: bool = False) -> aio.StreamStreamMultiCallable:
        serializer = None if raw else Request.SerializeToString
        return self.channel.stream_stream(f"/{SERVICE}/{method}", request_serializer=serializer,
                                          response_deserializer=Response.FromString)

    def watch(self, raw: bool = False, method: str = "Watch") -> aio.UnaryStreamMultiCallable:
        serializer = None if raw else Request.SerializeToString
        return self.channel.unary_stream(f"/{SERVICE}/{method}", request_serializer=serializer,
                                         response_deserializer=Response.FromString)

    def sample(self, name: str, method: str = "Unary", grpc_type: str = "unary", service: str = SERVICE,
               **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(
            name, {"grpc_type": grpc_type, "grpc_service": service, "grpc_method": method, **labels})
        return value or 0.0

    def handled(self, code: str, method: str = "Unary", grpc_type: str = "unary", service: str = SERVICE) -> float:
        return self.sample("grpc_server_handled_total", method, grpc_type, service, grpc_code=code)


def with_front(scenario: Callable[[Front], Awaitable[T]], max_in_progress: int | None = None) -> T:
    async def main() -> T:
        metrics = ServerMetrics.create()  # on the loop, as the server makes it: a scrape flushes at once
        probe = Probe()
        admission = None if max_in_progress is None else AdmissionLimit(max_in_progress)
        server = aio.server(interceptors=[MetricsInterceptor(metrics, admission)])
        server.add_generic_rpc_handlers(handlers(probe))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                return await asyncio.wait_for(scenario(Front(metrics, probe, server, channel)), 30)
        finally:
            probe.release.set()
            await server.stop(None)

    return asyncio.run(main())


async def eventually(condition: Callable[[], bool]) -> bool:
    """A call is counted just after its status is sent: poll a moment (bounded)."""
    for _ in range(300):
        if condition():
            return True
        await asyncio.sleep(0.01)
    return condition()


async def code_of(call: Awaitable[Any]) -> grpc.StatusCode:
    try:
        await call
    except aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def test_each_call_is_counted_once_by_type_service_method_and_code() -> None:
    async def scenario(front: Front) -> None:
        codes = [await code_of(front.unary()(Request(service=s), timeout=10))
                 for s in ("ok", "ok", "abort", "refuse", "raise")]
        assert codes == [grpc.StatusCode.OK] * 2 + [grpc.StatusCode.NOT_FOUND] * 2 + [grpc.StatusCode.UNKNOWN]
        assert front.sample("grpc_server_started_total") == 5
        assert await eventually(lambda: (front.handled("OK"), front.handled("NOT_FOUND"), front.handled("UNKNOWN")) == (2, 2, 1))
        assert front.sample("grpc_server_handling_seconds_count") == 5

        replies = [r async for r in front.stream("Chat")(iter([Request(), Request()]), timeout=10)]
        assert len(replies) == 2  # one stream is one call
        assert front.sample("grpc_server_started_total", "Chat", "bidi_stream") == 1
        assert await eventually(lambda: front.handled("OK", "Chat", "bidi_stream") == 1)
        assert front.handled("OK", "Unary", "bidi_stream") == 0

        assert (await front.unary()(Request(), timeout=10)).status == SERVING
        assert await eventually(lambda: front.handled("OK") == 3)  # the wrapped handler is reused, still counting

    with_front(scenario)


def test_handling_seconds_is_the_time_the_call_took() -> None:
    async def scenario(front: Front) -> None:
        await front.unary()(Request(service="slow"), timeout=10)
        total = front.sample("grpc_server_handling_seconds_sum")
        assert SLOW_SECONDS * 0.9 <= total < SLOW_SECONDS + 5
        # on a bucket boundary count: the call is above 100 ms and below 10 s
        assert front.sample("grpc_server_handling_seconds_bucket", le="0.1") == 0
        assert front.sample("grpc_server_handling_seconds_bucket", le="10.0") == 1

    with_front(scenario)


def test_a_streams_handling_seconds_is_its_whole_life() -> None:
    async def scenario(front: Front) -> None:
        stream = front.stream("Chat")(timeout=10)
        await stream.write(Request())
        await stream.read()
        await asyncio.sleep(SLOW_SECONDS)  # open and idle: still part of the call
        await stream.done_writing()
        assert await stream.code() == grpc.StatusCode.OK
        assert await eventually(lambda: front.handled("OK", "Chat", "bidi_stream") == 1)
        total = front.sample("grpc_server_handling_seconds_sum", "Chat", "bidi_stream")
        assert SLOW_SECONDS * 0.9 <= total < SLOW_SECONDS + 5

    with_front(scenario)


def test_a_call_the_client_cancels_is_counted_cancelled() -> None:
    async def scenario(front: Front) -> None:
        call = front.unary()(Request(service="hold"), timeout=10)
        await front.probe.entered.wait()
        call.cancel()
        assert await eventually(lambda: front.handled("CANCELLED") == 1)  # seen by the server a moment later
        assert front.handled("OK") == 0

    with_front(scenario)


def test_a_stream_that_fails_or_is_cancelled_is_counted_with_that_code() -> None:
    async def scenario(front: Front) -> None:
        assert await front.stream("Chat")(iter([Request(service="raise")]), timeout=10).code() == \
            grpc.StatusCode.UNKNOWN
        assert await eventually(lambda: front.handled("UNKNOWN", "Chat", "bidi_stream") == 1)
        assert await front.stream("Chat")(iter([Request(service="abort")]), timeout=10).code() == \
            grpc.StatusCode.FAILED_PRECONDITION  # ended by the handler's own context.abort
        assert await eventually(lambda: front.handled("FAILED_PRECONDITION", "Chat", "bidi_stream") == 1)
        stream = front.stream("Chat")(timeout=10)
        await stream.write(Request(service="hold"))
        await front.probe.entered.wait()
        stream.cancel()
        assert await eventually(lambda: front.handled("CANCELLED", "Chat", "bidi_stream") == 1)
        assert front.handled("OK", "Chat", "bidi_stream") == 0

    with_front(scenario)


def test_a_stream_cancelled_while_its_answers_wait_to_be_sent_is_counted_cancelled() -> None:
    """The handler is parked at `yield` (the client stopped reading); the cancellation closes it there."""
    async def scenario(front: Front) -> None:
        flood = front.channel.stream_stream(f"/{SERVICE}/Flood")(timeout=10)
        await flood.write(b"")
        await flood.read()
        await asyncio.sleep(0.3)  # the server fills the window and waits
        flood.cancel()
        assert await eventually(lambda: front.handled("CANCELLED", "Flood", "bidi_stream") == 1)
        assert front.handled("OK", "Flood", "bidi_stream") == 0

    with_front(scenario)


def test_an_unknown_method_is_unimplemented() -> None:
    async def scenario(front: Front) -> grpc.StatusCode:
        return await code_of(front.unary("NoSuchMethod")(Request(), timeout=10))

    assert with_front(scenario) == grpc.StatusCode.UNIMPLEMENTED


def test_beyond_the_admission_limit_calls_are_refused_and_counted_but_health_checks_pass() -> None:
    async def scenario(front: Front) -> None:
        held = asyncio.ensure_future(front.unary()(Request(service="hold"), timeout=10))
        await front.probe.entered.wait()
        with pytest.raises(aio.AioRpcError) as refused:
            await front.unary()(Request(), timeout=10)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "limit of 1 calls in progress" in refused.value.details()
        assert await eventually(lambda: front.handled("RESOURCE_EXHAUSTED") == 1)
        # A stream is refused too, and counted under its own method.
        assert await front.stream("Chat")(iter([Request()]), timeout=10).code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert await eventually(lambda: front.handled("RESOURCE_EXHAUSTED", "Chat", "bidi_stream") == 1)
        # Refusals took no slot and gave none back: the held call still has the only one.
        assert await code_of(front.unary()(Request(), timeout=10)) == grpc.StatusCode.RESOURCE_EXHAUSTED
        check = front.channel.unary_unary("/grpc.health.v1.Health/Check", request_serializer=Request.SerializeToString,
                                          response_deserializer=Response.FromString)
        assert (await check(Request(), timeout=10)).status == SERVING  # never refused
        front.probe.release.set()
        assert (await held).status == SERVING
        # The slot was given back when the call ended: the next calls are admitted, one after another.
        for _ in range(3):
            assert await code_of(front.unary()(Request(), timeout=10)) == grpc.StatusCode.OK

    with_front(scenario, max_in_progress=1)


def test_a_stream_holds_its_admission_slot_until_it_ends() -> None:
    async def scenario(front: Front) -> None:
        stream = front.stream("Chat")(timeout=10)
        await stream.write(Request(service="hold"))
        await front.probe.entered.wait()
        assert await code_of(front.unary()(Request(), timeout=10)) == grpc.StatusCode.RESOURCE_EXHAUSTED
        front.probe.release.set()
        await stream.read()
        await stream.done_writing()
        assert await stream.code() == grpc.StatusCode.OK
        assert await code_of(front.unary()(Request(), timeout=10)) == grpc.StatusCode.OK

    with_front(scenario, max_in_progress=1)


def test_a_failing_call_gives_its_admission_slot_back() -> None:
    async def scenario(front: Front) -> None:
        for ending in ("abort", "refuse", "raise", "ok"):
            assert await code_of(front.unary()(Request(service=ending), timeout=10)) != \
                grpc.StatusCode.RESOURCE_EXHAUSTED, ending

    with_front(scenario, max_in_progress=1)


def test_malformed_bytes_get_invalid_argument_naming_the_method() -> None:
    async def scenario(front: Front) -> None:
        with pytest.raises(aio.AioRpcError) as unary:
            await front.unary(raw=True)(MALFORMED, timeout=10)
        assert unary.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "Unary: could not parse the request" in unary.value.details()
        assert await eventually(lambda: front.handled("INVALID_ARGUMENT") == 1)

        with pytest.raises(aio.AioRpcError) as watch:
            [r async for r in front.watch(raw=True)(MALFORMED, timeout=10)]
        assert watch.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "Watch: could not parse the request" in watch.value.details()
        assert len([r async for r in front.watch()(Request(), timeout=10)]) == 2  # a valid one streams
        assert len([r async for r in front.watch(method="WatchWrites")(Request(), timeout=10)]) == 2

        chat = front.stream("Chat", raw=True)(iter([Request().SerializeToString(), MALFORMED]), timeout=10)
        with pytest.raises(aio.AioRpcError) as stream:
            [r async for r in chat]
        assert stream.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "Chat: could not parse the request" in stream.value.details()
        assert await eventually(lambda: front.handled("INVALID_ARGUMENT", "Chat", "bidi_stream") == 1)

    with_front(scenario)


def test_stream_predict_answers_each_malformed_message_and_carries_on() -> None:
    async def scenario(front: Front) -> None:
        messages = [Request().SerializeToString(), MALFORMED, Request().SerializeToString()]
        replies = [r.status async for r in front.stream("StreamPredict", raw=True)(iter(messages), timeout=10)]
        assert replies == [SERVING, NOT_SERVING, SERVING]
        assert await eventually(lambda: front.handled("OK", "StreamPredict", "bidi_stream") == 1)

    with_front(scenario)


@pytest.mark.parametrize(("sent", "echoed"), [("req-123", "req-123"), ("r" * 128, "r" * 128)])
def test_a_safe_request_id_is_echoed_in_the_initial_metadata(sent: str, echoed: str) -> None:
    async def scenario(front: Front) -> tuple[Any, Any]:
        call = front.unary()(Request(), metadata=(("x-request-id", sent),), timeout=10)
        await call
        stream = front.stream("Chat")(iter([Request()]), metadata=(("x-request-id", sent),), timeout=10)
        return list(await call.initial_metadata()), list(await stream.initial_metadata())

    unary, stream = with_front(scenario)
    assert ("x-request-id", echoed) in unary and ("x-request-id", echoed) in stream


def test_a_call_without_a_request_id_gets_none_echoed() -> None:
    async def scenario(front: Front) -> Any:
        call = front.unary()(Request(), timeout=10)
        await call
        return [key for key, _ in await call.initial_metadata()]

    assert "x-request-id" not in with_front(scenario)


def _fields_logged(request_id: str, replaced: bool, records: int = 1) -> list[dict[str, Any]]:
    """The structured fields RequestIdFilter gives `records` log records of one call; like the
    interceptor, only a replaced id sets the flag."""
    def in_call() -> list[dict[str, Any]]:
        current_request_id.set(request_id)
        if replaced:
            request_id_replaced.set(True)
        id_filter = RequestIdFilter()
        made = []
        for n in range(records):
            record = logging.LogRecord("rnn_sentiment.server.access", logging.INFO, __file__, 1, "rpc", None, None)
            record.fields = {"code": "NOT_FOUND", "n": n}  # type: ignore[attr-defined]
            assert id_filter.filter(record)  # the filter adds, never drops a line
            made.append(record.fields)  # type: ignore[attr-defined]
        return made

    return contextvars.copy_context().run(in_call)


def test_a_calls_log_lines_carry_its_request_id_and_keep_their_fields() -> None:
    assert _fields_logged("req-123", replaced=False) == [{"code": "NOT_FOUND", "n": 0, "request_id": "req-123"}]
    assert _fields_logged("0123abcd", replaced=True) == [
        {"code": "NOT_FOUND", "n": 0, "request_id": "0123abcd", "request_id_replaced": True}]


def test_a_call_without_an_id_gets_one_made_up_when_it_first_logs_the_same_on_every_line() -> None:
    first, second = _fields_logged(_ID_WHEN_LOGGED, replaced=False, records=2)
    assert re.fullmatch(r"[0-9a-f]{32}", first["request_id"]) and second["request_id"] == first["request_id"]
    assert "request_id_replaced" not in first


def test_outside_a_call_log_lines_carry_no_request_id() -> None:
    assert _fields_logged("", replaced=False) == [{"code": "NOT_FOUND", "n": 0}]


def test_the_access_log_is_throttled_per_code_and_refusals_get_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    """docs/reliability.md: one WARNING per window for overload refusals and for malformed bytes;
    other failures a few INFO lines per method and code, the rest counted; successes none."""
    caplog.set_level(logging.INFO, logger="rnn_sentiment.server.access")
    calls = FAILURE_LINES_PER_INTERVAL + 3

    async def scenario(front: Front) -> None:
        for ending in ("ok", "abort", "raise"):
            for _ in range(calls):
                await code_of(front.unary()(Request(service=ending), timeout=10))
        for _ in range(3):
            await code_of(front.unary(raw=True)(MALFORMED, timeout=10))
        await front.stream("Chat")(iter([Request(service="raise")]), timeout=10).code()
        held = asyncio.ensure_future(front.unary()(Request(service="hold"), timeout=10))
        await front.probe.entered.wait()
        for _ in range(3):
            assert await code_of(front.unary()(Request(), timeout=10)) == grpc.StatusCode.RESOURCE_EXHAUSTED
        front.probe.release.set()
        await held
        assert await eventually(lambda: front.handled("RESOURCE_EXHAUSTED") == 3)

    with_front(scenario, max_in_progress=1)
    access = [r for r in caplog.records if r.name == "rnn_sentiment.server.access"]
    rpc_lines = [(r.levelno, r.fields["code"]) for r in access if r.getMessage() == "rpc"]  # type: ignore[attr-defined]
    assert sorted(rpc_lines) == [(logging.INFO, "NOT_FOUND")] * FAILURE_LINES_PER_INTERVAL + \
        [(logging.INFO, "UNKNOWN")] * (FAILURE_LINES_PER_INTERVAL + 1)  # the stream's on top
    assert [r.fields["method"] for r in access if r.getMessage() == "rpc"].count("Chat") == 1  # type: ignore[attr-defined]
    warnings = [(r.getMessage(), r.fields["method"]) for r in access if r.levelno == logging.WARNING]  # type: ignore[attr-defined]
    assert warnings == [("could not parse a request (malformed protobuf)", "Unary"),
                        ("overloaded: refusing calls with RESOURCE_EXHAUSTED", "Unary")]


def test_when_debugging_every_call_gets_an_access_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="rnn_sentiment.server.access")

    async def scenario(front: Front) -> None:
        for _ in range(3):
            await front.unary()(Request(), timeout=10)
        assert len([r async for r in front.stream("Chat")(iter([Request()]), timeout=10)]) == 1
        await eventually(lambda: front.handled("OK", "Chat", "bidi_stream") == 1)

    with_front(scenario)
    lines = [(r.levelno, r.fields["method"], r.fields["code"]) for r in caplog.records  # type: ignore[attr-defined]
             if r.name == "rnn_sentiment.server.access" and r.getMessage() == "rpc"]
    assert lines == [(logging.DEBUG, "Unary", "OK")] * 3 + [(logging.DEBUG, "Chat", "OK")]


def test_the_log_limits_are_the_documented_ones() -> None:
    """README and docs/reliability.md promise these numbers to operators reading the logs."""
    from rnn_sentiment.server.instrumentation import REFUSAL_LOG_SECONDS

    root = Path(__file__).resolve().parents[3]
    readme = " ".join((root / "README.md").read_text().split())
    reliability = " ".join((root / "docs" / "reliability.md").read_text().split())
    assert (f"at most {FAILURE_LINES_PER_INTERVAL} lines per method and status code per "
            f"{REFUSAL_LOG_SECONDS:g} s") in readme
    assert f"one WARNING per {REFUSAL_LOG_SECONDS:g} s for all such refusals" in reliability
    assert f"one WARNING line per {REFUSAL_LOG_SECONDS:g} s at most" in reliability
