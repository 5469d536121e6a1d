"""Everything an SDK call does except performing it, shared by SentimentClient and AsyncSentimentClient.

A call is described here as a `UnaryCall`: the stub method it uses, its request (arguments
checked and converted), and how the response becomes the typed result. A client only performs
it — blocking or awaited — inside `raising_sentiment_errors()`, with its timeout and metadata:

>>> call = predict_call("a warm film", model="")
>>> call.method, list(call.request.texts)
('Predict', ['a warm film'])
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Generic, Iterator, Literal, Sequence, TypeVar

import grpc
from google.protobuf.message import Message
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from rnn_sentiment.v1 import sentiment_pb2 as pb
from rnn_sentiment.v1 import sentiment_pb2_grpc as pb_grpc

from .channel import ChannelSettings
from .errors import SentimentError
from .requests import as_texts, trace_request
from .results import ModelInfo, PredictResult, TraceResult

DEFAULT_TIMEOUT = 10.0

ResultT = TypeVar("ResultT")
ChannelT = TypeVar("ChannelT", grpc.Channel, aio.Channel)
FunctionT = TypeVar("FunctionT", bound=Callable[..., Any])


@dataclass(frozen=True)
class Stubs:
    """The generated stubs on one channel: ours and the standard health service's.

    On a grpc.aio channel the same stub methods return awaitables instead of results.
    """

    sentiment: pb_grpc.SentimentServiceStub
    health: health_pb2_grpc.HealthStub

    @classmethod
    def on(cls, channel: grpc.Channel | aio.Channel) -> "Stubs":
        return cls(pb_grpc.SentimentServiceStub(channel), health_pb2_grpc.HealthStub(channel))


@dataclass(frozen=True)
class UnaryCall(Generic[ResultT]):
    """One unary RPC ready to perform: which stub method, the request, how to read the response."""

    service: Literal["sentiment", "health"]  # the attribute of Stubs that serves it
    method: str  # the RPC's name in its .proto, e.g. "Predict"
    request: Message
    to_result: Callable[[Any], ResultT]

    def bound_to(self, stubs: Stubs) -> Callable[..., Any]:
        """The stub's multi-callable for this RPC (blocking or awaitable, as the channel is)."""
        return getattr(getattr(stubs, self.service), self.method)  # type: ignore[no-any-return]


def open_channel(
    target: str,
    settings: ChannelSettings,
    *,
    secure: Callable[..., ChannelT],
    insecure: Callable[..., ChannelT],
) -> ChannelT:
    """A channel to `target` built by grpc's (or grpc.aio's) secure_channel or insecure_channel."""
    if settings.credentials:
        return secure(target, settings.credentials, options=settings.options)
    return insecure(target, options=settings.options)


@contextmanager
def raising_sentiment_errors() -> Iterator[None]:
    """Turn a failed call's grpc.RpcError (sync or aio) into the SDK's one SentimentError.

    `from None`: the gRPC error's own traceback says nothing the SentimentError does not.
    """
    try:
        yield
    except grpc.RpcError as error:
        raise SentimentError.from_rpc_error(error) from None


def documented_as(twin: Callable[..., Any]) -> Callable[[FunctionT], FunctionT]:
    """Give a method the docstring of its twin in the other client, so that text is written once."""

    def document(method: FunctionT) -> FunctionT:
        method.__doc__ = twin.__doc__
        return method

    return document


def predict_call(texts: str | Sequence[str], *, model: str) -> UnaryCall[PredictResult]:
    """Predict on one text or many (a bare string is one text)."""
    request = pb.PredictRequest(texts=as_texts(texts), model=model)
    return UnaryCall("sentiment", "Predict", request, PredictResult.from_message)


def trace_call(
    text: str,
    *,
    model: str,
    include_hidden_states: bool,
    attributions: Sequence[str],
    integrated_gradients_steps: int,
    all_layers: bool,
    top_k_units: int,
    include_memory_profile: bool,
) -> UnaryCall[TraceResult]:
    """Trace one text; raises ValueError for an unknown attribution name before anything is sent."""
    request = trace_request(
        text, model=model, include_hidden_states=include_hidden_states, attributions=attributions,
        integrated_gradients_steps=integrated_gradients_steps, all_layers=all_layers,
        top_k_units=top_k_units, include_memory_profile=include_memory_profile,
    )
    return UnaryCall("sentiment", "Trace", request, TraceResult.from_message)


def model_info_call(model: str) -> UnaryCall[ModelInfo]:
    """Describe one served model (the default when `model` is empty)."""
    return UnaryCall("sentiment", "GetModelInfo", pb.GetModelInfoRequest(model=model), ModelInfo.from_message)


def _model_infos(response: pb.ListModelsResponse) -> list[ModelInfo]:
    return [ModelInfo.from_message(m) for m in response.models]


def list_models_call() -> UnaryCall[list[ModelInfo]]:
    """Describe every served model, the default first."""
    return UnaryCall("sentiment", "ListModels", pb.ListModelsRequest(), _model_infos)


def serving_status_name(response: health_pb2.HealthCheckResponse) -> str:
    """"SERVING", "NOT_SERVING", ...: the name of a health answer's status."""
    return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)  # type: ignore[no-any-return]


def health_call(service: str) -> UnaryCall[str]:
    """The health status name of the server ("") or one service."""
    return UnaryCall("health", "Check", health_pb2.HealthCheckRequest(service=service), serving_status_name)
