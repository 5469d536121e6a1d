"""SentimentClient: the blocking SDK over one gRPC channel."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from rnn_sentiment.v1 import sentiment_pb2 as pb
from rnn_sentiment.v1 import sentiment_pb2_grpc as pb_grpc

from .channel import RetryPolicy, channel_settings
from .errors import SentimentError
from .results import ModelInfo, PredictResult, TraceResult
from .requests import as_texts, trace_request

DEFAULT_TIMEOUT = 10.0


class SentimentClient:
    """A blocking client for a rnn-sentiment server.

    >>> with SentimentClient("127.0.0.1:50051") as client:          # doctest: +SKIP
    ...     result = client.predict(["a warm, funny and beautifully acted film"])
    ...     result.predictions[0].label
    'positive'

    Every call raises SentimentError (with the gRPC code and field violations) on failure.
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
        """Open a channel to `target` ("host:port"); `timeout` is the per-call deadline in seconds.

        `options` are gRPC channel options, e.g. client-side round robin over every address of a
        DNS name (a Kubernetes headless Service):
        `SentimentClient("dns:///rnn-sentiment-headless:50051",
        options=[("grpc.lb_policy_name", "round_robin")])`.

        Security and retries (each left None falls back to its `RNN_SENTIMENT_*` variable, see
        rnn_sentiment.client.channel): `root_ca` (PEM path) or `tls=True` (system roots) for TLS;
        `client_cert`/`client_key` for mutual TLS; `server_name` when the certificate names another
        host than `target`; `token` sent as `authorization: Bearer <token>`. Calls answered
        UNAVAILABLE are retried with backoff (RetryPolicy); `retry=False` turns that off:
        `SentimentClient("rnn.example:443", root_ca="ca.pem", token=os.environ["TOKEN"])`.
        """
        self.target = target
        self.timeout = timeout
        settings = channel_settings(
            credentials=credentials, tls=tls, root_ca=root_ca, client_cert=client_cert, client_key=client_key,
            server_name=server_name, token=token, retry=retry, metadata=metadata, options=options,
        )
        self._metadata = settings.metadata
        self._channel = (
            grpc.secure_channel(target, settings.credentials, options=settings.options)
            if settings.credentials
            else grpc.insecure_channel(target, options=settings.options)
        )
        self._stub = pb_grpc.SentimentServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def predict(self, texts: str | Sequence[str], *, model: str = "") -> PredictResult:
        """Score one text or many (one prediction per text, same order)."""
        request = pb.PredictRequest(texts=as_texts(texts), model=model)
        return PredictResult.from_message(self._call(self._stub.Predict, request))

    def trace(
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
        return TraceResult.from_message(self._call(self._stub.Trace, request))

    def model_info(self, model: str = "") -> ModelInfo:
        """Describe one served model (the default when `model` is empty)."""
        return ModelInfo.from_message(self._call(self._stub.GetModelInfo, pb.GetModelInfoRequest(model=model)))

    def list_models(self) -> list[ModelInfo]:
        """Describe every served model, the default first."""
        response = self._call(self._stub.ListModels, pb.ListModelsRequest())
        return [ModelInfo.from_message(m) for m in response.models]

    def health(self, service: str = "") -> str:
        """The health status name ("SERVING", "NOT_SERVING", ...) of the server or one service."""
        response = self._call(self._health.Check, health_pb2.HealthCheckRequest(service=service))
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    def wait_until_serving(self, timeout: float = 30.0) -> None:
        """Block until health says SERVING (via Watch, no polling loop), or raise SentimentError.

        Waits for the server to come up too (wait_for_ready), so it suits freshly started servers.
        """
        try:
            stream = self._health.Watch(health_pb2.HealthCheckRequest(), timeout=timeout, wait_for_ready=True)
            for response in stream:
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    return
        except grpc.RpcError as error:
            raise SentimentError.from_rpc_error(error) from None
        raise SentimentError("UNAVAILABLE", "the health stream ended before SERVING")

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "SentimentClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _call(self, method, request):  # type: ignore[no-untyped-def]
        try:
            return method(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as error:
            raise SentimentError.from_rpc_error(error) from None
