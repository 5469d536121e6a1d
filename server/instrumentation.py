"""The front door, one interceptor for every unary call and bidirectional stream: admission,
request parsing, request ids, standard gRPC metrics and an access log.

In order, for each call:
1. The request id: the caller's `x-request-id` when it is in the safe alphabet
   (`[A-Za-z0-9._:-]{1,128}`), echoed back; any other value is replaced by a server-made id,
   which is echoed instead (the caller's bytes never are) and marked `request_id_replaced` in the
   call's log lines. Without one the server makes one up for its own logs only.
2. Admission (`AdmissionLimit`): beyond `max_concurrent_rpcs` calls in progress the call is refused
   at once with RESOURCE_EXHAUSTED and RetryInfo (health checks are never refused).
3. Parsing: the handler's request deserializer is replaced by a tolerant one, so malformed bytes
   get INVALID_ARGUMENT "<method>: could not parse the request" instead of gRPC's UNKNOWN with a
   class name and a traceback in the log; the warning is throttled.
Refusals are counted in `grpc_server_handled_total` like every other end of a call.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
import time
import uuid
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable

import grpc
from grpc import aio
from prometheus_client import Counter

from .admission import UNLIMITED_SERVICES, AdmissionLimit
from .errors import FieldViolation, ServiceError, invalid_argument
from .log_throttle import ThrottledWarning
from .metric_buffer import BufferedCounter
from .metrics import ServerMetrics

REQUEST_ID_KEY = "x-request-id"
MAX_REQUEST_ID_LENGTH = 128
SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,%d}" % MAX_REQUEST_ID_LENGTH)
# At most one line per this many seconds for each kind of refusal a caller can repeat at will.
REFUSAL_LOG_SECONDS = 10.0
# Failure lines per method, code and REFUSAL_LOG_SECONDS window before the rest are only counted.
FAILURE_LINES_PER_INTERVAL = 10

# Streaming methods that answer a malformed message with an error response and carry on.
MESSAGE_ERROR_METHODS = frozenset({"StreamPredict"})

current_request_id: ContextVar[str] = ContextVar("current_request_id", default="")
request_id_replaced: ContextVar[bool] = ContextVar("request_id_replaced", default=False)
# Set for a call that brought no id: the log filter makes one up the first time the call logs,
# so the many calls that never log never pay for a random id.
_ID_WHEN_LOGGED = "\0"

access_log = logging.getLogger("rnn_sentiment.server.access")


@dataclass(frozen=True)
class RequestId:
    """The id a call's log lines carry and the response echoes ("" when nothing is echoed)."""

    echoed: str
    replaced: bool  # the caller sent a value outside the safe alphabet


def request_id_of(metadata: Any) -> RequestId:
    """The call's request id from its invocation metadata (see the module docstring)."""
    for key, value in metadata or ():
        if key != REQUEST_ID_KEY:
            continue
        if isinstance(value, str) and SAFE_REQUEST_ID.fullmatch(value):
            return RequestId(value, replaced=False)
        return RequestId(uuid.uuid4().hex, replaced=True)
    return RequestId("", replaced=False)


class RequestIdFilter(logging.Filter):
    """Adds the current call's request id to every log record's structured fields."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = current_request_id.get()
        if request_id == _ID_WHEN_LOGGED:
            request_id = uuid.uuid4().hex
            current_request_id.set(request_id)  # the call's later lines carry the same id
        if request_id:
            fields = {**getattr(record, "fields", {}), "request_id": request_id}
            if request_id_replaced.get():
                fields["request_id_replaced"] = True
            record.fields = fields
        return True


class _Unparsable:
    """What the tolerant deserializer returns for bytes that are not a valid request."""


UNPARSABLE = _Unparsable()


def tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """`deserializer`, returning UNPARSABLE instead of raising on malformed bytes."""
    if deserializer is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception:  # DecodeError, and UnicodeDecodeError for invalid UTF-8 in a string field
            return UNPARSABLE

    return parse


def unparsable_request(method: str) -> ServiceError:
    # No class names or parser internals: the caller learns what failed and what to do.
    return invalid_argument([FieldViolation(
        "request", f"{method}: could not parse the request (not a valid serialized {method}Request message)"
    )])


def _take_request_id(context: aio.ServicerContext) -> str:
    """The call's request id, set for its log lines; returns the id to echo ("" for none).
    Each call runs in its own task and context, so the id cannot leak between calls."""
    request_id = request_id_of(context.invocation_metadata())
    current_request_id.set(request_id.echoed or _ID_WHEN_LOGGED)
    if request_id.replaced:
        request_id_replaced.set(True)
    return request_id.echoed


async def _enter(context: aio.ServicerContext, echoed: str, admission: AdmissionLimit | None) -> bool:
    """Echo the request id and take an admission slot: True when one was taken (leave it after
    the call); raises the refusal when the worker is full."""
    if echoed:
        await context.send_initial_metadata(((REQUEST_ID_KEY, echoed),))
    if admission is None:
        return False
    if not admission.try_enter():
        raise admission.refusal()
    return True


def _split_method(full_method: str) -> tuple[str, str]:
    # "/rnn_sentiment.v1.SentimentService/Predict" -> ("rnn_sentiment.v1.SentimentService", "Predict")
    _, service, method = full_method.split("/", 2)
    return service, method


def _grpc_type(handler: grpc.RpcMethodHandler) -> str:
    if handler.request_streaming and handler.response_streaming:
        return "bidi_stream"
    if handler.request_streaming:
        return "client_stream"
    if handler.response_streaming:
        return "server_stream"
    return "unary"


class MetricsInterceptor(aio.ServerInterceptor):
    """Admits, parses, counts and times unary calls and bidirectional streams; a unary-stream
    call's request is parsed tolerantly too; client-streaming handlers are passed through.

    The wrapped handler and its labelled series are built once per method, not per
    call: this sits on every request's path.
    """

    def __init__(self, metrics: ServerMetrics, admission: AdmissionLimit | None = None) -> None:
        self._metrics = metrics
        self._admission = admission
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}
        self._unparsable_log = ThrottledWarning(
            access_log, "could not parse a request (malformed protobuf)", REFUSAL_LOG_SECONDS
        )
        self._overload_log = ThrottledWarning(
            access_log, "overloaded: refusing calls with RESOURCE_EXHAUSTED", REFUSAL_LOG_SECONDS
        )

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        wrapped = self._wrapped.get(handler_call_details.method)
        if wrapped is not None:
            return wrapped
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        if handler.unary_unary is not None:
            wrapped = self._wrap(handler, handler_call_details.method)
        elif handler.unary_stream is not None:
            wrapped = self._wrap_unary_stream(handler, handler_call_details.method)
        elif handler.stream_stream is not None:
            wrapped = self._wrap_stream_stream(handler, handler_call_details.method)
        else:
            return handler
        self._wrapped[handler_call_details.method] = wrapped
        return wrapped

    def _end_recorder(self, labels: tuple[str, str, str], method: str) -> Callable[[grpc.StatusCode, float, bool], None]:
        """What the end of each call of one method records: its code and duration, and a log line.

        Successes get a line only when debugging (they are many). Failures get a throttled INFO
        line per method and code (`log_failure`); refusals under overload a throttled warning of
        their own, since a line each would cost the most when the server can least afford it.
        A caller can fail calls at will (bad input, unknown models, missing tokens), so a line
        each would let it fill the log; a few lines per code and interval keep request ids
        traceable in ordinary operation, and the next line counts what was suppressed.
        """
        buffer = self._metrics.buffer
        handling_seconds = buffer.histogram(self._metrics.rpc_handling_seconds.labels(*labels))
        handled: dict[grpc.StatusCode, BufferedCounter] = {}  # code -> its series, made on first use
        failure_logs: dict[grpc.StatusCode, ThrottledWarning] = {}
        overload_log = self._overload_log

        def ended(code: grpc.StatusCode, elapsed: float, log_failure: bool) -> None:
            if code not in handled:
                handled[code] = buffer.counter(self._metrics.rpc_handled.labels(*labels, code.name))
            handled[code].inc()
            handling_seconds.observe(elapsed)
            if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                overload_log.warn(method=method)
            elif code != grpc.StatusCode.OK and log_failure:
                failure_log = failure_logs.get(code)
                if failure_log is None:
                    failure_log = failure_logs[code] = ThrottledWarning(
                        access_log, "rpc", REFUSAL_LOG_SECONDS, level=logging.INFO, burst=FAILURE_LINES_PER_INTERVAL)
                failure_log.warn(method=method, code=code.name, seconds=round(elapsed, 6))
            if access_log.isEnabledFor(logging.DEBUG):
                access_log.debug("rpc", extra={"fields": {
                    "method": method, "code": code.name, "seconds": round(elapsed, 6),
                }})

        return ended

    def _wrap(self, handler: grpc.RpcMethodHandler, full_method: str) -> grpc.RpcMethodHandler:
        service, method = _split_method(full_method)
        labels = (_grpc_type(handler), service, method)
        behavior = handler.unary_unary
        started = self._metrics.buffer.counter(self._metrics.rpc_started.labels(*labels))
        ended = self._end_recorder(labels, method)
        admission = None if service in UNLIMITED_SERVICES else self._admission
        unparsable_log = self._unparsable_log

        async def observed(request: Any, context: aio.ServicerContext) -> Any:
            started.inc()
            start = time.perf_counter()
            code = grpc.StatusCode.OK
            admitted = False
            echoed = _take_request_id(context)
            try:
                admitted = await _enter(context, echoed, admission)
                if request is UNPARSABLE:
                    unparsable_log.warn(method=method)
                    raise unparsable_request(method)
                return await behavior(request, context)
            except ServiceError as error:  # refused at the front door
                code = error.code
                await context.abort(error.code, error.message, trailing_metadata=error.trailing_metadata())
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            except aio.AbortError:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            except Exception:
                code = grpc.StatusCode.UNKNOWN
                raise
            finally:
                if admitted and admission is not None:
                    admission.leave()
                # Malformed bytes have their own throttled warning, logged above.
                ended(code, time.perf_counter() - start, request is not UNPARSABLE)

        return grpc.unary_unary_rpc_method_handler(
            observed,
            request_deserializer=tolerant(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )

    def _wrap_stream_stream(self, handler: grpc.RpcMethodHandler, full_method: str) -> grpc.RpcMethodHandler:
        """A bidirectional stream is one call: one request id, one admission slot for its
        lifetime, one start, end and duration in the grpc_server_* series. Malformed messages
        reach methods in MESSAGE_ERROR_METHODS as UNPARSABLE (they answer each with an error and
        go on); any other method's stream ends with INVALID_ARGUMENT at the first one."""
        service, method = _split_method(full_method)
        labels = (_grpc_type(handler), service, method)
        behavior = handler.stream_stream
        started = self._metrics.buffer.counter(self._metrics.rpc_started.labels(*labels))
        ended = self._end_recorder(labels, method)
        admission = None if service in UNLIMITED_SERVICES else self._admission
        unparsable_log = self._unparsable_log
        answers_unparsable = method in MESSAGE_ERROR_METHODS

        async def parsed(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
            async for request in requests:
                if request is UNPARSABLE:
                    unparsable_log.warn(method=method)
                    raise unparsable_request(method)
                yield request

        async def observed(requests: AsyncIterator[Any], context: aio.ServicerContext) -> AsyncIterator[Any]:
            started.inc()
            start = time.perf_counter()
            code = grpc.StatusCode.OK
            admitted = False
            echoed = _take_request_id(context)
            try:
                admitted = await _enter(context, echoed, admission)
                # A method that answers UNPARSABLE itself reads gRPC's iterator directly: one
                # generator less per message on the path that exists for throughput.
                async for response in behavior(requests if answers_unparsable else parsed(requests), context):
                    yield response
            except ServiceError as error:
                code = error.code
                await context.abort(error.code, error.message, trailing_metadata=error.trailing_metadata())
            except (asyncio.CancelledError, GeneratorExit):
                code = grpc.StatusCode.CANCELLED
                raise
            except aio.AbortError:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            except Exception:
                code = grpc.StatusCode.UNKNOWN
                raise
            finally:
                if admitted and admission is not None:
                    admission.leave()
                ended(code, time.perf_counter() - start, True)

        return grpc.stream_stream_rpc_method_handler(
            observed,
            request_deserializer=tolerant(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )

    def _wrap_unary_stream(self, handler: grpc.RpcMethodHandler, full_method: str) -> grpc.RpcMethodHandler:
        _, method = _split_method(full_method)
        behavior = handler.unary_stream
        unparsable_log = self._unparsable_log

        async def parsed(request: Any, context: aio.ServicerContext) -> None:
            if request is UNPARSABLE:
                unparsable_log.warn(method=method)
                error = unparsable_request(method)
                await context.abort(error.code, error.message, trailing_metadata=error.trailing_metadata())
            responses = behavior(request, context)
            if inspect.isasyncgen(responses):  # a generator handler; health's Watch writes instead
                async for response in responses:
                    await context.write(response)
            else:
                await responses

        return grpc.unary_stream_rpc_method_handler(
            parsed,
            request_deserializer=tolerant(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )
