"""bench/commit_ab.py lays a commit out as the `rnn_sentiment` package: the A/B imports that code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.commit_ab import discard_tree, importable_tree


def test_a_commit_is_importable_as_the_package_from_its_own_worktree(tmp_path: Path) -> None:
    root = importable_tree("HEAD", work=tmp_path)
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    probe = subprocess.run(
        [sys.executable, "-c", "import rnn_sentiment.server.batcher as m, rnn_sentiment.v1.sentiment_pb2 as s;"
                               "print(m.__file__); print(s.__file__)"],
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, check=True)
    batcher, stubs = probe.stdout.split()
    assert head in batcher and batcher.endswith("server/batcher.py")
    assert head in stubs
    discard_tree("HEAD", work=tmp_path)
    worktrees = subprocess.run(["git", "worktree", "list"], capture_output=True, text=True, check=True).stdout
    assert str(tmp_path) not in worktrees  # a test run leaves no worktree behind
