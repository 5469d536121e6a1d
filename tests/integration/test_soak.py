"""The soak at CI length: 60 s of moderate Predict load and a Trace caller (bench/soak.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO_ROOT

SOAK_SECONDS = 60


@pytest.mark.slow
@pytest.mark.timeout(SOAK_SECONDS + 240)
def test_soak_shows_no_growth_and_no_errors(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.soak", "--seconds", str(SOAK_SECONDS), "--results-dir", str(tmp_path)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=SOAK_SECONDS + 200,
    )
    summary = (tmp_path / "soak.md").read_text() if (tmp_path / "soak.md").exists() else result.stderr[-3000:]
    assert result.returncode == 0, summary
    assert "Result: PASS" in summary
    samples = (tmp_path / "soak.csv").read_text().splitlines()
    assert len(samples) > 30, "too few samples for a trend"
