"""The Open Inference Protocol v2 (inference.GRPCInferenceService) on a real server, called with raw
gRPC from our own stubs: decoding bounds, outputs in the requested order, the shared validation,
metrics and errors. tritonclient itself: test_oip_tritonclient.py."""

from __future__ import annotations

import struct
import time
from typing import Iterator

import grpc
import pytest
from google.protobuf import descriptor_pool
from google.rpc import error_details_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from grpc_status import rpc_status

from rnn_sentiment.client import SentimentClient
from rnn_sentiment.inference import grpc_service_pb2 as oip
from rnn_sentiment.inference import grpc_service_pb2_grpc as oip_grpc
from tests.scrape import idle_scrape, sample, scrape
from tests.support import ServerProcess

MODEL = "sst2-gru"
TEXTS = ["a warm, funny and beautifully acted film", "a dull , lifeless and painfully boring movie"]
MAX_TEXTS = 8  # the session server's --max-texts-per-request (tests/integration/conftest.py)
OIP_SERVICE = "inference.GRPCInferenceService"


@pytest.fixture
def stub(server: ServerProcess) -> Iterator[oip_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(server.target) as channel:
        yield oip_grpc.GRPCInferenceServiceStub(channel)


def length_prefixed(*elements: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


def decode_length_prefixed(raw: bytes) -> list[str]:
    out, offset = [], 0
    while offset < len(raw):
        (length,) = struct.unpack_from("<I", raw, offset)
        out.append(raw[offset + 4:offset + 4 + length].decode())
        offset += 4 + length
    return out


def infer_request(texts: list[str], outputs: tuple[str, ...] = (), model: str = MODEL) -> oip.ModelInferRequest:
    request = oip.ModelInferRequest(model_name=model, id="req-1")
    request.inputs.add(name="text", datatype="BYTES", shape=[len(texts)])
    request.raw_input_contents.append(length_prefixed(*(t.encode() for t in texts)))
    for name in outputs:
        request.outputs.add(name=name)
    return request


def raw_request(raw: bytes, shape: list[int]) -> oip.ModelInferRequest:
    request = oip.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name="text", datatype="BYTES", shape=shape)
    request.raw_input_contents.append(raw)
    return request


def violations(error: grpc.RpcError) -> list[tuple[str, str]]:
    status = rpc_status.from_call(error)
    assert status is not None
    found = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            found += [(v.field, v.description) for v in bad_request.field_violations]
    return found


def refused(stub: oip_grpc.GRPCInferenceServiceStub, request: oip.ModelInferRequest) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request, timeout=30)
    return caught.value


def test_infer_answers_as_predict_does(stub: oip_grpc.GRPCInferenceServiceStub, client: SentimentClient) -> None:
    response = stub.ModelInfer(infer_request(TEXTS), timeout=30)
    expected = client.predict(TEXTS, model=MODEL)
    assert (response.model_name, response.id) == (MODEL, "req-1")
    assert response.model_version == expected.model_version
    # No outputs named: all of them, label first, each raw content at its output's position.
    assert [(o.name, o.datatype, list(o.shape)) for o in response.outputs] == [
        ("label", "BYTES", [2]), ("probabilities", "FP32", [2, 2])]
    assert decode_length_prefixed(response.raw_output_contents[0]) == [p.label for p in expected.predictions]
    probabilities = struct.unpack("<4f", response.raw_output_contents[1])
    assert probabilities == pytest.approx([v for p in expected.predictions for v in p.probabilities], abs=1e-6)


def test_outputs_come_in_the_requested_order(stub: oip_grpc.GRPCInferenceServiceStub) -> None:
    response = stub.ModelInfer(infer_request(TEXTS, outputs=("probabilities", "label")), timeout=30)
    assert [o.name for o in response.outputs] == ["probabilities", "label"]
    assert len(response.raw_output_contents[0]) == 2 * 2 * 4  # FP32 [2, 2]
    assert decode_length_prefixed(response.raw_output_contents[1]) == ["positive", "negative"]
    only = stub.ModelInfer(infer_request(TEXTS, outputs=("probabilities",)), timeout=30)
    assert [o.name for o in only.outputs] == ["probabilities"] and len(only.raw_output_contents) == 1


def test_bytes_contents_are_accepted_too(stub: oip_grpc.GRPCInferenceServiceStub) -> None:
    request = oip.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name="text", datatype="BYTES", shape=[2]).contents.bytes_contents.extend(
        t.encode() for t in TEXTS)
    response = stub.ModelInfer(request, timeout=30)
    assert decode_length_prefixed(response.raw_output_contents[0]) == ["positive", "negative"]


def test_raw_and_typed_contents_together_are_refused(stub: oip_grpc.GRPCInferenceServiceStub) -> None:
    request = infer_request(TEXTS)
    request.inputs[0].contents.bytes_contents.extend(t.encode() for t in TEXTS)
    error = refused(stub, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(error)[0][0] == "inputs[0].contents"


@pytest.mark.parametrize("raw, shape, field, words", [
    # A length that runs past the buffer: 4 GiB claimed by a 9-byte request.
    (struct.pack("<I", 0xFFFFFFFF) + b"abcde", [1], "raw_input_contents[0]", "claims 4294967295 bytes"),
    (length_prefixed(b"good") + b"\x05\x00", [2], "raw_input_contents[0]", "holds 1 elements; the shape says 2"),
    # Elements past the declared count are not walked: the rest is refused as left-over bytes.
    (length_prefixed(*[b""] * 10_000), [2], "raw_input_contents[0]", "bytes after the 2 elements"),
    # A count past the limit is refused before a byte is decoded.
    (length_prefixed(*[b"good"] * (MAX_TEXTS + 1)), [MAX_TEXTS + 1], "inputs[0].shape", "the limit is 8"),
    (length_prefixed(b"good"), [1, 1], "inputs[0].shape", "must be [N]"),
    (length_prefixed(b"\xff\xfe"), [1], "text[0]", "not valid UTF-8"),
])
def test_bytes_decoding_is_bounded(stub: oip_grpc.GRPCInferenceServiceStub, raw: bytes, shape: list[int],
                                   field: str, words: str) -> None:
    error = refused(stub, raw_request(raw, shape))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert [(f, words in d) for f, d in violations(error)] == [(field, True)], violations(error)
    # And the server keeps serving.
    assert stub.ModelInfer(infer_request(["good"]), timeout=30).outputs


def test_predict_validation_applies_named_as_the_oip_input(stub: oip_grpc.GRPCInferenceServiceStub) -> None:
    error = refused(stub, infer_request(["good", " \u200b "]))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in violations(error)] == ["text[1]"]
    error = refused(stub, infer_request(["x" * 1001]))  # the session server's --max-text-chars 1000
    assert violations(error)[0][0] == "text[0]" and "the limit is 1000" in violations(error)[0][1]


@pytest.mark.parametrize("request_", [
    oip.ModelInferRequest(model_name=MODEL, inputs=[oip.ModelInferRequest.InferInputTensor(
        name="sentence", datatype="BYTES", shape=[1])]),
    oip.ModelInferRequest(model_name=MODEL, inputs=[oip.ModelInferRequest.InferInputTensor(
        name="text", datatype="FP32", shape=[1])]),
], ids=["wrong input name", "wrong datatype"])
def test_wrong_inputs_are_refused(stub: oip_grpc.GRPCInferenceServiceStub, request_: oip.ModelInferRequest) -> None:
    assert refused(stub, request_).code() == grpc.StatusCode.INVALID_ARGUMENT


def test_unknown_outputs_and_unsupported_parameters_are_refused(stub: oip_grpc.GRPCInferenceServiceStub) -> None:
    error = refused(stub, infer_request(TEXTS, outputs=("logits",)))
    assert violations(error)[0][0] == "outputs[0].name"
    request = infer_request(TEXTS, outputs=("label",))
    request.outputs[0].parameters["classification"].int64_param = 1
    assert violations(refused(stub, request))[0][0] == "outputs[0].parameters[classification]"


def test_unknown_model_or_version_is_not_found(stub: oip_grpc.GRPCInferenceServiceStub) -> None:
    assert refused(stub, infer_request(TEXTS, model="no-such-model")).code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelMetadata(oip.ModelMetadataRequest(name="no-such-model"), timeout=30)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    versioned = infer_request(TEXTS)
    versioned.model_version = "999"
    assert refused(stub, versioned).code() == grpc.StatusCode.NOT_FOUND
    # Readiness is a probe: an unknown model is not ready rather than an error.
    assert not stub.ModelReady(oip.ModelReadyRequest(name="no-such-model"), timeout=30).ready


def test_metadata_and_readiness(stub: oip_grpc.GRPCInferenceServiceStub, client: SentimentClient) -> None:
    version = client.model_info(MODEL).version
    metadata = stub.ModelMetadata(oip.ModelMetadataRequest(name=MODEL), timeout=30)
    assert (metadata.name, list(metadata.versions), metadata.platform) == (MODEL, [version], "pytorch")
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [("text", "BYTES", [-1])]
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.outputs] == [
        ("label", "BYTES", [-1]), ("probabilities", "FP32", [-1, 2])]
    assert stub.ServerLive(oip.ServerLiveRequest(), timeout=30).live
    assert stub.ServerReady(oip.ServerReadyRequest(), timeout=30).ready
    assert stub.ModelReady(oip.ModelReadyRequest(name=MODEL, version=version), timeout=30).ready
    assert not stub.ModelReady(oip.ModelReadyRequest(name=MODEL, version="999"), timeout=30).ready
    server_metadata = stub.ServerMetadata(oip.ServerMetadataRequest(), timeout=30)
    assert server_metadata.name == "rnn-sentiment" and server_metadata.version


def test_request_id_is_echoed(stub: oip_grpc.GRPCInferenceServiceStub) -> None:
    _, call = stub.ModelInfer.with_call(infer_request(["good"]), metadata=(("x-request-id", "oip-42"),), timeout=30)
    assert ("x-request-id", "oip-42") in call.initial_metadata()


def test_reflection_describes_the_service(server: ServerProcess) -> None:
    with grpc.insecure_channel(server.target) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        assert OIP_SERVICE in database.get_services()
        method = descriptor_pool.DescriptorPool(database).FindServiceByName(OIP_SERVICE).FindMethodByName("ModelInfer")
        assert method.input_type.fields_by_name["raw_input_contents"].number == 7


def test_metrics_tell_the_two_apis_apart(server: ServerProcess, stub: oip_grpc.GRPCInferenceServiceStub) -> None:
    infer = {"grpc_service": OIP_SERVICE, "grpc_method": "ModelInfer"}
    predict = {"grpc_service": "rnn_sentiment.v1.SentimentService", "grpc_method": "Predict"}
    before = idle_scrape(server)
    stub.ModelInfer(infer_request(TEXTS), timeout=30)
    refused(stub, infer_request(["good"], model="no-such-model"))
    deadline = time.monotonic() + 10
    while True:  # the server counts a call just after answering it
        after = scrape(server)
        counted = sample(after, "grpc_server_handling_seconds_count", **infer) - sample(
            before, "grpc_server_handling_seconds_count", **infer)
        model_work = sample(after, "rnn_sentiment_predictions_total", model=MODEL, label="negative") - sample(
            before, "rnn_sentiment_predictions_total", model=MODEL, label="negative")
        if counted >= 2 and model_work >= 1:
            break
        assert time.monotonic() < deadline, after
        time.sleep(0.05)

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert delta("grpc_server_handled_total", **infer, grpc_code="OK") == 1
    assert delta("grpc_server_handled_total", **infer, grpc_code="NOT_FOUND") == 1
    assert delta("grpc_server_started_total", **predict) == 0


@pytest.fixture(scope="module")
def server_with_tokens() -> Iterator[ServerProcess]:
    process = ServerProcess(extra_args=["--model-dir", "model/checkpoints/sst2-rnn"],
                            env={"RNN_SENTIMENT_AUTH_TOKENS": "oip-token"})
    process.start()  # readiness through the health service, which needs no token
    yield process
    assert process.stop() == 0, process.log()


def test_bearer_tokens_guard_the_oip_service(server_with_tokens: ServerProcess) -> None:
    with grpc.insecure_channel(server_with_tokens.target) as channel:
        stub = oip_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(infer_request(["good"], model=""), timeout=30)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        response = stub.ModelInfer(infer_request(["good"], model=""), timeout=30,
                                   metadata=(("authorization", "Bearer oip-token"),))
        assert response.model_name == "sst2-rnn"


def test_readiness_follows_the_server_state_loading_serving_draining(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Readiness is what a load balancer or KServe probes: not ready before the models load and
    while draining (when ModelInfer is UNAVAILABLE, retried elsewhere), ready in between, with the
    default model named by "" and any version by ""."""
    import asyncio

    from rnn_sentiment.server.app import bind_server
    from rnn_sentiment.server.config import ServerConfig
    from tests.support import write_untrained_checkpoint

    write_untrained_checkpoint(tmp_path / "tiny", "tiny", "v1")

    async def scenario() -> None:
        config = ServerConfig(address="127.0.0.1:0", metrics_address="", torch_threads=1, model_dir=str(tmp_path))
        running = await bind_server(config)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
                stub = oip_grpc.GRPCInferenceServiceStub(channel)

                async def readiness() -> tuple[bool, ...]:
                    return (
                        (await stub.ServerLive(oip.ServerLiveRequest(), timeout=10)).live,
                        (await stub.ServerReady(oip.ServerReadyRequest(), timeout=10)).ready,
                        (await stub.ModelReady(oip.ModelReadyRequest(name="tiny"), timeout=10)).ready,
                        (await stub.ModelReady(oip.ModelReadyRequest(), timeout=10)).ready,
                        (await stub.ModelReady(oip.ModelReadyRequest(version="v1"), timeout=10)).ready,
                        (await stub.ModelReady(oip.ModelReadyRequest(version="v2"), timeout=10)).ready,
                    )

                async def infer_code() -> grpc.StatusCode:
                    try:
                        await stub.ModelInfer(infer_request(["good"], model=""), timeout=10)
                    except grpc.aio.AioRpcError as error:
                        return error.code()
                    return grpc.StatusCode.OK

                assert await readiness() == (True, False, False, False, False, False)
                assert await infer_code() == grpc.StatusCode.UNAVAILABLE
                await running.load_models()
                assert await readiness() == (True, True, True, True, True, False)
                assert await infer_code() == grpc.StatusCode.OK
                running.state.draining = True  # the drain's state once SIGTERM arrives
                assert await readiness() == (True, False, False, False, False, False)
                assert await infer_code() == grpc.StatusCode.UNAVAILABLE
                running.state.draining = False
        finally:
            await running.drain()

    asyncio.run(scenario())
