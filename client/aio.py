"""AsyncSentimentClient: the asyncio SDK, same methods and results as SentimentClient."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import grpc
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from rnn_sentiment.v1 import sentiment_pb2 as pb
from rnn_sentiment.v1 import sentiment_pb2_grpc as pb_grpc

from .channel import RetryPolicy, channel_settings
from .errors import SentimentError
from .requests import as_texts, trace_request
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
        options: Sequence[tuple[str, Any]] = (),
        tls: bool | None = None,
        root_ca: str | Path | None = None,
        client_cert: str | Path | None = None,
        client_key: str | Path | None = None,
        server_name: str | None = None,
        token: str | None = None,
        retry: bool | RetryPolicy | None = None,
    ) -> None:
        """Open a channel to `target`; must be created inside a running event loop's thread.

        Security and retry arguments (and their `RNN_SENTIMENT_*` variables) as SentimentClient's.
        """
        self.target = target
        self.timeout = timeout
        settings = channel_settings(
            credentials=credentials, tls=tls, root_ca=root_ca, client_cert=client_cert, client_key=client_key,
            server_name=server_name, token=token, retry=retry, metadata=metadata, options=options,
        )
        self._metadata = settings.metadata
        self._channel = (
            aio.secure_channel(target, settings.credentials, options=settings.options)
            if settings.credentials
            else aio.insecure_channel(target, options=settings.options)
        )
        self._stub = pb_grpc.SentimentServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    async def predict(self, texts: str | Sequence[str], *, model: str = "") -> PredictResult:
        """Score one text or many (one prediction per text, same order)."""
        request = pb.PredictRequest(texts=as_texts(texts), model=model)
        return PredictResult.from_message(await self._call(self._stub.Predict, request))

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
        """Trace one text word by word: per token the hidden state, the prefix sentiment and its
        change, each cell's gates; optionally attributions and the memory profile.

        attributions: any of "prefix", "gradient_x_input", "integrated_gradients", "occlusion"
        (scores signed toward the predicted label). integrated_gradients_steps: 0 = the server's
        default (32). all_layers: cells of every layer, not only the top. top_k_units: keep only the
        k most active hidden units (see TraceResult.hidden_units). include_memory_profile: how much of
        each token survives to the end (TraceStep.memory, TraceResult.memory_profile).
        """
        request = trace_request(
            text, model=model, include_hidden_states=include_hidden_states, attributions=attributions,
            integrated_gradients_steps=integrated_gradients_steps, all_layers=all_layers,
            top_k_units=top_k_units, include_memory_profile=include_memory_profile,
        )
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
