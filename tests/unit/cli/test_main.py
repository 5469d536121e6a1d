"""`rnn-sentiment` run in this process: what each command prints, where, and its exit code.

The commands are called as `main(argv)`, against a real server bound on a loopback port inside
this process (the same `bind_server` and model loading as `rnn-sentiment serve`), so a check
costs milliseconds instead of a process start. A terminal, where one matters (colour, refusing
binary output), is a real pseudo-terminal.

Exit codes held here are the documented ones: 0 done, 1 the server refused or failed the call
(or health is not SERVING, or serve could not load its models), 2 bad usage or unusable local
settings.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import pty
import random
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest

from rnn_sentiment.cli.main import build_parser, main
from rnn_sentiment.client import SentimentClient
from rnn_sentiment.server.validation import BLANK_TEXT
from tests.support import LoopThread

ANSI = "\x1b["
MAX_TEXT_CHARS = 1000
MAX_TEXTS = 8
CLIENT_COMMANDS = ("predict", "trace", "info", "health", "stream")
# Past the memory profile's token budget (64 for the shipped 256-unit models) and past their
# 128-token limit, so the trace drops the profile and the model truncates the text.
LONG_TEXT = "a fun film , " * 40


@dataclass(frozen=True)
class Run:
    """One `rnn-sentiment` invocation: its exit code and what it wrote."""

    code: int
    out: str
    err: str


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> Run:
    code = main(list(argv))
    captured = capsys.readouterr()
    return Run(code, captured.out, captured.err)


def usage_error(capsys: pytest.CaptureFixture[str], *argv: str) -> Run:
    """argparse's own refusals leave through SystemExit."""
    with pytest.raises(SystemExit) as raised:
        main(list(argv))
    captured = capsys.readouterr()
    return Run(int(raised.value.code or 0), captured.out, captured.err)


@contextmanager
def in_process_server(load_models: bool = True) -> Iterator[str]:
    """A real server on 127.0.0.1 serving the shipped models (or, unloaded, still starting:
    health NOT_SERVING); yields its target and drains it at the end."""
    # Imported here: torch comes with them, and the tests that need no server should not wait for it.
    from rnn_sentiment.server.app import bind_server
    from rnn_sentiment.server.config import ServerConfig

    loop = LoopThread()
    config = ServerConfig(address="127.0.0.1:0", metrics_address="", torch_threads=1,
                          max_text_chars=MAX_TEXT_CHARS, max_texts_per_request=MAX_TEXTS)
    running = loop.run(bind_server(config))
    try:
        if load_models:
            loop.run(running.load_models())
        yield f"127.0.0.1:{running.port}"
    finally:
        loop.run(running.drain())
        loop.close()


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with in_process_server() as target:
        yield target


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No RNN_SENTIMENT_* or NO_COLOR from the shell running the tests."""
    for name in list(os.environ):
        if name.startswith("RNN_SENTIMENT_") or name == "NO_COLOR":
            monkeypatch.delenv(name)


class Terminal:
    """A pseudo-terminal standing in as stdout: `isatty()` is true, as in an interactive shell."""

    def __init__(self) -> None:
        self._controller, device = pty.openpty()
        self.stdout = open(device, "w", encoding="utf-8")
        self._chunks: list[bytes] = []
        # Drained as it comes, so a command that writes more than the terminal buffers cannot block.
        self._reader = threading.Thread(target=self._read_all, daemon=True)
        self._reader.start()

    def _read_all(self) -> None:
        while True:
            try:
                chunk = os.read(self._controller, 65536)
            except OSError:  # EIO: the other side is closed
                return
            if not chunk:
                return
            self._chunks.append(chunk)

    def close(self) -> bytes:
        """Everything the command wrote to the terminal."""
        self.stdout.close()
        self._reader.join(10)
        os.close(self._controller)
        return b"".join(self._chunks)


@contextmanager
def stdout_on_a_terminal() -> Iterator[Terminal]:
    terminal = Terminal()
    captured, sys.stdout = sys.stdout, terminal.stdout
    try:
        yield terminal
    finally:
        sys.stdout = captured


def on_a_terminal(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[Run, str]:
    """Run with stdout on a terminal; the Run's `out` is empty, the terminal's text comes second."""
    with stdout_on_a_terminal() as terminal:
        code = main(list(argv))
    shown = terminal.close().decode()
    captured = capsys.readouterr()
    return Run(code, captured.out, captured.err), shown


def table_lines(out: str) -> tuple[list[str], list[str]]:
    """The trace table's header words and its footer lines."""
    lines = out.splitlines()
    return lines[0].split(), lines


# --- Parsing, defaults and the environment -----------------------------------------------------


def test_client_commands_call_the_local_port_with_a_ten_second_deadline_and_health_with_five() -> None:
    for command in ("predict", "trace", "info", "stream"):
        args = build_parser(command).parse_args([command, *(["a text"] if command == "trace" else [])])
        assert (args.target, args.timeout) == ("127.0.0.1:50051", 10.0), command
    args = build_parser("health").parse_args(["health"])
    assert (args.target, args.timeout) == ("127.0.0.1:50051", 5.0)


def test_the_environment_sets_every_client_commands_target_and_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RNN_SENTIMENT_TARGET", "sentiment.internal:50051")
    monkeypatch.setenv("RNN_SENTIMENT_TIMEOUT", " 2.5 ")
    for command in ("info", "health"):
        args = build_parser(command).parse_args([command])
        assert (args.target, args.timeout) == ("sentiment.internal:50051", 2.5), command


def test_a_timeout_variable_that_is_not_seconds_exits_2_naming_it(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("RNN_SENTIMENT_TIMEOUT", "ten")
    result = usage_error(capsys, "info")
    assert result == Run(2, "", "error: RNN_SENTIMENT_TIMEOUT='ten': expected seconds, e.g. 10\n")


def test_no_command_or_an_unknown_flag_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    result = usage_error(capsys)
    assert result.code == 2 and "the following arguments are required: command" in result.err
    result = usage_error(capsys, "info", "--colour")
    assert result.code == 2 and "unrecognized arguments: --colour" in result.err


def test_help_opens_with_what_the_tool_is(capsys: pytest.CaptureFixture[str]) -> None:
    result = usage_error(capsys, "--help")
    assert result.code == 0
    assert "`rnn-sentiment`: one command for serving, calling, training and evaluating." in result.out


@pytest.mark.parametrize(("command", "flag"), [("serve", "--max-batch-size"), ("train", "--hidden-size"),
                                               ("eval", "--checkpoint")])
def test_a_heavy_commands_help_lists_its_own_flags(
        capsys: pytest.CaptureFixture[str], command: str, flag: str) -> None:
    result = usage_error(capsys, command, "--help")
    assert result.code == 0 and flag in result.out


@pytest.mark.parametrize(("command", "layer", "extra"), [
    ("serve", "rnn_sentiment.server.config", "server"),
    ("train", "rnn_sentiment.cli.train_command", "train"),
    ("eval", "rnn_sentiment.cli.eval_command", "server"),
])
def test_a_command_whose_layer_is_not_installed_says_which_extra_to_install(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], command: str, layer: str,
        extra: str) -> None:
    # As in a client-only install: the import fails. Its flags are then unknown, and the message
    # must still say what to install rather than call them unrecognized.
    monkeypatch.setitem(sys.modules, layer, None)
    result = run(capsys, command, "--some-flag", "1")
    assert (result.code, result.out) == (2, "")
    assert result.err == (
        f"error: `rnn-sentiment {command}` needs the {extra} extra (this install lacks it): from a clone of the "
        f"repository run pip install '.[{extra}]' (once published: pip install 'rnn-sentiment[{extra}]') "
        f"[import of {layer} halted; None in sys.modules]\n")


def test_importing_the_cli_loads_no_layer_until_a_command_needs_it() -> None:
    """`serve` ignores SIGHUP only once it runs: every import before that widens the moment in
    which a reload signal kills a starting server, and a client-only install must start at all."""
    probe = ("import sys, rnn_sentiment.cli.main; print(sorted(m for m in sys.modules if m.split('.')[0] in "
             "('torch', 'grpc') or m.startswith(('rnn_sentiment.client', 'rnn_sentiment.server', "
             "'rnn_sentiment.model'))))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout == "[]\n"


def test_main_reads_the_command_line_when_given_no_arguments(
        server: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "argv", ["rnn-sentiment", "health", server])
    assert main() == 0
    assert capsys.readouterr().out == "SERVING\n"


# --- Client settings and refused calls ----------------------------------------------------------


def _client_argv(command: str, target: str) -> list[str]:
    if command == "health":
        return ["health", target]
    return [command, "--target", target, *({"predict": ["good"], "trace": ["good"]}.get(command, []))]


@pytest.mark.parametrize("command", CLIENT_COMMANDS)
def test_every_client_command_exits_2_naming_an_unreadable_token_file(
        server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str) -> None:
    missing = tmp_path / "token"
    result = run(capsys, *_client_argv(command, server), "--token-file", str(missing))
    assert result == Run(2, "", f"error: --token-file {str(missing)!r}: No such file or directory\n")


def test_half_a_client_key_pair_exits_2_naming_the_pair(
        server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = run(capsys, "info", "--target", server, "--tls-client-cert", str(tmp_path / "client.pem"))
    assert (result.code, result.out) == (2, "") and result.err.startswith("error: client_cert and client_key go together")


def test_a_refused_call_exits_1_and_shows_each_violation_once(server: str, capsys: pytest.CaptureFixture[str]) -> None:
    result = run(capsys, "predict", "--target", server, "x" * (MAX_TEXT_CHARS + 1))
    assert result == Run(1, "", "error: INVALID_ARGUMENT: texts[0]: has 1001 characters; the limit is 1000\n")
    # Eight long violations overflow the status message: those it leaves out follow, one a line.
    result = run(capsys, "predict", "--target", server, *["\u200b"] * MAX_TEXTS)
    assert (result.code, result.out) == (1, "")
    first, *rest = result.err.splitlines()
    assert first.startswith("error: INVALID_ARGUMENT: texts[0]: ") and rest
    assert all(line.startswith("  texts[") for line in rest)
    for index in range(MAX_TEXTS):
        assert result.err.count(f"texts[{index}]: {BLANK_TEXT}") == 1, index


# --- info and health ----------------------------------------------------------------------------


def test_info_prints_one_line_per_model_marking_only_the_default(
        server: str, capsys: pytest.CaptureFixture[str]) -> None:
    with SentimentClient(server) as client:
        served = client.list_models()
    result = run(capsys, "info", "--target", server, "--all")
    assert result.code == 0
    lines = result.out.splitlines()
    assert len(lines) == len(served) == 2
    for line, m in zip(lines, served, strict=True):
        a = m.architecture
        assert line == (
            f"{m.name}@{m.version}{' (default)' if m.is_default else ''}: {a.cell_type} {a.num_layers}x{a.hidden_size}, "
            f"embedding {a.embedding_dim}, pooling {a.pooling}, "
            f"{f'{a.subword_buckets:,} n-gram buckets, ' if a.subword_buckets else ''}{a.parameter_count:,} parameters; "
            f"dev accuracy {m.dev_accuracy:.1%}; vocabulary {m.vocabulary_size:,}; "
            f"max tokens {m.max_tokens} ({m.truncation}); device {m.device}; sha256 {m.checkpoint_sha256[:12]}")
    assert [m.is_default for m in served] == [True, False] and not any(m.architecture.bidirectional for m in served)
    assert [bool(m.architecture.subword_buckets) for m in served] == [True, False]
    other = served[1]
    result = run(capsys, "info", "--target", server, "--model", other.name)
    assert result.code == 0 and result.out == lines[1] + "\n"
    result = run(capsys, "info", "--target", server)
    assert result.code == 0 and result.out == lines[0] + "\n"


def test_info_json_is_the_sdks_model_info_as_an_indented_array(
        server: str, capsys: pytest.CaptureFixture[str]) -> None:
    with SentimentClient(server) as client:
        served = client.list_models()
    result = run(capsys, "info", "--target", server, "--all", "--json")
    assert result == Run(0, json.dumps([asdict(m) for m in served], indent=2) + "\n", "")


def test_health_exits_0_only_when_serving(server: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "health", server) == Run(0, "SERVING\n", "")
    assert run(capsys, "health", server, "--service", "rnn_sentiment.v1.SentimentService") == Run(0, "SERVING\n", "")
    assert run(capsys, "health", server, "--service", "no.such.Service") == Run(
        1, "", "NOT_FOUND: unknown service 'no.such.Service'\n")
    with in_process_server(load_models=False) as loading:
        assert run(capsys, "health", loading) == Run(1, "NOT_SERVING\n", "")


# --- trace --------------------------------------------------------------------------------------


def test_trace_prints_a_table_with_every_attribution_and_the_memory_profile_by_default(
        server: str, capsys: pytest.CaptureFixture[str]) -> None:
    result = run(capsys, "trace", "--target", server, "good film")
    assert (result.code, result.err) == (0, "")
    header, lines = table_lines(result.out)
    assert {"prefix", "g×in", "IG", "occl", "memory"} <= set(header)
    assert [line.split()[0] for line in lines[2:4]] == ["good", "film"]
    assert sum(line.startswith("prediction: ") for line in lines) == 1 and lines[-1].startswith("prediction: positive")
    assert any(line.startswith("integrated gradients: 32 steps") for line in lines)  # the server's default
    assert ANSI not in result.out  # stdout is not a terminal


def test_trace_without_attributions_or_memory_shows_neither(server: str, capsys: pytest.CaptureFixture[str]) -> None:
    result = run(capsys, "trace", "--target", server, "--attributions", "none", "--no-memory", "good film")
    assert (result.code, result.err) == (0, "")
    header, lines = table_lines(result.out)
    assert not {"prefix", "IG", "memory"} & set(header)
    assert lines[-1].startswith("prediction: positive")


def test_an_unknown_attribution_exits_2_before_calling(capsys: pytest.CaptureFixture[str]) -> None:
    result = run(capsys, "trace", "--target", "127.0.0.1:1", "--attributions", "prefix,shap", "good film")
    assert (result.code, result.out) == (2, "")
    assert result.err.startswith("error: --attributions: ") and "invalid attribution 'shap'" in result.err


def test_trace_json_is_one_object_with_every_hidden_unit_or_a_list_when_comparing(
        server: str, capsys: pytest.CaptureFixture[str]) -> None:
    with SentimentClient(server) as client:
        first, second = (m.name for m in client.list_models())
        hidden_size = client.model_info(first).architecture.hidden_size
    result = run(capsys, "trace", "--target", server, "--format", "json", "--attributions", "occlusion", "good film")
    assert (result.code, result.err) == (0, "") and result.out.endswith("}\n")
    trace = json.loads(result.out)
    assert isinstance(trace, dict) and trace["model"] == first
    assert [len(step["hidden_state"]) for step in trace["steps"]] == [hidden_size, hidden_size]
    assert [a["method"] for a in trace["attributions"]] == ["occlusion"]
    result = run(capsys, "trace", "--target", server, "--format", "json", "--model", first, "--compare", second,
                 "--attributions", "none", "good film")
    assert result.code == 0 and result.out.endswith("]\n")
    assert [t["model"] for t in json.loads(result.out)] == [first, second]


def test_a_text_past_the_memory_profile_budget_is_traced_without_it_saying_why(
        server: str, capsys: pytest.CaptureFixture[str]) -> None:
    result = run(capsys, "trace", "--target", server, "--attributions", "none", LONG_TEXT)
    assert result.code == 0
    header, lines = table_lines(result.out)
    assert "memory" not in header and lines[-1].startswith("prediction: positive")
    notes = result.err.splitlines()
    assert len(notes) == 2
    assert notes[0].startswith("note: no memory profile for the default model: the text has 128 tokens; ")
    # The model read 128 of the text's 160 tokens: the table says which part it dropped.
    assert notes[1].startswith("note: the text has 160 tokens; sst2-gru read 128 ")
    result = run(capsys, "trace", "--target", server, "--attributions", "none", "--model", "sst2-rnn",
                 "--format", "json", LONG_TEXT)
    assert result.code == 0 and json.loads(result.out)["prediction"]["truncated"]
    # JSON carries the truncation itself: only the memory note, naming the model asked for.
    assert result.err.startswith("note: no memory profile for sst2-rnn: ") and result.err.count("\n") == 1


def test_a_trace_refused_for_another_reason_exits_1_without_retrying(
        server: str, capsys: pytest.CaptureFixture[str]) -> None:
    result = run(capsys, "trace", "--target", server, "--ig-steps", "100000", "good film")
    assert result == Run(1, "", "error: INVALID_ARGUMENT: integrated_gradients_steps: is 100000; "
                                "must be 1 to 256 (0 means 32)\n")
    result = run(capsys, "trace", "--target", server, "--model", "no-such-model", "good film")
    assert (result.code, result.out) == (1, "") and result.err.startswith("error: NOT_FOUND: ")
    assert result.err.count("\n") == 1


def test_trace_output_files_hold_what_stdout_would(
        server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    table = run(capsys, "trace", "--target", server, "--attributions", "none", "good film").out
    written = tmp_path / "trace.txt"
    result = run(capsys, "trace", "--target", server, "--attributions", "none", "--output", str(written), "good film")
    assert result == Run(0, "", f"wrote {written}\n")
    assert written.read_text(encoding="utf-8") == table
    page = tmp_path / "trace.html"
    result = run(capsys, "trace", "--target", server, "--format", "html", "--output", str(page), "good film")
    assert result == Run(0, "", f"wrote {page}\n")
    assert page.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def test_trace_png_is_written_to_a_file_as_binary(server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib", reason="PNG output needs the `render` extra")
    picture = tmp_path / "trace.png"
    result = run(capsys, "trace", "--target", server, "--format", "png", "--attributions", "none", "--no-memory",
                 "--output", str(picture), "good film")
    assert result == Run(0, "", f"wrote {picture}\n")
    assert picture.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_trace_png_without_the_render_extra_exits_2_saying_what_to_install(
        server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as in an install without the extra
    picture = tmp_path / "trace.png"
    result = run(capsys, "trace", "--target", server, "--format", "png", "--output", str(picture), "good film")
    assert result == Run(2, "", "error: PNG output needs matplotlib: pip install 'rnn-sentiment[render]'\n")
    assert not picture.exists()


def test_png_to_a_terminal_is_refused_and_nothing_is_written_to_it(
        server: str, capsys: pytest.CaptureFixture[str]) -> None:
    result, shown = on_a_terminal(capsys, "trace", "--target", server, "--format", "png", "good film")
    assert result == Run(2, "", "error: --format png writes binary: give --output FILE.png (or redirect stdout)\n")
    assert shown == ""


def test_the_table_is_coloured_on_a_terminal_unless_no_color_or_never(
        server: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ("trace", "--target", server, "--attributions", "none", "--no-memory", "good film")
    result, shown = on_a_terminal(capsys, *argv)
    assert result.code == 0 and ANSI in shown and "prediction: positive" in shown
    result, shown = on_a_terminal(capsys, *argv, "--color", "never")
    assert result.code == 0 and ANSI not in shown and "prediction: positive" in shown
    monkeypatch.setenv("NO_COLOR", "")
    result, shown = on_a_terminal(capsys, *argv)
    assert result.code == 0 and ANSI not in shown and "prediction: positive" in shown


def test_the_table_is_coloured_off_a_terminal_only_when_asked(
        server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ("trace", "--target", server, "--attributions", "none", "--no-memory", "good film")
    result = run(capsys, *argv, "--color", "always")
    assert result.code == 0 and ANSI in result.out
    written = tmp_path / "trace.txt"
    result, shown = on_a_terminal(capsys, *argv, "--output", str(written))  # a file is no terminal
    assert (result.code, shown) == (0, "")
    assert ANSI not in written.read_text(encoding="utf-8") and "prediction: positive" in written.read_text(encoding="utf-8")


# --- serve and train ----------------------------------------------------------------------------


@pytest.fixture
def process_state() -> Iterator[None]:
    """`serve` takes over the process's signals and logging: give them back after the test."""
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    root = logging.getLogger()
    root_handlers, root_level = root.handlers[:], root.level
    yield
    for sig, handler in handlers.items():
        signal.signal(sig, handler)
    root.handlers[:] = root_handlers
    root.setLevel(root_level)


def test_the_configuration_table_is_printed_whatever_the_environment_holds(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], process_state: None) -> None:
    monkeypatch.setenv("RNN_SENTIMENT_MAX_BATCH_SIZE", "0")  # unservable, and the docs still build
    result = run(capsys, "serve", "--print-config-table")
    assert result.code == 0 and result.err == ""
    assert result.out.startswith("| flag | environment variable | default | meaning |\n")
    assert "`RNN_SENTIMENT_MAX_BATCH_SIZE`" in result.out


def test_serve_exits_2_on_an_unusable_setting(capsys: pytest.CaptureFixture[str], process_state: None) -> None:
    result = run(capsys, "serve", "--max-batch-size", "0")
    assert (result.code, result.out) == (2, "")
    assert result.err == ("error: invalid server configuration: --max-batch-size/RNN_SENTIMENT_MAX_BATCH_SIZE=0: "
                          "must be from 1 to 65536\n")


def _serve_nothing(capsys: pytest.CaptureFixture[str], tmp_path: Path, workers: int) -> Run:
    """serve on an ephemeral port with nothing to serve: it must end on its own, never serve."""
    empty = tmp_path / "models"
    empty.mkdir()
    return run(capsys, "serve", "--workers", str(workers), "--address", "127.0.0.1:0", "--metrics-address", "",
               "--model-dir", str(empty), "--torch-threads", "1", "--log-format", "text")


def test_several_workers_need_a_fixed_port_exit_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], process_state: None) -> None:
    result = _serve_nothing(capsys, tmp_path, workers=2)
    assert (result.code, result.out) == (2, "")
    assert result.err == "error: --workers > 1 needs a fixed port: the workers must all bind the same one\n"


def test_one_worker_serves_in_this_process_and_exits_1_when_no_model_loads(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], process_state: None) -> None:
    result = _serve_nothing(capsys, tmp_path, workers=1)
    assert (result.code, result.out) == (1, "")
    assert "could not load the models; exiting" in result.err
    assert re.search(rf"listening, loading models.*127\.0\.0\.1:\d+", result.err)


def test_train_prints_the_training_record_it_stored_in_the_checkpoint(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from rnn_sentiment.model.checkpoint import load_checkpoint

    data = tmp_path / "data"
    data.mkdir()
    rng = random.Random(0)
    for split, count in (("train", 32), ("dev", 8)):
        rows = [f"{label}\t{rng.choice(('good fun', 'a warm')) if label else rng.choice(('dull bad', 'a flat'))} film ."
                for label in (rng.randrange(2) for _ in range(count))]
        (data / f"{split}.tsv").write_text("label\tsentence\n" + "\n".join(rows) + "\n", encoding="utf-8")
    output = tmp_path / "checkpoint"
    result = run(capsys, "train", "--data", str(data), "--output", str(output), "--quiet", "--embedding-dim", "4",
                 "--hidden-size", "4", "--subword-buckets", "0", "--epochs", "1", "--batch-size", "16",
                 "--evals-per-epoch", "1", "--weights-dtype", "float32")
    assert result.code == 0
    assert result.out == json.dumps(asdict(load_checkpoint(output).training), indent=2) + "\n"


# --- predict ---------------------------------------------------------------------------------------

def predict_from_stdin(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, target: str,
                       lines: list[str], *flags: str) -> Run:
    monkeypatch.setattr(sys, "stdin", io.StringIO("".join(f"{line}\n" for line in lines)))
    return run(capsys, "predict", "--target", target, *flags)


def test_predict_json_prints_the_whole_answer_indented_and_refuses_stdin(
        server: str, capsys: pytest.CaptureFixture[str]) -> None:
    result = run(capsys, "predict", "--target", server, "--json", "a good film")
    assert result.code == 0
    answer = json.loads(result.out)
    assert [p["label"] for p in answer["predictions"]] == ["positive"]
    assert result.out == json.dumps(answer, indent=2) + "\n"
    refused = run(capsys, "predict", "--target", server, "--json")
    assert refused.code == 2 and "--json takes TEXT arguments; for stdin use --format jsonl" in refused.err


@pytest.mark.parametrize("texts, shown", [
    (100, ""),  # too few to be worth a progress line
    (256, "\r256 texts scored\r256 texts scored\r\n"),
    (300, "\r256 texts scored\r300 texts scored\r\n"),
])
def test_predict_counts_texts_scored_on_a_terminals_stderr_every_256(
        server: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, texts: int,
        shown: str) -> None:
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal.stdout)
    result = predict_from_stdin(capsys, monkeypatch, server, ["good"] * texts, "--format", "jsonl")
    monkeypatch.undo()
    assert result.code == 0 and len(result.out.splitlines()) == texts
    assert terminal.close().decode() == shown  # the terminal turns "\n" into "\r\n"


def test_predict_notes_at_most_10_truncated_texts_by_their_number_in_the_table_only(
        server: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    result = predict_from_stdin(capsys, monkeypatch, server, ["short", *[LONG_TEXT] * 12], "--format", "table")
    notes = [line for line in result.err.splitlines() if line.startswith("note: ")]
    assert result.code == 0 and [note.split(" has ")[0] for note in notes] == [f"note: text {i}" for i in range(2, 12)]
    single = run(capsys, "predict", "--target", server, LONG_TEXT)
    assert single.err.startswith("note: the text has ") and single.code == 0
    pair = run(capsys, "predict", "--target", server, LONG_TEXT, LONG_TEXT)
    assert [line.split(" has ")[0] for line in pair.err.splitlines()] == ["note: text 1", "note: text 2"]
    as_jsonl = predict_from_stdin(capsys, monkeypatch, server, [LONG_TEXT], "--format", "jsonl")
    assert as_jsonl.err == "" and json.loads(as_jsonl.out)["truncated"] is True  # the record carries it


def test_predict_whose_reader_went_away_exits_0(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """`rnn-sentiment predict … | head`: the reader's choice, not a failure (docs/sdk.md)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    closed = open(write_end, "w", buffering=1)  # line-buffered: the first line meets the closed pipe
    monkeypatch.setattr(sys, "stdout", closed)
    try:
        assert main(["predict", "--target", server, "good", "bad"]) == 0
    finally:
        monkeypatch.undo()
        closed.close()
