"""bench/stream_scale.py's two clients (Node and Python) on the same schedule against a real server:
every word answered, streams reopened after their words, and the same records from both."""

from __future__ import annotations

import pytest

from bench.node_client import node_available
from bench.stream_scale import run_streams
from tests.support import ServerProcess


@pytest.mark.parametrize("client", ["node", "python"])
def test_both_clients_answer_every_update_and_reopen_their_streams(server: ServerProcess, client: str) -> None:
    if client == "node" and not node_available():
        pytest.skip("node and npm are not installed")
    assert server.process is not None
    # 4 streams of 3 words, a word every 0.1 s for 1.5 s: each stream closes and reopens at least once.
    result = run_streams(server.target, 4, 1.5, 0.1, 2, 3, server.process.pid, 1, client, ramp_seconds=0.3)
    assert result.errors == 0, result.error_codes
    assert result.answered == result.sent >= 4 * 2  # each stream's words and its first stream's final answer
    assert result.offered_updates_per_s == pytest.approx(4 / 0.1 * (1 + 1 / 3), abs=0.1)
    assert 0 < result.p50_ms <= result.p99_ms
    assert result.steady_updates > 0 and result.client_cpu_cores > 0
