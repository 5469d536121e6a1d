"""gRPC bodies for a generic load generator: the length-prefixed frame and a tiny protobuf encoder.

h2load knows HTTP/2, not gRPC: it sends a file as the request body. A unary gRPC body is one
message: a zero byte (not compressed), its 4-byte big-endian length, then the serialized
protobuf. The encoder below writes the few fields the peers' requests need, so the load
generator needs neither the peers' .proto files nor their protobuf versions.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

GRPC_HEADERS = ("content-type: application/grpc", "te: trailers")


def grpc_frame(message: bytes) -> bytes:
    """The body of a unary gRPC call carrying `message` (uncompressed)."""
    return b"\x00" + struct.pack(">I", len(message)) + message


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field_bytes(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2): strings, bytes, sub-messages, packed repeats."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def field_string(number: int, text: str) -> bytes:
    return field_bytes(number, text.encode("utf-8"))


def field_packed_int64(number: int, values: Iterable[int]) -> bytes:
    return field_bytes(number, b"".join(varint(v) for v in values))
