from __future__ import annotations

import argparse
import os
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from rnn_sentiment.server.config import (
    NUMERIC_RANGES, ServerConfig, add_server_arguments, config_from, config_table_markdown,
)


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_server_arguments(parser)
    return parser.parse_args(list(argv))


def test_defaults() -> None:
    config = config_from(_args(), environ={})
    assert config == ServerConfig()
    assert config.address == "127.0.0.1:50051" and config.metrics_address == "127.0.0.1:9464"


def test_flag_beats_environment_beats_default() -> None:
    environ = {"RNN_SENTIMENT_MAX_BATCH_SIZE": "16", "RNN_SENTIMENT_DEVICE": "cpu", "RNN_SENTIMENT_REFLECTION": "false"}
    config = config_from(_args("--max-batch-size", "8"), environ=environ)
    assert config.max_batch_size == 8
    assert config.device == "cpu"
    assert config.reflection is False
    assert config_from(_args("--reflection"), environ=environ).reflection is True


def test_bad_values_say_how_to_fix_them() -> None:
    with pytest.raises(ValueError, match="device='tpu': use one of auto, cpu, cuda"):
        config_from(_args("--device", "tpu"), environ={})
    with pytest.raises(ValueError, match="--max-texts-per-request/RNN_SENTIMENT_MAX_TEXTS_PER_REQUEST=0: must be from 1"):
        config_from(_args(), environ={"RNN_SENTIMENT_MAX_TEXTS_PER_REQUEST": "0"})
    with pytest.raises(ValueError, match="RNN_SENTIMENT_MAX_BATCH_SIZE='lots'"):
        config_from(_args(), environ={"RNN_SENTIMENT_MAX_BATCH_SIZE": "lots"})
    with pytest.raises(ValueError, match="expected a boolean"):
        config_from(_args(), environ={"RNN_SENTIMENT_REFLECTION": "maybe"})
    with pytest.raises(ValueError, match="--max-batch-delay-ms/RNN_SENTIMENT_MAX_BATCH_DELAY_MS=-1.0: must be from 0"):
        config_from(_args("--max-batch-delay-ms", "-1"), environ={})
    with pytest.raises(ValueError, match="expected a boolean"):
        config_from(_args(), environ={"RNN_SENTIMENT_PIN_WORKERS": "sometimes"})


@pytest.mark.parametrize("argv, environ", [
    (("--busy-batch-delay-ms", "0.5"), {}),
    ((), {"RNN_SENTIMENT_BUSY_BATCH_DELAY_MS": "0.5"}),
])
def test_a_removed_knob_is_refused_naming_what_replaced_it(argv: tuple[str, ...], environ: dict[str, str]) -> None:
    # A deployment that still sets it must not start silently without it.
    with pytest.raises(ValueError, match="busy-batch-delay-ms.*BUSY_BATCH_DELAY_MS.*removed.*--max-batch-delay-ms"):
        config_from(_args(*argv), environ=environ)


def test_config_table_documents_every_knob() -> None:
    table = config_table_markdown()
    for name in ServerConfig.__dataclass_fields__:
        assert f"`RNN_SENTIMENT_{name.upper()}`" in table


def test_configuration_page_shows_the_current_table() -> None:
    from tests.support import REPO_ROOT

    assert config_table_markdown() in (REPO_ROOT / "docs" / "configuration.md").read_text(), (
        "docs/configuration.md's table is stale: paste `rnn-sentiment serve --print-config-table`"
    )


def test_reading_and_checking_the_configuration_never_imports_torch() -> None:
    # A supervisor reads the configuration before any worker loads a model.
    code = ("import sys\nfrom rnn_sentiment.server.config import config_from\n"
            "config_from(None, {'RNN_SENTIMENT_BACKEND': 'onnxruntime'})\nprint('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_every_backend_the_model_runs_is_a_valid_choice() -> None:
    from rnn_sentiment.model.backends import BACKENDS

    for backend in BACKENDS:
        ServerConfig(backend=backend).validate()
    with pytest.raises(ValueError, match="backend='tensorrt'"):
        ServerConfig(backend="tensorrt").validate()
    with pytest.raises(ValueError, match="--onnx-max-batch/RNN_SENTIMENT_ONNX_MAX_BATCH=-1"):
        ServerConfig(onnx_max_batch=-1).validate()


NUMERIC_FIELDS = [f for f in fields(ServerConfig) if str(f.type) in ("int", "float")]
FLOAT_FIELDS = [f.name for f in NUMERIC_FIELDS if str(f.type) == "float"]


@pytest.mark.parametrize("name", FLOAT_FIELDS)
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e400"])
def test_float_settings_must_be_finite(name: str, value: str) -> None:
    flag = "--" + name.replace("_", "-")
    with pytest.raises(ValueError, match=f"{flag}/RNN_SENTIMENT_{name.upper()}=.*: must be a finite number"):
        config_from(_args(f"{flag}={value}"), environ={})  # "=": argparse reads a bare "-inf" as a flag
    with pytest.raises(ValueError, match=f"{flag}/RNN_SENTIMENT_{name.upper()}=.*: must be a finite number"):
        config_from(_args(), environ={f"RNN_SENTIMENT_{name.upper()}": value})


@pytest.mark.parametrize("name", [f.name for f in NUMERIC_FIELDS])
def test_every_numeric_setting_has_a_range_that_holds_its_default(name: str) -> None:
    assert name in NUMERIC_RANGES, f"add {name!r} to server/config.py NUMERIC_RANGES: every number is range-checked"
    allowed = NUMERIC_RANGES[name]
    assert allowed.lowest <= getattr(ServerConfig(), name) <= allowed.highest
    below, above = allowed.lowest - 1, allowed.highest + 1
    for value in (below, above):
        with pytest.raises(ValueError, match=f"RNN_SENTIMENT_{name.upper()}={value!r}: must be from"):
            ServerConfig(**{name: value}).validate()


def test_a_batch_delay_in_seconds_instead_of_ms_is_refused() -> None:
    with pytest.raises(ValueError, match="--max-batch-delay-ms/RNN_SENTIMENT_MAX_BATCH_DELAY_MS=1000000.0: "
                                         "must be from 0 to 10000"):
        config_from(_args("--max-batch-delay-ms", "1e6"), environ={})


def test_serve_refuses_infinity_before_starting() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "rnn_sentiment.cli", "serve", "--max-batch-delay-ms", "inf", "--metrics-address", ""],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "--max-batch-delay-ms/RNN_SENTIMENT_MAX_BATCH_DELAY_MS=inf: must be a finite number" in result.stderr


def _subcommands() -> list[str]:
    from rnn_sentiment.cli.main import build_parser

    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sorted(subparsers.choices)


@pytest.mark.parametrize("command", ["", *_subcommands()])
def test_help_of_every_command_works(command: str) -> None:
    # Each help is rendered by the process the user runs: `serve --help` builds the server flags.
    result = subprocess.run(
        [sys.executable, "-m", "rnn_sentiment.cli", *([command] if command else []), "--help"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "usage: rnn-sentiment" in result.stdout


def test_serve_help_lists_every_flag() -> None:
    result = subprocess.run([sys.executable, "-m", "rnn_sentiment.cli", "serve", "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    for f in fields(ServerConfig):
        if not f.metadata.get("env_only"):
            assert "--" + f.name.replace("_", "-") in result.stdout


# What each numeric knob accepts, inclusive, as the operator is told when a value is refused. Written
# out here (not read from NUMERIC_RANGES) so that a changed limit is a visible decision.
ACCEPTED = {
    "model_poll_seconds": (0, 86_400, " (0 = no polling)"),
    "onnx_max_batch": (0, 4_096, " (0 = torch for every batch)"),
    "max_texts_per_request": (1, 100_000, ""),
    "max_text_chars": (1, 10_000_000, ""),
    "max_tokens": (1, 4_096, ""),
    "max_batch_size": (1, 65_536, ""),
    "max_batch_delay_ms": (0, 10_000, ""),
    "max_queue_texts": (1, 10_000_000, ""),
    "max_concurrent_rpcs": (0, 1_000_000, " (0 = no limit)"),
    "max_streams": (1, 1_000_000, ""),
    "stream_idle_seconds": (0, 86_400, " (0 = never)"),
    "max_stream_tokens": (1, 100_000_000, ""),
    "max_pending_rpcs": (1, 1_000_000, ""),
    "workers": (0, 1_024, " (0 = one per core)"),
    "torch_threads": (0, 1_024, " (0 = 1)"),
    "grace_seconds": (0, 3_600, ""),
    "drain_seconds": (0, 3_600, ""),
    "max_connection_age_seconds": (0, 2_592_000, " (0 = never)"),
    "max_connection_age_grace_seconds": (0, 86_400, ""),
    "keepalive_seconds": (0, 86_400, " (0 = off)"),
    "restart_backoff_seconds": (0, 3_600, ""),
    "restart_backoff_max_seconds": (0, 86_400, ""),
    "restart_healthy_seconds": (0, 86_400, ""),
}


def test_every_numeric_setting_is_in_the_table_of_accepted_values() -> None:
    assert sorted(ACCEPTED) == sorted(f.name for f in NUMERIC_FIELDS)


@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_each_numeric_setting_accepts_its_bounds_and_refuses_one_past_them(name: str) -> None:
    lowest, highest, note = ACCEPTED[name]
    for value in (lowest, highest):
        config_from(_args(), environ={f"RNN_SENTIMENT_{name.upper()}": str(value)})
    flag = "--" + name.replace("_", "-")
    for value in (lowest - 1, highest + 1):
        with pytest.raises(ValueError) as refused:
            config_from(_args(f"{flag}={value}"), environ={})
        typed = float(value) if name in FLOAT_FIELDS else value  # as the flag parses it
        assert str(refused.value) == (f"invalid server configuration: {flag}/RNN_SENTIMENT_{name.upper()}="
                                      f"{typed!r}: must be from {lowest} to {highest}{note}")
    # the limit reads as an operator types it back: an integer flag refuses 1e+07
    assert "e+" not in str(refused.value).split("must be")[1]


def test_every_problem_is_reported_at_once_each_with_its_fix(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as refused:
        ServerConfig(address="50051", metrics_address="9464", model_dir=str(tmp_path / "absent"),
                     event_loop="trio", truncation="tail", log_format="xml", model_token_limits="sst2-rnn",
                     max_batch_size=0).validate()
    message = str(refused.value)
    assert message.startswith("invalid server configuration: ")
    for problem in ("address='50051': write host:port, e.g. 127.0.0.1:50051",
                    "metrics_address='9464': write host:port or ''",
                    f"model_dir={str(tmp_path / 'absent')!r} is not a directory",
                    "event_loop='trio': use one of auto, uvloop, asyncio",
                    "truncation='tail': use one of head, head_tail",
                    "log_format='xml': use one of text, json",
                    "model_token_limits='sst2-rnn': ",
                    "--max-batch-size/RNN_SENTIMENT_MAX_BATCH_SIZE=0: must be from 1 to 65536"):
        assert problem in message
    assert message.count("; ") >= 7
    # No metrics endpoint is a valid choice, and an existing model directory is accepted.
    ServerConfig(metrics_address="", model_dir=str(tmp_path)).validate()


def test_the_configuration_a_supervisor_hands_its_workers_is_the_same_configuration(tmp_path: Path) -> None:
    config = config_from(_args("--max-batch-size", "8", "--device", "cpu", "--pin-workers", "--no-reflection",
                               "--max-batch-delay-ms", "2.5", "--model-dir", str(tmp_path)),
                         environ={"RNN_SENTIMENT_AUTH_TOKENS": "t1,t2"})
    assert config_from(None, config.as_environment()) == config
    unset = config_from(None, {})
    assert "RNN_SENTIMENT_REFLECTION" not in unset.as_environment()
    assert config_from(None, unset.as_environment()) == unset


@pytest.mark.parametrize("text, value", [("1", True), ("true", True), (" Yes ", True), ("ON", True),
                                         ("0", False), ("False", False), ("no", False), ("off ", False)])
def test_boolean_variables_take_the_usual_spellings(text: str, value: bool) -> None:
    assert config_from(None, {"RNN_SENTIMENT_PIN_WORKERS": text}).pin_workers is value


def test_flags_that_take_no_value_turn_a_setting_on_and_off() -> None:
    assert config_from(_args("--pin-workers"), environ={}).pin_workers is True
    assert config_from(_args("--no-pin-workers"), environ={"RNN_SENTIMENT_PIN_WORKERS": "1"}).pin_workers is False
    assert config_from(_args(), environ={}).pin_workers is False


def test_an_unreadable_token_file_is_refused_at_start(tmp_path: Path) -> None:
    # Readable by os.access but not a token file: a directory, or bytes that are not UTF-8.
    not_text = tmp_path / "tokens"
    not_text.write_bytes(b"\xff\xfe\x00token\n")
    for path in (tmp_path, not_text):
        with pytest.raises(ValueError, match=f"^invalid server configuration: auth_token_file={str(path)!r}: "):
            config_from(_args("--auth-token-file", str(path)), environ={})


def test_one_worker_per_cpu_this_process_may_use() -> None:
    assert ServerConfig(workers=3).resolved_workers == 3
    allowed = os.sched_getaffinity(0)
    assert ServerConfig().resolved_workers == len(allowed)
    try:
        os.sched_setaffinity(0, {min(allowed)})  # as under `taskset -c 0`, or a container's cpuset
        assert ServerConfig().resolved_workers == 1
    finally:
        os.sched_setaffinity(0, allowed)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to tell one worker from one per core")
def test_an_ephemeral_port_gets_one_worker() -> None:
    # Workers share one known port; port 0 would give each its own.
    assert ServerConfig(address="127.0.0.1:0").resolved_workers == 1
    assert ServerConfig(address="127.0.0.1:0", workers=2).resolved_workers == 2
    assert ServerConfig(address="127.0.0.1:50").resolved_workers == len(os.sched_getaffinity(0))


def test_without_cpu_affinity_the_cpu_count_decides(monkeypatch: pytest.MonkeyPatch) -> None:
    # macOS has no sched_getaffinity: the count of CPUs decides, and one worker when it is unknown.
    monkeypatch.delattr(os, "sched_getaffinity")
    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    assert ServerConfig().resolved_workers == 3
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert ServerConfig().resolved_workers == 1


def test_torch_threads_default_to_one_per_worker() -> None:
    assert ServerConfig().resolved_torch_threads == 1
    assert ServerConfig(torch_threads=3).resolved_torch_threads == 3


def test_no_model_dir_means_the_shipped_models() -> None:
    shipped = ServerConfig().resolved_model_dir
    assert shipped == Path(__file__).resolve().parents[3] / "model" / "checkpoints"
    assert {"sst2-gru", "sst2-rnn"} <= {p.name for p in shipped.iterdir()}
    assert ServerConfig(model_dir="/srv/models").resolved_model_dir == Path("/srv/models")


def test_tls_is_on_exactly_when_a_certificate_is_given() -> None:
    # The start-up log reports it to the operator as the server's transport security.
    assert ServerConfig().tls_enabled is False
    assert ServerConfig(tls_cert="server.pem", tls_key="server.key").tls_enabled is True
