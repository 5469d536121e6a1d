"""SentimentClient: the blocking SDK over one gRPC channel.

Each call is built by client/calls.py (shared with AsyncSentimentClient); this class performs it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import grpc
from grpc_health.v1 import health_pb2

from .calls import (
    DEFAULT_TIMEOUT, ResultT, Stubs, UnaryCall, health_call, list_models_call, model_info_call, open_channel,
    predict_call, raising_sentiment_errors, trace_call,
)
from .channel import RetryPolicy, channel_settings
from .model_limits import ModelLimits
from .predict_many import DEFAULT_IN_FLIGHT, ChunkPlan, ResultFuture, chunks_of, pipelined
from .targets import channel_target
from .errors import SentimentError
from .results import ModelInfo, Prediction, PredictResult, TraceResult
from .stream_core import Backoff
from .streams import SentimentStream, predict_stream

__all__ = ["DEFAULT_TIMEOUT", "SentimentClient"]


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
        """Open a channel to `target` ("host:port"); `timeout` is the per-call deadline in seconds.

        `target` may also be a list of "ip:port" or a `dns:///name:port` URI (every address of a
        Kubernetes headless Service): calls then spread round robin over the replicas.
        `options` are more gRPC channel options. `wait_for_ready=True`: a call made while no server
        is reachable waits for one (up to its deadline) instead of failing UNAVAILABLE at once.

        Security and retries (each left None falls back to its `RNN_SENTIMENT_*` variable, see
        rnn_sentiment.client.channel): `root_ca` (PEM path) or `tls=True` (system roots) for TLS;
        `client_cert`/`client_key` for mutual TLS; `server_name` when the certificate names another
        host than `target`; `token` sent as `authorization: Bearer <token>`. Calls answered
        UNAVAILABLE are retried with backoff (RetryPolicy); `retry=False` turns that off, and
        `retry=OVERLOAD_RETRY_POLICY` retries RESOURCE_EXHAUSTED too, after the server's RetryInfo delay:
        `SentimentClient("rnn.example:443", root_ca="ca.pem", token=os.environ["TOKEN"])`.
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
        self._channel = open_channel(resolved.target, settings, secure=grpc.secure_channel,
                                     insecure=grpc.insecure_channel)
        self._stubs = Stubs.on(self._channel)
        self._stream_backoff = Backoff.from_channel_options(settings.options)  # failover's retry policy

    def predict(self, texts: str | Sequence[str], *, model: str = "") -> PredictResult:
        """Score one text or many (one prediction per text, same order)."""
        return self._run(predict_call(texts, model=model))

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
        return self._run(trace_call(
            text, model=model, include_hidden_states=include_hidden_states, attributions=attributions,
            integrated_gradients_steps=integrated_gradients_steps, all_layers=all_layers,
            top_k_units=top_k_units, include_memory_profile=include_memory_profile,
        ))

    def stream(self, model: str = "", *, include_steps: bool = False,
               timeout: float | None = None) -> SentimentStream:
        """Open a live-sentiment stream (StreamSentiment): `send(chunk)` returns the running
        prediction, `close()` the whole text's; a context manager. Unidirectional models only.

        `include_steps`: each update also carries a step per token its chunk completed. `timeout`:
        a deadline for the whole stream in seconds (default none). A stream that fails with
        UNAVAILABLE, or that the server ended as idle, is reopened and its text replayed (unless
        retries are off): no error is seen.
        """
        return SentimentStream(self._stubs.sentiment.StreamSentiment, model=model, include_steps=include_steps,
                               metadata=self._metadata, timeout=timeout, backoff=self._stream_backoff)

    def predict_stream(self, texts: Iterable[str], *, model: str = "", batch: int = 1,
                       timeout: float | None = None) -> Iterator[Prediction]:
        """Score many texts over one StreamPredict stream, pipelined: yields one Prediction per text,
        in order, as answers arrive; `texts` is read lazily, at most 64 requests of `batch` texts
        ahead of the answers. A text that Predict would refuse raises SentimentError there.
        `timeout`: a deadline for the whole stream in seconds (default none).
        """
        return predict_stream(self._stubs.sentiment.StreamPredict, texts, model=model, batch=batch,
                              metadata=self._metadata, timeout=timeout)

    def predict_many(self, texts: Iterable[str], *, model: str = "", batch_size: int | None = None,
                     in_flight: int = DEFAULT_IN_FLIGHT) -> Iterator[Prediction]:
        """Score any number of texts: yields one Prediction per text, in order, read lazily.

        Texts go in Predict calls of `batch_size` (at most, and by default, the server's
        max_texts_per_request, read once per model from GetModelInfo), `in_flight` calls at a time.
        A refused text raises SentimentError (its field names the index within its call).
        `for p in client.predict_many(open("reviews.txt")): print(p.label)`
        """
        plan = ChunkPlan.for_server(self._limits.info(model, self.model_info), batch_size, in_flight)

        def start(chunk: list[str]) -> ResultFuture:
            call = predict_call(chunk, model=model)
            future = call.bound_to(self._stubs).future(call.request, **self._call_options())

            def wait() -> PredictResult:
                with raising_sentiment_errors():
                    return call.to_result(future.result())

            return ResultFuture(wait, future.cancel)

        return pipelined(chunks_of(iter(texts), plan.size), start, plan.in_flight)

    def model_info(self, model: str = "") -> ModelInfo:
        """Describe one served model (the default when `model` is empty)."""
        return self._run(model_info_call(model))

    def list_models(self) -> list[ModelInfo]:
        """Describe every served model, the default first."""
        return self._run(list_models_call())

    def health(self, service: str = "") -> str:
        """The health status name ("SERVING", "NOT_SERVING", ...) of the server or one service."""
        return self._run(health_call(service))

    def wait_until_serving(self, timeout: float = 30.0) -> None:
        """Block until health says SERVING (via Watch, no polling loop), or raise SentimentError.

        Waits for the server to come up too (wait_for_ready), so it suits freshly started servers.
        """
        with raising_sentiment_errors():
            stream = self._stubs.health.Watch(health_pb2.HealthCheckRequest(), timeout=timeout, wait_for_ready=True)
            for response in stream:
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    return
        raise SentimentError("UNAVAILABLE", "the health stream ended before SERVING")

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "SentimentClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _run(self, call: UnaryCall[ResultT]) -> ResultT:
        """Perform `call`, blocking: the one thing this client does differently from the asyncio one."""
        with raising_sentiment_errors():
            response = call.bound_to(self._stubs)(call.request, **self._call_options())
        return call.to_result(response)

    def _call_options(self) -> dict[str, Any]:
        """Every unary call's deadline, metadata and wait_for_ready."""
        return {"timeout": self.timeout, "metadata": self._metadata, "wait_for_ready": self.wait_for_ready}
