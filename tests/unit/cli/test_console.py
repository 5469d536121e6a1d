"""The `rnn-sentiment` process (cli/console.py): main()'s exit code, and a reader that goes away
(`| head`) ends any command quietly, as docs/sdk.md says of `predict`."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def _command(*argv: str, stdout: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rnn_sentiment.cli", *argv], stdout=stdout,
                          stderr=subprocess.PIPE, text=True, timeout=120)


def test_a_reader_that_goes_away_ends_the_command_without_a_traceback() -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # `| head` that has read its lines: every write now meets a closed pipe
    try:
        done = _command("serve", "--print-config-table", stdout=write_end)
    finally:
        os.close(write_end)
    assert done.stderr == ""  # no traceback
    assert done.returncode == 0  # the reader's choice, not the command's failure


def test_the_exit_code_is_mains() -> None:
    assert _command("serve", "--print-config-table", stdout=subprocess.DEVNULL).returncode == 0
    refused = _command("no-such-command", stdout=subprocess.DEVNULL)
    assert refused.returncode == 2 and "invalid choice" in refused.stderr


def test_both_distributions_install_the_command_that_ends_quietly() -> None:
    for pyproject in (REPO / "pyproject.toml", REPO / "sdk" / "pyproject.toml"):
        scripts = tomllib.loads(pyproject.read_text())["project"]["scripts"]
        assert scripts == {"rnn-sentiment": "rnn_sentiment.cli.console:run"}, pyproject
