"""One unary gRPC call over a bare HTTP/2 connection (the `h2` library), header values sent
byte for byte: gRPC clients refuse newline, ESC and NUL in metadata, and hostile callers do not."""

from __future__ import annotations

import socket

import h2.config
import h2.connection
import h2.events


def raw_unary_call(port: int, method: str, request: bytes, headers: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """POST `request` (serialized, unframed) to `method` ("/package.Service/Method") on
    127.0.0.1:`port` with the extra `headers`; return the response's headers and trailers."""
    config = h2.config.H2Configuration(client_side=True, validate_outbound_headers=False,
                                       normalize_outbound_headers=False, validate_inbound_headers=False)
    connection = h2.connection.H2Connection(config)
    connection.initiate_connection()
    stream = connection.get_next_available_stream_id()
    connection.send_headers(stream, [
        (b":method", b"POST"), (b":scheme", b"http"), (b":path", method.encode()),
        (b":authority", f"127.0.0.1:{port}".encode()), (b"content-type", b"application/grpc"),
        (b"te", b"trailers"), *headers,
    ])
    connection.send_data(stream, b"\0" + len(request).to_bytes(4, "big") + request, end_stream=True)
    answer: dict[str, str] = {}
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(connection.data_to_send())
        ended = False
        while not ended:
            chunk = sock.recv(65_536)
            if not chunk:
                break
            for event in connection.receive_data(chunk):
                if isinstance(event, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
                    answer.update((k.decode("latin-1"), v.decode("latin-1")) for k, v in event.headers)
                elif isinstance(event, h2.events.DataReceived):
                    connection.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                    ended = True
            sock.sendall(connection.data_to_send())
    return answer
