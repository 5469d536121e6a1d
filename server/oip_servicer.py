"""inference.GRPCInferenceService, the Open Inference Protocol v2, beside our own API.

ModelInfer is Predict under another wire format: its texts take exactly Predict's path (the same
validation, limits, batcher and model metrics) through `PredictWork`; only the tensor decoding and
encoding are OIP's own (oip_tensors.py). The interceptors in front of every service give it the
same admission, auth, request ids and `grpc_server_*` series, told apart by `grpc_service`.
Readiness follows the server's state: ready once models load, not ready while draining.
"""

from __future__ import annotations

import importlib.metadata
from typing import Awaitable, Callable, TypeVar

import grpc
from grpc import aio

from rnn_sentiment.inference import grpc_service_pb2 as oip
from rnn_sentiment.inference import grpc_service_pb2_grpc as oip_grpc
from rnn_sentiment.v1 import sentiment_pb2 as pb

from .errors import FieldViolation, ServiceError, invalid_argument, not_found, quoted_name
from .oip_tensors import (
    BYTES, FP32, LABEL_OUTPUT, PROBABILITIES_OUTPUT, TEXT_INPUT, Prediction, add_outputs, field_for_oip,
    requested_outputs, texts_from_request,
)
from .repository import ServedModel
from .servicer import ServingState, guarded
from .validation import RequestLimits

SERVICE_NAME = oip.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
SERVER_NAME = "rnn-sentiment"
# The model runs in PyTorch (or ONNX Runtime built from its weights at load time): one platform.
PLATFORM = "pytorch"
# Predict's work on a request, raising ServiceError: SentimentServicer's, shared with StreamPredict.
PredictWork = Callable[[pb.PredictRequest, float | None], Awaitable[pb.PredictResponse]]

Response = TypeVar("Response")


def _server_version() -> str:
    try:
        return importlib.metadata.version(SERVER_NAME)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _with_oip_fields(error: ServiceError) -> ServiceError:
    """Predict's INVALID_ARGUMENT with its field paths named as the OIP caller sent them."""
    if error.code != grpc.StatusCode.INVALID_ARGUMENT or not error.violations:
        return error
    return invalid_argument([FieldViolation(field_for_oip(v.field), v.description) for v in error.violations])


class OipServicer(oip_grpc.GRPCInferenceServiceServicer):
    def __init__(self, state: ServingState, limits: RequestLimits, predict: PredictWork) -> None:
        self._state = state
        self._limits = limits
        self._predict = predict
        self._version = _server_version()

    async def ServerLive(self, request: oip.ServerLiveRequest, context: aio.ServicerContext) -> oip.ServerLiveResponse:
        return oip.ServerLiveResponse(live=True)

    async def ServerReady(self, request: oip.ServerReadyRequest, context: aio.ServicerContext
                          ) -> oip.ServerReadyResponse:
        return oip.ServerReadyResponse(ready=self._state.accepting)

    async def ServerMetadata(self, request: oip.ServerMetadataRequest, context: aio.ServicerContext
                             ) -> oip.ServerMetadataResponse:
        # None of the protocol's optional extensions (model repository, shared memory, ...).
        return oip.ServerMetadataResponse(name=SERVER_NAME, version=self._version, extensions=[])

    async def ModelReady(self, request: oip.ModelReadyRequest, context: aio.ServicerContext) -> oip.ModelReadyResponse:
        # An unknown model is "not ready", not an error: this is a probe, as in Triton.
        if not self._state.accepting or self._state.repository is None:
            return oip.ModelReadyResponse(ready=False)
        repository = self._state.repository
        served = repository.get(request.name or repository.default_name)
        ready = served is not None and request.version in ("", served.loaded.version)
        return oip.ModelReadyResponse(ready=ready)

    async def ModelMetadata(self, request: oip.ModelMetadataRequest, context: aio.ServicerContext
                            ) -> oip.ModelMetadataResponse:
        async def handle() -> oip.ModelMetadataResponse:
            served = self._resolve(request.name, request.version)
            tensor = oip.ModelMetadataResponse.TensorMetadata
            return oip.ModelMetadataResponse(
                name=served.name,
                versions=[served.loaded.version],
                platform=PLATFORM,
                inputs=[tensor(name=TEXT_INPUT, datatype=BYTES, shape=[-1])],
                outputs=[
                    tensor(name=LABEL_OUTPUT, datatype=BYTES, shape=[-1]),
                    tensor(name=PROBABILITIES_OUTPUT, datatype=FP32, shape=[-1, len(served.loaded.config.labels)]),
                ],
            )

        return await self._guard(context, handle)

    async def ModelInfer(self, request: oip.ModelInferRequest, context: aio.ServicerContext) -> oip.ModelInferResponse:
        async def handle() -> oip.ModelInferResponse:
            served = self._resolve(request.model_name, request.model_version)
            texts = texts_from_request(request, self._limits.max_texts_per_request)
            outputs = requested_outputs(request)
            try:
                # By the resolved name: "" would mean the default here but not in the answer.
                answer = await self._predict(pb.PredictRequest(model=served.name, texts=texts),
                                             context.time_remaining())
            except ServiceError as error:
                raise _with_oip_fields(error) from None
            response = oip.ModelInferResponse(model_name=answer.model, model_version=answer.model_version,
                                              id=request.id)
            predictions = [Prediction(p.label, p.probabilities) for p in answer.predictions]
            add_outputs(response, outputs, predictions, len(served.loaded.config.labels))
            return response

        return await self._guard(context, handle)

    def _resolve(self, name: str, version: str) -> ServedModel:
        """The named model ("" = the default) at `version` ("" = the one served), or NOT_FOUND."""
        assert self._state.repository is not None  # _guard refuses calls before models load
        served = self._state.repository.resolve(name)
        if version and version != served.loaded.version:
            raise not_found(f"model {served.name!r} has no version {quoted_name(version)}; "
                            f"it serves version {served.loaded.version!r}")
        return served

    async def _guard(self, context: aio.ServicerContext, handle: Callable[[], Awaitable[Response]]) -> Response:
        """As SentimentServicer's calls: UNAVAILABLE while not accepting (counted for the drain),
        ServiceError to its status, anything else a bare INTERNAL."""
        return await guarded(self._state, context, handle)
