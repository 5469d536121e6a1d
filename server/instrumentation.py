"""A server interceptor that records the standard gRPC server metrics for every unary call."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Awaitable, Callable

import grpc
from grpc import aio

from .metrics import ServerMetrics


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
    """Counts started/handled RPCs and times them; streaming handlers are passed through."""

    def __init__(self, metrics: ServerMetrics) -> None:
        self._metrics = metrics

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        service, method = _split_method(handler_call_details.method)
        labels = (_grpc_type(handler), service, method)
        behavior = handler.unary_unary
        metrics = self._metrics

        async def observed(request: Any, context: aio.ServicerContext) -> Any:
            metrics.rpc_started.labels(*labels).inc()
            start = time.perf_counter()
            code = grpc.StatusCode.OK
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
                metrics.rpc_handled.labels(*labels, code.name).inc()
                metrics.rpc_handling_seconds.labels(*labels).observe(time.perf_counter() - start)

        return grpc.unary_unary_rpc_method_handler(
            observed,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
