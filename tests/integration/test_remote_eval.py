"""`rnn-sentiment eval` gives the same numbers in-process and against a running server."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support import SHIPPED_MODELS, SST2_DIR, ServerProcess


def _eval(*args: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "rnn_sentiment.cli", "eval", "--data", str(SST2_DIR), "--json", *args],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_eval_over_grpc_matches_in_process(server: ServerProcess) -> None:
    if not (SST2_DIR / "dev.tsv").is_file():
        pytest.skip(f"SST-2 dev set not found at {SST2_DIR}")
    local = _eval("--checkpoint", str(SHIPPED_MODELS / "sst2-gru"))
    remote = _eval("--target", server.target, "--model", "sst2-gru", "--texts-per-call", "8")
    assert remote["sha256"] == local["sha256"]
    assert remote["count"] == local["count"] == 872
    assert remote["accuracy"] == local["accuracy"]
    assert remote["confusion"] == local["confusion"]
    assert remote["ece"] == pytest.approx(local["ece"], abs=1e-4)  # scores travel as float32
    assert [s["name"] for s in local["subsets"]][-1] == "with a negation"
