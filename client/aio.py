"""AsyncSentimentClient: the asyncio SDK, same methods and results as SentimentClient.

Each call is built by client/calls.py (shared with SentimentClient); this class awaits it.
The docstrings of the calls are SentimentClient's, copied by `documented_as`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, AsyncIterable, AsyncIterator, Iterable, Sequence

import grpc
from grpc import aio
from grpc_health.v1 import health_pb2

from .calls import (
    DEFAULT_TIMEOUT, ResultT, Stubs, UnaryCall, documented_as, health_call, list_models_call, model_info_call,
    open_channel, predict_call, raising_sentiment_errors, trace_call,
)
from .channel import RetryPolicy, channel_settings
from .errors import SentimentError
from .model_limits import ModelLimits
from .predict_many import DEFAULT_IN_FLIGHT, ChunkPlan, pipelined_async
from .targets import channel_target
from .aio_streams import AsyncSentimentStream, predict_stream, stream_updates
from .results import ModelInfo, Prediction, PredictResult, StreamUpdate, TraceResult
from .stream_core import Backoff
from .sync import SentimentClient


class AsyncSentimentClient:
    """An asyncio client for a rnn-sentiment server.

    >>> async with AsyncSentimentClient("127.0.0.1:50051") as client:   # doctest: +SKIP
    ...     (await client.predict("a dull , lifeless movie")).predictions[0].label
    'negative'
    """

    def __init__(
        self,
        target: str | Sequence[str],
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        credentials: grpc.ChannelCredentials | None = None,
        metadata: Sequence[tuple[str, str]] = (),
        options: Sequence[tuple[str, Any]] = (),
        tls: bool | None = None,
        root_ca: str | Path | None = None,
        client_cert: str | Path | None = None,
        client_key: str | Path | None = None,
        server_name: str | None = None,
        token: str | None = None,
        retry: bool | RetryPolicy | None = None,
        wait_for_ready: bool = False,
    ) -> None:
        """Open a channel to `target`; must be created inside a running event loop's thread.

        Targets (several, `dns:///`), `wait_for_ready`, security and retry arguments (and their
        `RNN_SENTIMENT_*` variables) as SentimentClient's.
        """
        resolved = channel_target(target)
        self.target = resolved.target
        self.timeout = timeout
        self.wait_for_ready = wait_for_ready
        settings = channel_settings(
            credentials=credentials, tls=tls, root_ca=root_ca, client_cert=client_cert, client_key=client_key,
            server_name=server_name, token=token, retry=retry, metadata=metadata,
            options=[*resolved.options, *options],
        )
        self._metadata = settings.metadata
        self._limits = ModelLimits()
        self._channel = open_channel(resolved.target, settings, secure=aio.secure_channel,
                                     insecure=aio.insecure_channel)
        self._stubs = Stubs.on(self._channel)
        self._stream_backoff = Backoff.from_channel_options(settings.options)  # failover's retry policy

    @documented_as(SentimentClient.predict)
    async def predict(self, texts: str | Sequence[str], *, model: str = "") -> PredictResult:
        return await self._run(predict_call(texts, model=model))

    @documented_as(SentimentClient.trace)
    async def trace(
        self,
        text: str,
        *,
        model: str = "",
        include_hidden_states: bool = True,
        attributions: Sequence[str] = (),
        integrated_gradients_steps: int = 0,
        all_layers: bool = False,
        top_k_units: int = 0,
        include_memory_profile: bool = False,
    ) -> TraceResult:
        return await self._run(trace_call(
            text, model=model, include_hidden_states=include_hidden_states, attributions=attributions,
            integrated_gradients_steps=integrated_gradients_steps, all_layers=all_layers,
            top_k_units=top_k_units, include_memory_profile=include_memory_profile,
        ))

    def stream(self, model: str = "", *, include_steps: bool = False,
               timeout: float | None = None) -> AsyncSentimentStream:
        """Open a live-sentiment stream (StreamSentiment): `await send(chunk)` returns the running
        prediction, `await close()` the whole text's; `async with`. Failover, `include_steps` and
        `timeout` as SentimentClient.stream.
        """
        return AsyncSentimentStream(self._stubs.sentiment.StreamSentiment, model=model, include_steps=include_steps,
                                    metadata=self._metadata, timeout=timeout, backoff=self._stream_backoff)

    def stream_texts(self, chunks: AsyncIterable[str], model: str = "", *, include_steps: bool = False,
                     timeout: float | None = None) -> AsyncIterator[StreamUpdate]:
        """The running sentiment of a text arriving as `chunks`: one update per chunk, then the final
        one (`final` True) once `chunks` ends. `async for update in client.stream_texts(words()): ...`
        """
        return stream_updates(self.stream(model, include_steps=include_steps, timeout=timeout), chunks)

    def predict_stream(self, texts: Iterable[str] | AsyncIterable[str], *, model: str = "", batch: int = 1,
                       timeout: float | None = None) -> AsyncIterator[Prediction]:
        """Score many texts over one StreamPredict stream, pipelined, as SentimentClient.predict_stream:
        `async for prediction in client.predict_stream(texts): ...`
        """
        return predict_stream(self._stubs.sentiment.StreamPredict, texts, model=model, batch=batch,
                              metadata=self._metadata, timeout=timeout)

    @documented_as(SentimentClient.predict_many)
    async def predict_many(self, texts: Iterable[str] | AsyncIterable[str], *, model: str = "",
                           batch_size: int | None = None,
                           in_flight: int = DEFAULT_IN_FLIGHT) -> AsyncIterator[Prediction]:
        info = self._limits.cached(model) or self._limits.remember(model, await self.model_info(model))
        plan = ChunkPlan.for_server(info, batch_size, in_flight)
        async for prediction in pipelined_async(texts, plan.size, lambda chunk: self.predict(chunk, model=model),
                                                plan.in_flight):
            yield prediction

    @documented_as(SentimentClient.wait_until_serving)
    async def wait_until_serving(self, timeout: float = 30.0) -> None:
        with raising_sentiment_errors():
            stream = self._stubs.health.Watch(health_pb2.HealthCheckRequest(), timeout=timeout, wait_for_ready=True)
            async for response in stream:
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    stream.cancel()
                    return
        raise SentimentError("UNAVAILABLE", "the health stream ended before SERVING")

    @documented_as(SentimentClient.model_info)
    async def model_info(self, model: str = "") -> ModelInfo:
        return await self._run(model_info_call(model))

    @documented_as(SentimentClient.list_models)
    async def list_models(self) -> list[ModelInfo]:
        return await self._run(list_models_call())

    @documented_as(SentimentClient.health)
    async def health(self, service: str = "") -> str:
        return await self._run(health_call(service))

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> "AsyncSentimentClient":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _run(self, call: UnaryCall[ResultT]) -> ResultT:
        """Perform `call`, awaited: the one thing this client does differently from the blocking one."""
        with raising_sentiment_errors():
            response = await call.bound_to(self._stubs)(call.request, timeout=self.timeout, metadata=self._metadata,
                                                        wait_for_ready=self.wait_for_ready)
        return call.to_result(response)
