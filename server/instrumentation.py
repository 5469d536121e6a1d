"""A server interceptor for every unary call: standard gRPC metrics, request ids, an access log.

The request id comes from the caller's `x-request-id` metadata and is echoed back in the
response's initial metadata; without one the server makes one up for its own logs. Either way
it is attached to every log line of the call.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from contextvars import ContextVar
from typing import Any, Awaitable, Callable

import grpc
from grpc import aio

from .metric_buffer import BufferedCounter
from .metrics import ServerMetrics

REQUEST_ID_KEY = "x-request-id"
MAX_REQUEST_ID_LENGTH = 128
current_request_id: ContextVar[str] = ContextVar("current_request_id", default="")
# Set for a call that brought no id: the log filter makes one up the first time the call logs,
# so the many calls that never log never pay for a random id.
_ID_WHEN_LOGGED = "\0"

access_log = logging.getLogger("rnn_sentiment.server.access")


def request_id_of(context: aio.ServicerContext) -> str:
    """The caller's x-request-id (trimmed to a sane length), or "" when it sent none."""
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_KEY and isinstance(value, str) and value:
            return value[:MAX_REQUEST_ID_LENGTH]
    return ""


class RequestIdFilter(logging.Filter):
    """Adds the current call's request id to every log record's structured fields."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = current_request_id.get()
        if request_id == _ID_WHEN_LOGGED:
            request_id = uuid.uuid4().hex
            current_request_id.set(request_id)  # the call's later lines carry the same id
        if request_id:
            record.fields = {**getattr(record, "fields", {}), "request_id": request_id}
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
    """Counts started/handled RPCs and times them; streaming handlers are passed through.

    The wrapped handler and its labelled (buffered) series are built once per method, not per
    call: this sits on every request's path.
    """

    def __init__(self, metrics: ServerMetrics) -> None:
        self._metrics = metrics
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        wrapped = self._wrapped.get(handler_call_details.method)
        if wrapped is not None:
            return wrapped
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        wrapped = self._wrap(handler, handler_call_details.method)
        self._wrapped[handler_call_details.method] = wrapped
        return wrapped

    def _wrap(self, handler: grpc.RpcMethodHandler, full_method: str) -> grpc.RpcMethodHandler:
        service, method = _split_method(full_method)
        labels = (_grpc_type(handler), service, method)
        behavior = handler.unary_unary
        buffer = self._metrics.buffer
        started = buffer.counter(self._metrics.rpc_started.labels(*labels))
        handling_seconds = buffer.histogram(self._metrics.rpc_handling_seconds.labels(*labels))
        handled: dict[grpc.StatusCode, BufferedCounter] = {}  # code -> its series, made on first use

        async def observed(request: Any, context: aio.ServicerContext) -> Any:
            started.inc()
            start = time.perf_counter()
            code = grpc.StatusCode.OK
            caller_request_id = request_id_of(context)
            # Each call runs in its own task and context, so the id cannot leak between calls.
            current_request_id.set(caller_request_id or _ID_WHEN_LOGGED)
            if caller_request_id:
                await context.send_initial_metadata(((REQUEST_ID_KEY, caller_request_id),))
            try:
                return await behavior(request, context)
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
                elapsed = time.perf_counter() - start
                if code not in handled:
                    handled[code] = buffer.counter(self._metrics.rpc_handled.labels(*labels, code.name))
                handled[code].inc()
                handling_seconds.observe(elapsed)
                # Failures are worth a line each; successes only when debugging (they are many).
                level = logging.DEBUG if code == grpc.StatusCode.OK else logging.INFO
                if access_log.isEnabledFor(level):
                    access_log.log(level, "rpc", extra={"fields": {
                        "method": method, "code": code.name, "seconds": round(elapsed, 6),
                    }})

        return grpc.unary_unary_rpc_method_handler(
            observed,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
