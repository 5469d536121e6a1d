"""The Open Inference Protocol's tensor codec (server/oip_tensors.py): bounded BYTES decoding, the
text input's rules, outputs in the requested order."""

from __future__ import annotations

import struct

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rnn_sentiment.inference import grpc_service_pb2 as oip
from rnn_sentiment.server.errors import ServiceError
from rnn_sentiment.server.oip_tensors import (
    Prediction, add_outputs, decode_bytes_elements, encode_bytes_elements, field_for_oip, requested_outputs,
    texts_from_request,
)


def request_with(raw: bytes | None = None, contents: list[bytes] | None = None, shape: tuple[int, ...] = (1,),
                 name: str = "text", datatype: str = "BYTES") -> oip.ModelInferRequest:
    request = oip.ModelInferRequest(model_name="m")
    tensor = request.inputs.add(name=name, datatype=datatype, shape=shape)
    if contents is not None:
        tensor.contents.bytes_contents.extend(contents)
    if raw is not None:
        request.raw_input_contents.append(raw)
    return request


def refusal(call, *args) -> tuple[str, str]:
    with pytest.raises(ServiceError) as caught:
        call(*args)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    (violation,) = caught.value.violations
    return violation.field, violation.description


@given(st.lists(st.binary(max_size=40), min_size=1, max_size=20))
def test_encode_then_decode_is_the_identity(elements: list[bytes]) -> None:
    assert decode_bytes_elements(encode_bytes_elements(elements), len(elements), "f") == elements


@given(st.binary(max_size=64), st.integers(min_value=1, max_value=8))
def test_any_bytes_either_decode_exactly_or_are_refused(raw: bytes, count: int) -> None:
    try:
        elements = decode_bytes_elements(raw, count, "f")
    except ServiceError as error:
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    else:
        assert len(elements) == count and encode_bytes_elements(elements) == raw


def test_a_length_past_the_buffer_is_refused_before_any_allocation() -> None:
    field, description = refusal(decode_bytes_elements, struct.pack("<I", 2**32 - 1), 1, "raw_input_contents[0]")
    assert field == "raw_input_contents[0]" and "claims 4294967295 bytes; only 0 are left" in description


def test_the_walk_stops_at_the_declared_count() -> None:
    # A million empty elements in 4 MB: only the first two are read, the rest is refused as extra bytes.
    field, description = refusal(decode_bytes_elements, b"\0" * 4_000_000, 2, "raw")
    assert "3999992 bytes after the 2 elements" in description


def test_a_shape_past_the_limit_is_refused_before_decoding() -> None:
    field, description = refusal(texts_from_request, request_with(raw=b"", shape=(10**12,)), 64)
    assert field == "inputs[0].shape" and "the limit is 64" in description


def test_raw_and_typed_contents_together_are_refused() -> None:
    request = request_with(raw=encode_bytes_elements([b"good"]), contents=[b"good"])
    assert refusal(texts_from_request, request, 8)[0] == "inputs[0].contents"


def test_typed_contents_must_match_the_shape() -> None:
    assert texts_from_request(request_with(contents=[b"good", b"bad"], shape=(2,)), 8) == ["good", "bad"]
    assert refusal(texts_from_request, request_with(contents=[b"good"], shape=(2,)), 8)[0] == (
        "inputs[0].contents.bytes_contents")


@pytest.mark.parametrize("request_, field", [
    (request_with(raw=b"", name="sentence"), "inputs"),
    (request_with(raw=b"", datatype="FP32"), "inputs[0].datatype"),
    (request_with(raw=b"", shape=(1, 1)), "inputs[0].shape"),
    (request_with(raw=b"", shape=(0,)), "inputs[0].shape"),
    (request_with(raw=encode_bytes_elements([b"\xff"])), "text[0]"),
])
def test_the_text_input_rules(request_: oip.ModelInferRequest, field: str) -> None:
    assert refusal(texts_from_request, request_, 8)[0] == field


def test_outputs_keep_the_requested_order_with_raw_contents_at_the_same_positions() -> None:
    request = oip.ModelInferRequest(outputs=[oip.ModelInferRequest.InferRequestedOutputTensor(name="probabilities"),
                                             oip.ModelInferRequest.InferRequestedOutputTensor(name="label")])
    response = oip.ModelInferResponse()
    add_outputs(response, requested_outputs(request), [Prediction("positive", [0.25, 0.75])], 2)
    assert [(o.name, list(o.shape)) for o in response.outputs] == [("probabilities", [1, 2]), ("label", [1])]
    assert struct.unpack("<2f", response.raw_output_contents[0]) == (0.25, 0.75)
    assert response.raw_output_contents[1] == encode_bytes_elements([b"positive"])
    assert requested_outputs(oip.ModelInferRequest()) == ["label", "probabilities"]


def test_predict_fields_are_renamed_for_the_oip_caller() -> None:
    assert field_for_oip("texts[3]") == "text[3]" and field_for_oip("texts") == "text"
    assert field_for_oip("model") == "model"


def test_a_wrong_input_list_is_named_in_the_refusal_up_to_four_names() -> None:
    request = oip.ModelInferRequest(model_name="m")
    for name in "abcde":
        request.inputs.add(name=name, datatype="BYTES", shape=[1])
    field, description = refusal(texts_from_request, request, 8)
    assert field == "inputs"
    assert description == "must be exactly one input named 'text' (got 'a', 'b', 'c', 'd')"
    assert refusal(texts_from_request, oip.ModelInferRequest(model_name="m"), 8)[1].endswith("(got none)")


def test_an_empty_contents_message_beside_raw_contents_is_no_conflict() -> None:
    # Clients that always fill the tensor's `contents` send it empty with raw_input_contents.
    request = request_with(raw=encode_bytes_elements([b"good", b"bad"]), shape=(2,))
    request.inputs[0].contents.SetInParent()
    wire = oip.ModelInferRequest.FromString(request.SerializeToString())
    assert wire.inputs[0].HasField("contents")
    assert texts_from_request(wire, 8) == ["good", "bad"]


def test_a_caller_s_long_names_are_echoed_cut_to_a_bounded_length() -> None:
    # The refusal quotes what was sent, but no more than 16 characters of a datatype and 64 of an
    # output name: a caller's megabyte name must not come back in the status.
    datatype = "".join(chr(ord("A") + i % 26) for i in range(40))
    field, description = refusal(texts_from_request, request_with(raw=b"", datatype=datatype), 8)
    assert field == "inputs[0].datatype"
    assert description == f"must be 'BYTES' (UTF-8 texts), not {datatype[:16]!r}"

    name = "".join(chr(ord("a") + i % 26) for i in range(100))
    request = oip.ModelInferRequest(outputs=[oip.ModelInferRequest.InferRequestedOutputTensor(name=name)])
    field, description = refusal(requested_outputs, request)
    assert field == "outputs[0].name"
    assert description == f"must be one of 'label', 'probabilities', not {name[:64]!r}"


def test_an_element_running_a_few_bytes_past_the_buffer_is_named_with_what_is_left() -> None:
    # The second element claims 10 bytes where 3 are left: refused as that element's overrun, not
    # read short and then miscounted.
    raw = encode_bytes_elements([b"good"]) + struct.pack("<I", 10) + b"abc"
    field, description = refusal(decode_bytes_elements, raw, 2, "raw_input_contents[0]")
    assert field == "raw_input_contents[0]"
    assert description == "element 1 claims 10 bytes; only 3 are left in the buffer"


def test_exactly_the_limit_of_texts_is_accepted() -> None:
    texts = [f"text {i}".encode() for i in range(8)]
    request = request_with(raw=encode_bytes_elements(texts), shape=(8,))
    assert texts_from_request(request, 8) == [t.decode() for t in texts]
    assert refusal(texts_from_request, request, 7) == ("inputs[0].shape", "has 8 texts; the limit is 7 per request")
