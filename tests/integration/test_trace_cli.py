"""`rnn-sentiment trace` against a real server: every format, files written, two models compared."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from rnn_sentiment.client import SentimentClient

TEXT = "not bad at all , a fun film"


def _trace(server, *args: str) -> subprocess.CompletedProcess:  # type: ignore[no-untyped-def]
    command = [sys.executable, "-m", "rnn_sentiment.cli", "trace", "--target", server.target, "--timeout", "60",
               TEXT, *args]
    return subprocess.run(command, capture_output=True, timeout=120)


def _two_models(client: SentimentClient) -> tuple[str, str]:
    names = [m.name for m in client.list_models()]
    return names[0], names[-1]  # the same model twice when only one is served


def test_table_is_the_default_and_lists_every_word(server) -> None:
    result = _trace(server, "--color", "never")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    assert [line.split()[0] for line in lines[2:10]] == TEXT.split()
    assert "IG" in lines[0].split() and "memory" in lines[0].split()
    assert lines[-1].startswith("prediction: ") and "\x1b[" not in result.stdout.decode()


def test_a_text_past_the_memory_profile_limit_is_traced_without_it_and_says_why(server) -> None:
    long_text = "a fun film , " * 40  # 160 tokens, truncated to the models' 128: past the profile's 64
    command = [sys.executable, "-m", "rnn_sentiment.cli", "trace", "--target", server.target, "--timeout", "60",
               long_text, "--color", "never", "--attributions", "prefix"]
    result = subprocess.run(command, capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "note: no memory profile" in result.stderr.decode() and "tokens" in result.stderr.decode()
    lines = result.stdout.decode().splitlines()
    assert "memory" not in lines[0].split() and len(lines) > 128  # a row per token, no memory column
    assert lines[-1].startswith("prediction: ")


def test_png_compare_writes_one_picture_with_both_models(server, client: SentimentClient, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="PNG output needs the `render` extra")
    from matplotlib.image import imread

    first, second = _two_models(client)
    single, both = tmp_path / "one.png", tmp_path / "both.png"
    assert _trace(server, "--model", first, "--format", "png", "--output", str(single)).returncode == 0
    result = _trace(server, "--model", first, "--compare", second, "--format", "png", "--output", str(both))
    assert result.returncode == 0, result.stderr
    assert f"wrote {both}" in result.stderr.decode()
    assert imread(both).shape[1] > 1.8 * imread(single).shape[1]


def test_html_and_json_compare(server, client: SentimentClient, tmp_path: Path) -> None:
    first, second = _two_models(client)
    page = tmp_path / "trace.html"
    result = _trace(server, "--model", first, "--compare", second, "--format", "html", "--output", str(page),
                    "--top-k-units", "8")
    assert result.returncode == 0, result.stderr
    text = page.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and text.count("<section class=\"trace\">") == 2
    assert f"{first}@" in text and f"{second}@" in text
    result = _trace(server, "--model", first, "--compare", second, "--format", "json", "--attributions", "occlusion")
    data = json.loads(result.stdout)
    assert [t["model"] for t in data] == [first, second]
    assert all([a["method"] for a in t["attributions"]] == ["occlusion"] for t in data)
    assert all(t["steps"][0]["hidden_state"] for t in data)


def test_bad_attribution_and_binary_to_a_terminal_are_refused(server) -> None:
    result = _trace(server, "--attributions", "prefix,shap")
    assert result.returncode == 2 and b"invalid attribution 'shap'" in result.stderr

    # PNG with stdout on a terminal (a pseudo-terminal here): refused, nothing binary written to it.
    controller, terminal = pty.openpty()
    try:
        command = [sys.executable, "-m", "rnn_sentiment.cli", "trace", "--target", server.target, "--timeout", "60",
                   TEXT, "--format", "png"]
        process = subprocess.Popen(command, stdout=terminal, stderr=subprocess.PIPE)
        os.close(terminal)
        written: list[bytes] = []  # drained as it comes, so a child that does write cannot block on it
        reader = threading.Thread(target=lambda: written.append(_read_all(controller)), daemon=True)
        reader.start()
        _, stderr = process.communicate(timeout=120)
        reader.join(10)
    finally:
        os.close(controller)
    assert process.returncode == 2, stderr
    assert b"--format png writes binary: give --output FILE.png" in stderr
    assert b"PNG" not in b"".join(written), written


def test_png_to_a_pipe_is_written_to_stdout(server) -> None:
    """The other side of the refusal: redirected, the same command writes the picture."""
    pytest.importorskip("matplotlib", reason="PNG output needs the `render` extra")
    result = _trace(server, "--format", "png")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(b"\x89PNG\r\n\x1a\n")


def _read_all(controller: int) -> bytes:
    """Everything written to the pseudo-terminal until the child closes it (EOF, or EIO on Linux)."""
    chunks = []
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # EIO: the child has exited
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)
