"""The metrics port is bounded: idle connections hold no thread, are closed, and never lock out a scrape."""

from __future__ import annotations

import http.client
import os
import selectors
import socket
import time
import urllib.request
from contextlib import ExitStack

import pytest

from rnn_sentiment.server.metrics_http import MetricsEndpointLimits
from tests.support import ServerProcess

IDLE_CONNECTIONS = 300  # well past the cap (64), far below the 2,000 the issue used
# The endpoint's own thread (made on the first scrape) and an executor thread or two of the server.
THREAD_SLACK = 3


def thread_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        return response.read().decode()


def open_idle_connections(port: int, count: int, stack: ExitStack) -> list[socket.socket]:
    sockets = []
    for _ in range(count):
        s = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=5))
        sockets.append(s)
    return sockets


def wait_until_all_closed(sockets: list[socket.socket], within: float) -> list[socket.socket]:
    """Read every socket until the server closes it; return the ones still open after `within`."""
    selector = selectors.DefaultSelector()
    for s in sockets:
        s.setblocking(False)
        selector.register(s, selectors.EVENT_READ)
    still_open = set(sockets)
    deadline = time.monotonic() + within
    while still_open and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=0.5):
            s = key.fileobj
            try:
                data = s.recv(4096)  # type: ignore[union-attr]
            except ConnectionResetError:
                data = b""
            if not data:
                selector.unregister(s)
                still_open.discard(s)  # type: ignore[arg-type]
    selector.close()
    return list(still_open)


def assert_bounded(pid: int, metrics_port: int, metrics_url: str) -> None:
    scrape(metrics_url)  # the render thread exists from here on
    before = thread_count(pid)
    with ExitStack() as stack:
        idle = open_idle_connections(metrics_port, IDLE_CONNECTIONS, stack)
        # A slow client: a request line, then nothing.
        slow = stack.enter_context(socket.create_connection(("127.0.0.1", metrics_port), timeout=5))
        slow.sendall(b"GET /metrics HTTP/1.1\r\n")
        # Scraping still works with hundreds of idle sockets open (they are evicted, oldest first).
        assert "# TYPE rnn_sentiment_" in scrape(metrics_url)
        assert thread_count(pid) <= before + THREAD_SLACK, (before, thread_count(pid))
        limit = MetricsEndpointLimits().request_timeout_seconds
        left_open = wait_until_all_closed([*idle, slow], within=limit * 3 + 5)
        assert not left_open, f"{len(left_open)} idle connections still open after {limit * 3 + 5:.0f} s"
    assert thread_count(pid) <= before + THREAD_SLACK
    assert "# TYPE rnn_sentiment_" in scrape(metrics_url)


def test_idle_connections_hold_no_thread_and_are_closed(server: ServerProcess) -> None:
    assert server.process is not None
    assert_bounded(server.process.pid, server.metrics_port, server.metrics_url)


def test_the_supervisors_aggregated_endpoint_is_bounded_too() -> None:
    with ServerProcess(extra_args=["--workers", "2"]) as supervised:
        assert supervised.process is not None
        assert_bounded(supervised.process.pid, supervised.metrics_port, supervised.metrics_url)


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/metrics", 200),
        ("GET", "/metrics?name[]=grpc_server_started_total", 200),
        ("GET", "/", 404),
        ("GET", "/metricsx", 404),
        ("POST", "/metrics", 405),
        ("DELETE", "/metrics", 405),
    ],
)
def test_only_get_metrics_is_served(server: ServerProcess, method: str, path: str, status: int) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", server.metrics_port, timeout=10)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        assert response.status == status
        assert response.getheader("Connection") == "close"
        if status == 405:
            assert response.getheader("Allow") == "GET"
        response.read()
    finally:
        connection.close()


@pytest.mark.parametrize(
    ("raw", "status_line"),
    [
        (b"NONSENSE\r\n\r\n", b"HTTP/1.1 400"),
        (b"GET /metrics HTTP/1.1\r\nX-Filler: " + b"a" * 20_000 + b"\r\n\r\n", b"HTTP/1.1 431"),
    ],
)
def test_malformed_requests_get_an_http_error(server: ServerProcess, raw: bytes, status_line: bytes) -> None:
    with socket.create_connection(("127.0.0.1", server.metrics_port), timeout=10) as s:
        s.sendall(raw)
        answer = b""
        while chunk := s.recv(4096):
            answer += chunk
    assert answer.startswith(status_line), answer[:80]
    assert "grpc_server_started_total" in scrape(server.metrics_url)
