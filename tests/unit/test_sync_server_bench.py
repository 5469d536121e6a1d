"""bench/sync_server.py (the sync grpc.server variant of the front-end bake-off) answers as the aio server does.

Both servers run for real on loopback ports, called through the SDK.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest

from rnn_sentiment.client import SentimentClient, SentimentError
from tests.support import REPO_ROOT, ServerProcess, free_port

# Three real servers (the sync variant, the aio server, a second sync one) take most of a minute:
# `make test` runs it, `make test-fast` leaves it out.
pytestmark = pytest.mark.slow

TEXTS = ["a warm, funny and beautifully acted film", "dull and far too long", "not bad at all"]
READY_SECONDS = 120.0


def wait_for_serving(target: str, process: subprocess.Popen, log: Path) -> None:
    """Poll the health service's Check (the sync server has no Watch) until SERVING."""
    deadline = time.monotonic() + READY_SECONDS
    with SentimentClient(target, timeout=2) as client:
        while time.monotonic() < deadline:
            assert process.poll() is None, f"the sync server exited:\n{log.read_text()}"
            try:
                if client.health("") == "SERVING":
                    return
            except SentimentError:
                pass  # not listening yet
            time.sleep(0.2)
    raise AssertionError(f"the sync server never turned SERVING:\n{log.read_text()}")


def start_sync_server(port: int, *flags: str) -> tuple[subprocess.Popen, Path]:
    log = Path(tempfile.mkstemp(prefix="sync-server-", suffix=".log")[1])
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.sync_server", "--address", f"127.0.0.1:{port}", *flags],
            stdout=output, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
    return process, log


def stop(process: subprocess.Popen) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise


@pytest.fixture(scope="module")
def sync_target() -> Iterator[str]:
    port = free_port()
    process, log = start_sync_server(port, "--threads", "4")
    try:
        wait_for_serving(f"127.0.0.1:{port}", process, log)
        yield f"127.0.0.1:{port}"
    finally:
        assert stop(process) == 0, log.read_text()
    log.unlink()


@pytest.fixture(scope="module")
def aio_target() -> Iterator[str]:
    with ServerProcess() as server:
        yield server.target


def test_predict_answers_as_the_aio_server(sync_target: str, aio_target: str) -> None:
    with SentimentClient(sync_target, timeout=30) as sync_client, SentimentClient(aio_target, timeout=30) as aio_client:
        ours, theirs = sync_client.predict(TEXTS), aio_client.predict(TEXTS)
    assert (ours.model, ours.model_version) == (theirs.model, theirs.model_version)
    assert len(ours.predictions) == len(TEXTS)
    for mine, reference in zip(ours.predictions, theirs.predictions, strict=True):
        assert mine.label == reference.label
        assert mine.probabilities == pytest.approx(reference.probabilities, abs=1e-6)
        assert (mine.token_count, mine.unknown_token_count) == (reference.token_count, reference.unknown_token_count)


def test_a_bad_request_gets_the_aio_servers_status(sync_target: str, aio_target: str) -> None:
    errors = []
    for target in (sync_target, aio_target):
        with SentimentClient(target, timeout=30) as client, pytest.raises(SentimentError) as raised:
            client.predict([])
        errors.append(raised.value)
    ours, theirs = errors
    assert ours.code == theirs.code == "INVALID_ARGUMENT"
    assert ours.message == theirs.message
    assert ours.field_violations == theirs.field_violations


def test_workers_share_the_port_and_stop_together() -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.sync_server", "--address", f"127.0.0.1:{port}", "--threads", "2",
         "--workers", "2"], stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT)
    try:
        assert process.stdout is not None
        # Printed only once both workers answer SERVING.
        assert process.stdout.readline().strip() == f"serving on port {port}"
        with SentimentClient(f"127.0.0.1:{port}", timeout=30) as client:
            assert len(client.predict(TEXTS).predictions) == len(TEXTS)
    finally:
        code = stop(process)
    assert code == 0
    workers = subprocess.run(["pgrep", "-f", f"bench.sync_server --address 127.0.0.1:{port} .*--child"],
                             capture_output=True, text=True).stdout
    assert workers == "", "a worker outlived its parent"
