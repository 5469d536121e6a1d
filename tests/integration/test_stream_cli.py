"""`rnn-sentiment stream` under a pseudo-terminal and on a pipe, against a live server."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rnn_sentiment.client import SentimentClient
from tests.support import REPO_ROOT, ServerProcess

TEXT = "the plot is dull but the acting is wonderful"
REDRAW = "\r\x1b[2K"
LINE = re.compile(r"(final: )?(positive|negative) (\d\.\d{3}) [█·]+ (\d+) tokens?")


def command(server: ServerProcess, *flags: str) -> list[str]:
    return [sys.executable, "-m", "rnn_sentiment.cli", "stream", "--target", server.target, *flags]


class Terminal:
    """The master side of a pseudo-terminal whose slave is a child's stdin and stdout."""

    def __init__(self, argv: list[str]) -> None:
        self.master, slave = pty.openpty()
        # Ctrl-C's default action, as an interactive shell gives its commands, even when this test
        # runs in the background of a script (which starts it with SIGINT ignored).
        self.process = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=subprocess.PIPE, cwd=REPO_ROOT,
                                        env={**os.environ, "TERM": "xterm"},
                                        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        os.close(slave)
        self.screen = ""

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def read_until(self, done, timeout: float = 30.0) -> str:  # type: ignore[no-untyped-def]
        """Read output until `done(screen)` holds (bounded: fails after `timeout` seconds)."""
        deadline = time.monotonic() + timeout
        while not done(self.screen):
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"timed out; screen so far: {self.screen!r}; stderr: {self.stderr()}"
            ready, _, _ = select.select([self.master], [], [], remaining)
            if ready:
                try:
                    self.screen += os.read(self.master, 4096).decode(errors="replace")
                except OSError:  # the child closed the terminal
                    assert done(self.screen), f"screen: {self.screen!r}; stderr: {self.stderr()}"
        return self.screen

    def stderr(self) -> str:
        if self.process.poll() is None:
            return "(running)"
        assert self.process.stderr is not None
        return self.process.stderr.read().decode(errors="replace")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)
        os.close(self.master)


def drawn(screen: str) -> list[re.Match[str]]:
    """Every state of the running line: the text after each clear-line."""
    return [m for part in screen.split(REDRAW) if (m := LINE.search(part))]


def test_typing_redraws_one_running_line_and_ends_with_predicts_answer(server: ServerProcess,
                                                                       client: SentimentClient) -> None:
    terminal = Terminal(command(server))
    try:
        terminal.read_until(lambda screen: "Ctrl-D ends" in screen)  # the command is ready for keys
        words = TEXT.split()
        for count, word in enumerate(words[:-1], start=1):
            # A word and its space, typed; then the line redrawn for it before the next word.
            terminal.type(word + " ")
            terminal.read_until(lambda screen: any(int(m[4]) >= count for m in drawn(screen)))
        terminal.type(words[-1])  # the last word has no space: only the end of the text completes it
        terminal.type("\x04")  # Ctrl-D, as typed in cbreak mode
        screen = terminal.read_until(lambda screen: "final:" in screen)
        assert terminal.process.wait(30) == 0, terminal.stderr()
    finally:
        terminal.close()

    states = drawn(screen)
    assert REDRAW in screen and screen.count("\n") <= 2  # redrawn in place, not one line per update
    by_count = {int(m[4]): m for m in states if not m[1]}
    for count in range(1, len(words)):
        prefix = " ".join(words[:count])
        assert by_count[count][2] == client.predict(prefix).predictions[0].label, prefix
    final = states[-1]
    expected = client.predict(TEXT).predictions[0]
    assert final[1] == "final: " and int(final[4]) == expected.token_count
    assert final[2] == expected.label
    assert float(final[3]) == round(expected.probabilities[1], 3)


def test_a_pipe_gets_one_line_per_update_or_json(server: ServerProcess, client: SentimentClient) -> None:
    plain = subprocess.run(command(server), input=TEXT.encode(), capture_output=True, cwd=REPO_ROOT, timeout=60)
    assert plain.returncode == 0, plain.stderr.decode()
    lines = plain.stdout.decode().splitlines()
    assert REDRAW not in plain.stdout.decode()
    assert all(LINE.fullmatch(line) for line in lines), lines
    expected = client.predict(TEXT).predictions[0]
    assert lines[-1].startswith(f"final: {expected.label} ")

    as_json = subprocess.run(command(server, "--json"), input=TEXT.encode(), capture_output=True, cwd=REPO_ROOT,
                             timeout=60)
    assert as_json.returncode == 0, as_json.stderr.decode()
    updates = [json.loads(line) for line in as_json.stdout.decode().splitlines()]
    assert updates[-1]["final"] and updates[-1]["label"] == expected.label
    assert updates[-1]["tokens"] == expected.token_count
    assert [token for u in updates for token, _ in u.get("steps", [])] == TEXT.split()


def test_a_refused_stream_is_an_error_message_and_exit_code_1(server: ServerProcess) -> None:
    run = subprocess.run(command(server, "--model", "no-such-model"), input=b"good", capture_output=True,
                         cwd=REPO_ROOT, timeout=60)
    assert run.returncode == 1
    assert "NOT_FOUND" in run.stderr.decode() and "Traceback" not in run.stderr.decode()


def test_ctrl_c_abandons_the_text_with_exit_130_and_leaves_the_prompt_a_line_of_its_own(
        server: ServerProcess) -> None:
    terminal = Terminal(command(server))
    try:
        terminal.read_until(lambda screen: "Ctrl-D ends" in screen)
        typed = TEXT + " "
        terminal.type(typed)
        # the running line ends with the text's last 40 characters (the tail, as typed)
        terminal.read_until(lambda screen: screen.endswith(f"9 tokens  {typed[-40:]}"))
        terminal.process.send_signal(signal.SIGINT)
        assert terminal.process.wait(30) == 130, terminal.stderr()
        screen = terminal.read_until(lambda screen: screen.endswith("\n"))
    finally:
        terminal.close()
    assert "final:" not in screen and "Traceback" not in terminal.stderr()
    assert LINE.search(screen.rsplit(REDRAW, 1)[-1])  # the running line stays, ended by the newline


def test_a_chunk_the_server_refuses_mid_stream_is_its_status_and_exit_code_1(server: ServerProcess) -> None:
    chunk = "good " * 240  # one read of 1,200 characters; the session's server takes 1,000 a chunk
    run = subprocess.run(command(server), input=chunk.encode(), capture_output=True, cwd=REPO_ROOT, timeout=60)
    assert run.returncode == 1, run.stderr.decode()
    assert "INVALID_ARGUMENT" in run.stderr.decode() and "Traceback" not in run.stderr.decode()
    assert "final:" not in run.stdout.decode()


def test_steps_on_a_pipe_list_each_token_and_how_it_moved_p_positive(server: ServerProcess) -> None:
    run = subprocess.run(command(server, "--steps"), input=TEXT.encode(), capture_output=True, cwd=REPO_ROOT,
                         timeout=60)
    assert run.returncode == 0, run.stderr.decode()
    lines = run.stdout.decode().splitlines()
    steps = [line.split() for line in lines if line.startswith("  ")]
    assert [token for token, _ in steps] == TEXT.split()
    assert all(re.fullmatch(r"[+-]\d\.\d{3}", delta) for _, delta in steps), steps
    updates = [line for line in lines if not line.startswith("  ")]
    assert all(LINE.fullmatch(line) for line in updates) and updates[-1].startswith("final: ")


def test_a_model_without_a_positive_label_shows_its_last_labels_probability(tmp_path: Path) -> None:
    # The server measures a trace's change toward "positive", else the last label; the command
    # shows the same one.
    import torch

    from rnn_sentiment.model.checkpoint import save_checkpoint
    from rnn_sentiment.model.config import ModelConfig
    from rnn_sentiment.model.network import SentimentRNN
    from rnn_sentiment.model.vocabulary import Vocabulary

    torch.manual_seed(0)
    config = ModelConfig(cell="gru", embedding_dim=8, hidden_size=8, num_layers=1, bidirectional=False,
                         pooling="last", dropout=0.0, labels=("bad", "so-so", "good"))
    vocab = Vocabulary.build([["a", "good", "bad", "film"]])
    save_checkpoint(tmp_path / "stars", SentimentRNN(config, vocab_size=len(vocab)), vocab, config, name="stars",
                    version="1")
    with ServerProcess(extra_args=["--model-dir", str(tmp_path / "stars")]) as server:
        run = subprocess.run(command(server, "--json"), input=b"a good film", capture_output=True, cwd=REPO_ROOT,
                             timeout=60)
        assert run.returncode == 0, run.stderr.decode()
        with SentimentClient(server.target, timeout=30) as client:
            expected = client.predict("a good film").predictions[0]
    final = json.loads(run.stdout.decode().splitlines()[-1])
    assert final["final"] and final["label"] == expected.label
    assert final["positive"] == pytest.approx(expected.probabilities[2], abs=1e-6)
    assert expected.probabilities[2] not in (expected.probabilities[0], expected.probabilities[1])
