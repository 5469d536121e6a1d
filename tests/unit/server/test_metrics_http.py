"""The /metrics endpoint's documented bounds (docs/reliability.md, "Metrics endpoint"), on loopback.

Each test runs a real MetricsEndpoint on an asyncio loop with small limits, so the connection cap,
eviction and deadlines are reached in milliseconds; one test holds the defaults to the documented
values.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import threading
import time
from typing import Awaitable, Callable, TypeVar

import pytest

from rnn_sentiment.server.metrics_http import MetricsEndpoint, MetricsEndpointLimits, start_metrics_endpoint

T = TypeVar("T")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
BODY = b"# TYPE up gauge\nup 1.0\n"
SMALL = MetricsEndpointLimits(max_connections=2, request_timeout_seconds=0.5, max_request_bytes=512)


def run(scenario: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(asyncio.wait_for(scenario(), 30))


async def exchange(port: int, raw: bytes) -> bytes:
    """Send `raw` and read the answer until the endpoint closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    answer = await reader.read()
    writer.close()
    return answer


def get(path: str = "/metrics", method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode()


def split_answer(answer: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines)
    return status, headers, body


async def closed_by_server(reader: asyncio.StreamReader, within: float) -> bytes | None:
    """What the endpoint sent before closing the connection; None if it is still open after `within`."""
    try:
        return await asyncio.wait_for(reader.read(), within)
    except asyncio.TimeoutError:
        return None


def test_the_default_bounds_are_the_documented_ones() -> None:
    # docs/reliability.md: 64 connections at once, 5 s for the request (and the answer), 431 over 8 KiB.
    limits = MetricsEndpointLimits()
    assert (limits.max_connections, limits.request_timeout_seconds, limits.max_request_bytes) == (64, 5.0, 8192)


def test_get_metrics_answers_the_rendering_and_closes() -> None:
    async def scenario() -> list[bytes]:
        endpoint = await start_metrics_endpoint(("127.0.0.1", 0), lambda: BODY, CONTENT_TYPE)
        try:
            return [await exchange(endpoint.port, get("/metrics")),
                    await exchange(endpoint.port, get("/metrics?name[]=up"))]
        finally:
            await endpoint.close()

    for answer in run(scenario):
        status, headers, body = split_answer(answer)
        assert status == "HTTP/1.1 200 OK"
        assert headers == {"Content-Type": CONTENT_TYPE, "Content-Length": str(len(BODY)), "Connection": "close"}
        assert body == BODY


def test_other_paths_methods_and_malformed_request_lines_get_their_status() -> None:
    async def scenario() -> dict[str, bytes]:
        endpoint = MetricsEndpoint(lambda: BODY, CONTENT_TYPE, SMALL)
        port = await endpoint.start("127.0.0.1", 0)
        try:
            return {
                "404": await exchange(port, get("/")),
                "404 prefix": await exchange(port, get("/metricsx")),
                "405": await exchange(port, get("/metrics", "POST")),
                "400 one word": await exchange(port, b"NONSENSE\r\n\r\n"),
                "400 no version": await exchange(port, b"GET /metrics\r\n\r\n"),
                "400 not http": await exchange(port, b"GET /metrics FTP/1.0\r\n\r\n"),
                "400 four words": await exchange(port, b"GET /metrics HTTP/1.1 extra\r\n\r\n"),
                "431": await exchange(port, b"GET /metrics HTTP/1.1\r\nX-Filler: " + b"a" * 2 * SMALL.max_request_bytes
                                      + b"\r\n\r\n"),
            }
        finally:
            await endpoint.close()

    answers = {what: split_answer(answer) for what, answer in run(scenario).items()}
    statuses = {what: status for what, (status, _, _) in answers.items()}
    assert statuses == {
        "404": "HTTP/1.1 404 Not Found", "404 prefix": "HTTP/1.1 404 Not Found",
        "405": "HTTP/1.1 405 Method Not Allowed",
        "400 one word": "HTTP/1.1 400 Bad Request", "400 no version": "HTTP/1.1 400 Bad Request",
        "400 not http": "HTTP/1.1 400 Bad Request", "400 four words": "HTTP/1.1 400 Bad Request",
        "431": "HTTP/1.1 431 Request Header Fields Too Large",
    }
    for status, headers, body in answers.values():
        assert headers["Connection"] == "close"
        assert headers["Content-Length"] == str(len(body)) and body and BODY not in body
    assert answers["405"][1]["Allow"] == "GET"


def test_a_render_that_fails_answers_500_and_the_next_scrape_works() -> None:
    calls = []

    def render() -> bytes:
        calls.append(None)
        if len(calls) == 1:
            raise RuntimeError("a worker's metric file is unreadable")
        return BODY

    async def scenario() -> tuple[bytes, bytes]:
        endpoint = MetricsEndpoint(render, CONTENT_TYPE, SMALL)
        port = await endpoint.start("127.0.0.1", 0)
        try:
            return await exchange(port, get()), await exchange(port, get())
        finally:
            await endpoint.close()

    failed, recovered = run(scenario)
    status, _, body = split_answer(failed)
    assert status == "HTTP/1.1 500 Internal Server Error"
    assert b"RuntimeError" not in body and b"unreadable" not in body  # the cause goes to the log only
    assert split_answer(recovered)[0] == "HTTP/1.1 200 OK" and split_answer(recovered)[2] == BODY


def test_a_silent_connection_is_closed_without_an_answer_after_the_request_deadline() -> None:
    async def scenario() -> tuple[bytes | None, bytes | None, float]:
        endpoint = MetricsEndpoint(lambda: BODY, CONTENT_TYPE, SMALL)
        port = await endpoint.start("127.0.0.1", 0)
        try:
            silent_reader, _ = await asyncio.open_connection("127.0.0.1", port)
            slow_reader, slow_writer = await asyncio.open_connection("127.0.0.1", port)
            slow_writer.write(b"GET /metrics HTTP/1.1\r\n")  # a request line, then nothing
            start = time.monotonic()
            silent = await closed_by_server(silent_reader, 10)
            slow = await closed_by_server(slow_reader, 10)
            return silent, slow, time.monotonic() - start
        finally:
            await endpoint.close()

    silent, slow, elapsed = run(scenario)
    assert silent == b"" and slow == b""  # closed, not left open, and nothing was answered
    assert elapsed >= SMALL.request_timeout_seconds * 0.9


def test_a_new_connection_evicts_the_oldest_idle_one_at_the_cap() -> None:
    async def scenario() -> tuple[bytes | None, bytes | None, bytes]:
        endpoint = MetricsEndpoint(lambda: BODY, CONTENT_TYPE,
                                   MetricsEndpointLimits(max_connections=2, request_timeout_seconds=10))
        port = await endpoint.start("127.0.0.1", 0)
        try:
            oldest, _ = await asyncio.open_connection("127.0.0.1", port)
            await asyncio.sleep(0.05)  # accepted in this order
            newer, newer_writer = await asyncio.open_connection("127.0.0.1", port)
            await asyncio.sleep(0.05)
            scrape = await exchange(port, get())
            # The oldest idle one made room; the newer one is still open and can still be answered.
            oldest_closed = await closed_by_server(oldest, 2)
            newer_writer.write(get())
            newer_answer = await closed_by_server(newer, 5)
            return oldest_closed, newer_answer, scrape
        finally:
            await endpoint.close()

    oldest_closed, newer_answer, scrape = run(scenario)
    assert split_answer(scrape)[0] == "HTTP/1.1 200 OK"
    assert oldest_closed == b""
    assert newer_answer is not None and split_answer(newer_answer)[0] == "HTTP/1.1 200 OK"


def test_when_every_slot_is_being_answered_a_new_connection_gets_503_at_once() -> None:
    release = threading.Event()

    def render() -> bytes:
        release.wait(10)  # a slow multiprocess render holds both slots
        return BODY

    async def scenario() -> tuple[list[bytes], bytes]:
        endpoint = MetricsEndpoint(render, CONTENT_TYPE,
                                   MetricsEndpointLimits(max_connections=2, request_timeout_seconds=10))
        port = await endpoint.start("127.0.0.1", 0)
        try:
            held = [asyncio.ensure_future(exchange(port, get())) for _ in range(2)]
            await asyncio.sleep(0.2)  # both requests arrived and wait for the render
            refused = await asyncio.wait_for(exchange(port, get()), 5)
            release.set()
            return list(await asyncio.gather(*held)), refused
        finally:
            release.set()
            await endpoint.close()

    held, refused = run(scenario)
    assert split_answer(refused)[0] == "HTTP/1.1 503 Service Unavailable"
    assert [split_answer(answer)[0] for answer in held] == ["HTTP/1.1 200 OK"] * 2


def test_renders_run_one_at_a_time_on_one_thread() -> None:
    """Scrapes queue behind one render thread (docs: "threads: one"), never one thread each."""
    lock = threading.Lock()
    running = [0]
    most = [0]
    threads: set[str] = set()

    def render() -> bytes:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
            threads.add(threading.current_thread().name)
        time.sleep(0.1)
        with lock:
            running[0] -= 1
        return BODY

    async def scenario() -> list[bytes]:
        endpoint = MetricsEndpoint(render, CONTENT_TYPE, MetricsEndpointLimits(request_timeout_seconds=10))
        port = await endpoint.start("127.0.0.1", 0)
        try:
            return list(await asyncio.gather(*(exchange(port, get()) for _ in range(4))))
        finally:
            await endpoint.close()

    answers = run(scenario)
    assert [split_answer(answer)[0] for answer in answers] == ["HTTP/1.1 200 OK"] * 4
    assert most[0] == 1 and len(threads) == 1


def test_close_ends_open_connections_and_stops_listening() -> None:
    async def scenario() -> tuple[bytes | None, bool]:
        endpoint = MetricsEndpoint(lambda: BODY, CONTENT_TYPE, MetricsEndpointLimits(request_timeout_seconds=30))
        port = await endpoint.start("127.0.0.1", 0)
        idle, _ = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.sleep(0.05)
        await endpoint.close()
        dropped = await closed_by_server(idle, 5)
        try:
            await asyncio.open_connection("127.0.0.1", port)
            listening = True
        except OSError:
            listening = False
        return dropped, listening

    dropped, listening = run(scenario)
    assert dropped == b""
    assert not listening


def test_a_client_that_does_not_read_its_answer_is_dropped_after_the_deadline() -> None:
    """docs: a connection is closed when "the answer is not read within" the request deadline, so
    a client that stops reading cannot keep a slot: with one slot, the next scrape is answered."""
    big = b"x" * (32 << 20)  # far more than the loopback socket buffers hold

    async def scenario() -> tuple[bytes, float]:
        endpoint = MetricsEndpoint(lambda: big, CONTENT_TYPE,
                                   MetricsEndpointLimits(max_connections=1, request_timeout_seconds=0.5))
        port = await endpoint.start("127.0.0.1", 0)
        try:
            _, stalled = await asyncio.open_connection("127.0.0.1", port)
            stalled.transport.pause_reading()  # never reads the answer  # type: ignore[attr-defined]
            stalled.write(get())
            await asyncio.sleep(0.1)
            start = time.monotonic()
            while True:  # a 503 while the stalled one holds the slot, then 200 once it is dropped
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(get())
                head = await reader.readuntil(b"\r\n")
                writer.close()
                if not head.startswith(b"HTTP/1.1 503") or time.monotonic() - start > 10:
                    return head, time.monotonic() - start
                await asyncio.sleep(0.05)
        finally:
            await endpoint.close()

    head, waited = run(scenario)
    assert head.startswith(b"HTTP/1.1 200"), head
    assert waited < 5


def test_a_client_that_resets_while_refused_leaves_no_error_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    """A scraper that gives up (connection reset) is ordinary: no ERROR line, and the port serves on."""
    release = threading.Event()

    def render() -> bytes:
        release.wait(10)
        return BODY

    async def scenario() -> bytes:
        endpoint = MetricsEndpoint(render, CONTENT_TYPE,
                                   MetricsEndpointLimits(max_connections=1, request_timeout_seconds=10))
        port = await endpoint.start("127.0.0.1", 0)
        try:
            held = asyncio.ensure_future(exchange(port, get()))
            await asyncio.sleep(0.2)  # the only slot is being answered
            for _ in range(5):
                reset = socket.create_connection(("127.0.0.1", port))
                reset.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                reset.close()  # RST before the 503 is written
            await asyncio.sleep(0.3)
            release.set()
            return await held
        finally:
            release.set()
            await endpoint.close()

    with caplog.at_level(logging.WARNING):
        answer = run(scenario)
    assert split_answer(answer)[0] == "HTTP/1.1 200 OK"
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_a_client_that_resets_mid_request_leaves_no_error_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> bytes:
        endpoint = MetricsEndpoint(lambda: BODY, CONTENT_TYPE, MetricsEndpointLimits(request_timeout_seconds=10))
        port = await endpoint.start("127.0.0.1", 0)
        try:
            for _ in range(5):
                reset = socket.create_connection(("127.0.0.1", port))
                reset.sendall(b"GET /metrics HTTP/1.1\r\nHost: local")  # part of a request
                await asyncio.sleep(0.05)  # the endpoint is reading it
                reset.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                reset.close()
            await asyncio.sleep(0.2)
            return await exchange(port, get())
        finally:
            await endpoint.close()

    with caplog.at_level(logging.WARNING):
        answer = run(scenario)
    assert split_answer(answer)[0] == "HTTP/1.1 200 OK"
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_close_does_not_wait_for_a_render_in_progress() -> None:
    """Shutting down (a drain) is not held by a slow render: close returns while one still runs."""
    release = threading.Event()

    def render() -> bytes:
        release.wait(5)
        return BODY

    async def scenario() -> float:
        endpoint = MetricsEndpoint(render, CONTENT_TYPE, MetricsEndpointLimits(request_timeout_seconds=10))
        port = await endpoint.start("127.0.0.1", 0)
        scrape = asyncio.ensure_future(exchange(port, get()))
        await asyncio.sleep(0.2)  # the render has started and blocks
        start = time.monotonic()
        await endpoint.close()
        took = time.monotonic() - start
        release.set()
        await asyncio.gather(scrape, return_exceptions=True)
        return took

    try:
        assert run(scenario) < 2
    finally:
        release.set()
