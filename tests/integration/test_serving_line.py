"""The "serving" log line tells the operator where the metrics are, with and without workers.

Under `--workers N` the workers serve no metrics themselves: the supervisor serves the sum of
what they write. Each worker's "serving" line then names the supervisor's address, not "".
"""

from __future__ import annotations

import json
import time

import pytest

from tests.support import ServerProcess

pytestmark = pytest.mark.timeout(300)


def _serving_records(server: ServerProcess) -> list[dict]:
    records = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    return [r for r in records if r["message"] == "serving"]


def _wait_for_serving_lines(server: ServerProcess, count: int, timeout: float = 120.0) -> list[dict]:
    # Health answers SERVING once the first worker serves; the others may still be loading.
    deadline = time.monotonic() + timeout
    while len(serving := _serving_records(server)) < count:
        assert time.monotonic() < deadline and server.process.poll() is None, server.log()
        time.sleep(0.1)
    return serving


@pytest.mark.parametrize("workers", [1, 2])
def test_serving_lines_name_the_metrics_address(workers: int) -> None:
    server = ServerProcess(extra_args=["--workers", str(workers), "--log-format", "json"]).start()
    try:
        # At least one line per worker (a worker restarted under load logs another).
        serving = _wait_for_serving_lines(server, workers)
        metrics_address = f"127.0.0.1:{server.metrics_port}"
        assert {r.get("metrics_address") for r in serving} == {metrics_address}, serving
        # Said only when it is another process: the worker's own endpoint needs no note.
        expected_owner = "supervisor" if workers > 1 else None
        assert {r.get("metrics_served_by") for r in serving} == {expected_owner}, serving
    finally:
        assert server.stop() == 0, server.log()


def test_serving_line_says_metrics_are_off_when_disabled() -> None:
    server = ServerProcess(extra_args=["--log-format", "json", "--metrics-address", ""]).start()
    try:
        (serving,) = _serving_records(server)
        assert serving.get("metrics_address") == "off", serving
    finally:
        assert server.stop() == 0, server.log()
