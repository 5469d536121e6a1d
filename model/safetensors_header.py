"""The safetensors header, read and checked before any tensor is materialised.

A safetensors file is an 8-byte little-endian header length, a JSON header naming each tensor's
dtype, shape and byte range in the data that follows, then the data. Checking the header against
the shapes the config implies refuses an absurd or inconsistent file for the price of a few KB,
where handing it to the loader would first allocate whatever it claims.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["HEADER_LENGTH_BYTES", "WEIGHT_DTYPE_BYTES", "InvalidHeader", "TensorEntry",
           "header_length", "parse_header", "check_tensors"]

HEADER_LENGTH_BYTES = 8
# Checkpoints hold float32 or float16 weights (save_checkpoint's weights_dtype).
WEIGHT_DTYPE_BYTES = {"F32": 4, "F16": 2}
_METADATA_KEY = "__metadata__"
_ENTRY_KEYS = frozenset(["dtype", "shape", "data_offsets"])


class InvalidHeader(ValueError):
    """The header is malformed or disagrees with the expected tensors; the message names the tensor."""


@dataclass(frozen=True)
class TensorEntry:
    """One tensor as the header describes it; begin and end are offsets into the data section."""

    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


def header_length(prefix: bytes, file_size: int, limit: int) -> int:
    """The JSON header's length from the file's first 8 bytes, checked against the file and limit."""
    if len(prefix) < HEADER_LENGTH_BYTES:
        raise InvalidHeader(f"the file is shorter than its {HEADER_LENGTH_BYTES}-byte header length")
    length = int.from_bytes(prefix[:HEADER_LENGTH_BYTES], "little")
    if length > limit:
        raise InvalidHeader(f"header length {length} is more than the limit of {limit:,} bytes")
    if HEADER_LENGTH_BYTES + length > file_size:
        raise InvalidHeader(f"header length {length} runs past the end of the {file_size:,}-byte file")
    return length


def parse_header(header: bytes, data_size: int) -> dict[str, TensorEntry]:
    """Tensor name -> entry, every byte range inside the data_size bytes of data."""
    try:
        document = json.loads(header.decode("utf-8"))
    except (ValueError, RecursionError) as error:  # RecursionError: `[[[[…` nested thousands deep
        raise InvalidHeader(f"header is not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise InvalidHeader("header must be a JSON object")
    metadata = document.pop(_METADATA_KEY, {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise InvalidHeader(f"header {_METADATA_KEY} must be an object of strings")
    return {name: _entry(name, value, data_size) for name, value in document.items()}


def check_tensors(entries: Mapping[str, TensorEntry], expected: Mapping[str, tuple[int, ...]],
                  data_size: int, source: str) -> None:
    """Refuse entries that do not hold exactly the expected tensors, in full, covering the data.

    source names what implies the expected shapes, for the message.
    """
    for name in expected:
        if name not in entries:
            raise InvalidHeader(f"missing tensor {name}")
    for name in entries:
        if name not in expected:
            raise InvalidHeader(f"unexpected tensor {name}; {source} imply {len(expected)} tensors")
    for name, shape in expected.items():
        entry = entries[name]
        if entry.dtype not in WEIGHT_DTYPE_BYTES:
            raise InvalidHeader(f"tensor {name} has dtype {entry.dtype}; weights are one of "
                                f"{sorted(WEIGHT_DTYPE_BYTES)}")
        if entry.shape != tuple(shape):
            raise InvalidHeader(f"tensor {name} has shape {list(entry.shape)}; {source} imply {list(shape)}")
        size = math.prod(shape) * WEIGHT_DTYPE_BYTES[entry.dtype]
        if entry.end - entry.begin != size:
            raise InvalidHeader(f"tensor {name} spans {entry.end - entry.begin} bytes; "
                                f"{entry.dtype} {list(shape)} takes {size}")
    # The data section holds the tensors back to back: no gap a file could hide bytes in, no overlap.
    position = 0
    for name, entry in sorted(entries.items(), key=lambda item: (item[1].begin, item[1].end)):
        if entry.begin != position:
            raise InvalidHeader(f"tensor {name} starts at byte {entry.begin} of the data; the tensors "
                                f"before it end at {position}")
        position = entry.end
    if position != data_size:
        raise InvalidHeader(f"the tensors end at byte {position} of a {data_size}-byte data section")


def _entry(name: str, value: object, data_size: int) -> TensorEntry:
    if not isinstance(value, dict) or set(value) != _ENTRY_KEYS:
        raise InvalidHeader(f"tensor {name}: an entry must be an object with exactly {sorted(_ENTRY_KEYS)}")
    dtype, shape, offsets = value["dtype"], value["shape"], value["data_offsets"]
    if not isinstance(dtype, str):
        raise InvalidHeader(f"tensor {name}: dtype must be a string")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise InvalidHeader(f"tensor {name}: shape must be a list of non-negative integers")
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(type(offset) is int for offset in offsets)):
        raise InvalidHeader(f"tensor {name}: data_offsets must be two integers")
    begin, end = offsets
    if not 0 <= begin <= end <= data_size:
        raise InvalidHeader(f"tensor {name}: data_offsets {offsets} lie outside the "
                            f"{data_size:,}-byte data section")
    return TensorEntry(dtype=dtype, shape=tuple(shape), begin=begin, end=end)
