"""AsyncSentimentClient: the asyncio SDK, same methods and results as SentimentClient."""

from __future__ import annotations

from typing import Sequence

import grpc
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from rnn_sentiment.v1 import sentiment_pb2 as pb
from rnn_sentiment.v1 import sentiment_pb2_grpc as pb_grpc

from .errors import SentimentError
from .requests import as_texts
from .results import ModelInfo, PredictResult, TraceResult
from .sync import DEFAULT_TIMEOUT


class AsyncSentimentClient:
    """An asyncio client for a rnn-sentiment server.

    >>> async with AsyncSentimentClient("127.0.0.1:50051") as client:   # doctest: +SKIP
    ...     (await client.predict("a dull , lifeless movie")).predictions[0].label
    'negative'
    """

    def __init__(
        self,
        target: str,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        credentials: grpc.ChannelCredentials | None = None,
        metadata: Sequence[tuple[str, str]] = (),
    ) -> None:
        """Open a channel to `target`; must be created inside a running event loop's thread."""
        self.target = target
        self.timeout = timeout
        self._metadata = tuple(metadata)
        self._channel = aio.secure_channel(target, credentials) if credentials else aio.insecure_channel(target)
        self._stub = pb_grpc.SentimentServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    async def predict(self, texts: str | Sequence[str], *, model: str = "") -> PredictResult:
        """Score one text or many (one prediction per text, same order)."""
        request = pb.PredictRequest(texts=as_texts(texts), model=model)
        return PredictResult.from_message(await self._call(self._stub.Predict, request))

    async def trace(self, text: str, *, model: str = "", include_hidden_states: bool = True) -> TraceResult:
        """Trace one text word by word."""
        request = pb.TraceRequest(text=text, model=model, include_hidden_states=include_hidden_states)
        return TraceResult.from_message(await self._call(self._stub.Trace, request))

    async def model_info(self, model: str = "") -> ModelInfo:
        """Describe one served model (the default when `model` is empty)."""
        return ModelInfo.from_message(await self._call(self._stub.GetModelInfo, pb.GetModelInfoRequest(model=model)))

    async def list_models(self) -> list[ModelInfo]:
        """Describe every served model, the default first."""
        response = await self._call(self._stub.ListModels, pb.ListModelsRequest())
        return [ModelInfo.from_message(m) for m in response.models]

    async def health(self, service: str = "") -> str:
        """The health status name of the server or one service."""
        response = await self._call(self._health.Check, health_pb2.HealthCheckRequest(service=service))
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> "AsyncSentimentClient":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _call(self, method, request):  # type: ignore[no-untyped-def]
        try:
            return await method(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as error:
            raise SentimentError.from_rpc_error(error) from None
