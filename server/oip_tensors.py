"""The Open Inference Protocol's tensors <-> texts and predictions: the request's `text` input read
into a list of strings, the predictions written as `label` and `probabilities` outputs.

BYTES elements in `raw_input_contents` are each a 4-byte little-endian length and that many bytes.
A caller controls every length, so the decode is bounded before it allocates: the declared shape
is checked against the request limit first, no element may run past the buffer, and the walk stops
at the declared count (bytes left over are an error, not more elements). A few bytes can otherwise
claim gigabytes or millions of elements.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Iterable, Sequence

from rnn_sentiment.inference import grpc_service_pb2 as oip

from .errors import FieldViolation, ServiceError, invalid_argument

TEXT_INPUT = "text"
LABEL_OUTPUT = "label"
PROBABILITIES_OUTPUT = "probabilities"
OUTPUT_NAMES = (LABEL_OUTPUT, PROBABILITIES_OUTPUT)  # also the order when a request names none
BYTES = "BYTES"
FP32 = "FP32"
# Parameters that would change what the data or the answer means (data in shared memory, top-k
# classification strings instead of the tensor); we implement neither, so they are refused, never
# ignored. Other parameters carry nothing we act on.
UNSUPPORTED_PARAMETERS = frozenset({
    "shared_memory_region", "shared_memory_byte_size", "shared_memory_offset", "classification",
})
_LENGTH = struct.Struct("<I")


@dataclass(frozen=True)
class Prediction:
    """What the outputs carry for one text."""

    label: str
    probabilities: Sequence[float]


def _invalid(field: str, description: str) -> ServiceError:
    return invalid_argument([FieldViolation(field, description)])


def decode_bytes_elements(raw: bytes, count: int, field: str) -> list[bytes]:
    """`count` length-prefixed elements of `raw`, which must hold exactly those; INVALID_ARGUMENT
    naming `field` otherwise. Never reads or allocates past `raw` or past `count` elements."""
    view = memoryview(raw)
    elements: list[bytes] = []
    offset = 0
    while len(elements) < count:
        if len(raw) - offset < _LENGTH.size:
            raise _invalid(field, f"holds {len(elements)} elements; the shape says {count}")
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += _LENGTH.size
        if length > len(raw) - offset:
            raise _invalid(field, f"element {len(elements)} claims {length} bytes; "
                                  f"only {len(raw) - offset} are left in the buffer")
        elements.append(bytes(view[offset:offset + length]))
        offset += length
    if offset != len(raw):
        raise _invalid(field, f"has {len(raw) - offset} bytes after the {count} elements the shape says")
    return elements


def encode_bytes_elements(elements: Sequence[bytes]) -> bytes:
    """BYTES elements in the raw form: each a 4-byte little-endian length, then its bytes."""
    return b"".join(_LENGTH.pack(len(element)) + element for element in elements)


def _check_parameters(parameters: Iterable[str], field: str) -> None:
    for name in parameters:
        if name in UNSUPPORTED_PARAMETERS:
            raise _invalid(f"{field}.parameters[{name}]", "is not supported by this server")


def texts_from_request(request: oip.ModelInferRequest, max_texts: int) -> list[str]:
    """The texts of the request's one BYTES input `text` (shape [N]), from raw_input_contents or
    contents.bytes_contents (not both); INVALID_ARGUMENT naming the field otherwise."""
    if len(request.inputs) != 1 or request.inputs[0].name != TEXT_INPUT:
        names = ", ".join(repr(i.name) for i in request.inputs[:4]) or "none"
        raise _invalid("inputs", f"must be exactly one input named {TEXT_INPUT!r} (got {names})")
    tensor = request.inputs[0]
    field = "inputs[0]"
    if tensor.datatype != BYTES:
        raise _invalid(f"{field}.datatype", f"must be {BYTES!r} (UTF-8 texts), not {tensor.datatype[:16]!r}")
    _check_parameters(tensor.parameters, field)
    if len(tensor.shape) != 1:
        raise _invalid(f"{field}.shape", f"must be [N], one dimension (got {len(tensor.shape)})")
    count = tensor.shape[0]
    if count < 1:
        raise _invalid(f"{field}.shape", "must hold at least one text")
    if count > max_texts:
        raise _invalid(f"{field}.shape", f"has {count} texts; the limit is {max_texts} per request")
    contents = tensor.contents
    has_contents = tensor.HasField("contents") and bool(contents.ListFields())
    if request.raw_input_contents:
        if has_contents:
            raise _invalid(f"{field}.contents", "must be empty when raw_input_contents is used: send one or the other")
        if len(request.raw_input_contents) != 1:
            raise _invalid("raw_input_contents", f"must hold one entry per input (1), not {len(request.raw_input_contents)}")
        elements = decode_bytes_elements(request.raw_input_contents[0], count, "raw_input_contents[0]")
    else:
        if any(descriptor.name != "bytes_contents" for descriptor, _ in contents.ListFields()):
            raise _invalid(f"{field}.contents", "a BYTES tensor's elements go in bytes_contents")
        if len(contents.bytes_contents) != count:
            raise _invalid(f"{field}.contents.bytes_contents",
                           f"holds {len(contents.bytes_contents)} elements; the shape says {count}")
        elements = list(contents.bytes_contents)
    texts = []
    for index, element in enumerate(elements):
        try:
            texts.append(element.decode("utf-8"))
        except UnicodeDecodeError:
            raise _invalid(f"{TEXT_INPUT}[{index}]", "is not valid UTF-8") from None
    return texts


def requested_outputs(request: oip.ModelInferRequest) -> list[str]:
    """The output names to answer with, in the caller's order (all of them when none is named)."""
    if not request.outputs:
        return list(OUTPUT_NAMES)
    names: list[str] = []
    for index, output in enumerate(request.outputs):
        field = f"outputs[{index}]"
        if output.name not in OUTPUT_NAMES:
            raise _invalid(f"{field}.name", f"must be one of {', '.join(map(repr, OUTPUT_NAMES))}, "
                                            f"not {output.name[:64]!r}")
        if output.name in names:
            raise _invalid(f"{field}.name", f"{output.name!r} is asked for twice")
        _check_parameters(output.parameters, field)
        names.append(output.name)
    return names


def add_outputs(response: oip.ModelInferResponse, names: Sequence[str], predictions: Sequence[Prediction],
                label_count: int) -> None:
    """Append the named outputs to `response`, each with its raw contents at the same position
    (tritonclient pairs outputs and raw_output_contents by index)."""
    for name in names:
        if name == LABEL_OUTPUT:
            response.outputs.add(name=name, datatype=BYTES, shape=[len(predictions)])
            response.raw_output_contents.append(encode_bytes_elements([p.label.encode() for p in predictions]))
        else:
            values = [float(v) for p in predictions for v in p.probabilities]
            response.outputs.add(name=name, datatype=FP32, shape=[len(predictions), label_count])
            response.raw_output_contents.append(struct.pack(f"<{len(values)}f", *values))


def field_for_oip(field: str) -> str:
    """A Predict field path as the OIP caller knows it: texts[3] -> text[3] (the input's name)."""
    return TEXT_INPUT + field[len("texts"):] if field.startswith("texts") else field
