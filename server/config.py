"""ServerConfig: every server knob, from defaults, `RNN_SENTIMENT_*` variables and flags.

Precedence is flag > environment variable > default. Each field's metadata holds its help
text, which feeds both `--help` and the README table (`rnn-sentiment serve --print-config-table`).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from .event_loop import EVENT_LOOPS

ENV_PREFIX = "RNN_SENTIMENT_"
DEVICES = ("auto", "cpu", "cuda")
LOG_FORMATS = ("text", "json")
# model.backends.BACKENDS, spelled out so that reading the config never imports torch (a test
# keeps the two equal).
BACKENDS = ("auto", "torch", "onnxruntime")


def default_model_dir() -> Path:
    """The model repository shipped inside the package: one checkpoint per subdirectory."""
    return Path(__file__).resolve().parent.parent / "model" / "checkpoints"


def _knob(default: Any, help_text: str) -> Any:
    return field(default=default, metadata={"help": help_text})


@dataclass(frozen=True)
class ServerConfig:
    """The whole server configuration; validated once at start by `validate()`."""

    address: str = _knob("127.0.0.1:50051", "gRPC listen address host:port (port 0 picks a free one)")
    metrics_address: str = _knob(
        "127.0.0.1:9464", "Prometheus /metrics HTTP address host:port; empty disables it"
    )
    model_dir: str = _knob(
        "", "A checkpoint directory, or a directory of them (one model each); empty: the shipped models"
    )
    default_model: str = _knob(
        "", "Model used when a request names none; empty: `sst2-gru` if served, else the first by name"
    )
    model_poll_seconds: float = _knob(
        0.0, "Hot reload: check the model directory for changed checkpoints this often (0: off; SIGHUP always reloads)"
    )
    device: str = _knob("auto", "Where models run: auto (cuda when available), cpu or cuda")
    backend: str = _knob(
        "auto", "Predict's executor: auto (ONNX Runtime on CPU when it is installed and agrees with torch, "
        "else torch), torch or onnxruntime"
    )
    onnx_max_batch: int = _knob(
        16, "Most texts in one ONNX Runtime run: a batch runs as runs of texts of similar length, up to this "
        "many each (0: torch for every batch)"
    )
    max_texts_per_request: int = _knob(64, "Most texts one Predict request may carry")
    max_text_chars: int = _knob(5000, "Most characters one text may have")
    max_batch_size: int = _knob(64, "Most texts one model forward pass takes")
    max_batch_delay_ms: float = _knob(
        0.0, "Extra wait to fill a batch when the model is idle (0: an idle model runs at once)"
    )
    busy_batch_delay_ms: float = _knob(
        0.0, "Under load (the previous forward pass carried more than one text), wait this long for more texts "
        "before the next pass; a lone text after a lone text never waits (0: off)"
    )
    max_queue_texts: int = _knob(2048, "Texts waiting for the model before RESOURCE_EXHAUSTED")
    workers: int = _knob(
        0, "Server processes sharing the gRPC port (SO_REUSEPORT), metrics aggregated (0: one per core; 1 if port is 0)"
    )
    pin_workers: bool = _knob(
        False, "With more than one worker, pin each (all its threads) to a CPU of its own when there are enough "
        "CPUs: +4-12% req/s on 2 cores beside the load generator; a pinned worker cannot move away from a busy "
        "neighbour, so use it where the workers have the cores to themselves (see README)"
    )
    torch_threads: int = _knob(
        0, "Torch intra-op threads per worker (0: 1, measured best: the event loop needs the other cores)"
    )
    event_loop: str = _knob(
        "auto", "asyncio event loop: auto (uvloop when installed, 5-8% more req/s measured), uvloop or asyncio"
    )
    reflection: bool = _knob(True, "Serve gRPC server reflection (for grpcurl and friends)")
    grace_seconds: float = _knob(10.0, "On SIGTERM/SIGINT, how long in-flight calls may finish")
    log_format: str = _knob("text", "Log line format: text or json")
    log_level: str = _knob("INFO", "Log level: DEBUG, INFO, WARNING, ERROR")

    def validate(self) -> None:
        """Raise ValueError with the fix spelled out, before anything starts."""
        problems = []
        if self.device not in DEVICES:
            problems.append(f"device={self.device!r}: use one of {', '.join(DEVICES)}")
        if self.backend not in BACKENDS:
            problems.append(f"backend={self.backend!r}: use one of {', '.join(BACKENDS)}")
        if self.onnx_max_batch < 0:
            problems.append("onnx_max_batch must be >= 0 (0 = torch for every batch)")
        if self.event_loop not in EVENT_LOOPS:
            problems.append(f"event_loop={self.event_loop!r}: use one of {', '.join(EVENT_LOOPS)}")
        if self.log_format not in LOG_FORMATS:
            problems.append(f"log_format={self.log_format!r}: use one of {', '.join(LOG_FORMATS)}")
        if self.workers < 0:
            problems.append(f"workers={self.workers}: must be >= 0 (0 = one per core)")
        for name in ("max_texts_per_request", "max_text_chars", "max_batch_size", "max_queue_texts"):
            if getattr(self, name) < 1:
                problems.append(f"{name}={getattr(self, name)}: must be at least 1")
        if self.max_batch_delay_ms < 0:
            problems.append("max_batch_delay_ms must be >= 0")
        if self.busy_batch_delay_ms < 0:
            problems.append("busy_batch_delay_ms must be >= 0")
        if self.torch_threads < 0:
            problems.append("torch_threads must be >= 0 (0 = one per core)")
        if self.model_poll_seconds < 0:
            problems.append("model_poll_seconds must be >= 0 (0 = no polling)")
        if self.grace_seconds < 0:
            problems.append("grace_seconds must be >= 0")
        if ":" not in self.address:
            problems.append(f"address={self.address!r}: write host:port, e.g. 127.0.0.1:50051")
        if self.metrics_address and ":" not in self.metrics_address:
            problems.append(f"metrics_address={self.metrics_address!r}: write host:port or ''")
        if self.model_dir and not Path(self.model_dir).is_dir():
            problems.append(f"model_dir={self.model_dir!r} is not a directory")
        if problems:
            raise ValueError("invalid server configuration: " + "; ".join(problems))

    def as_environment(self) -> dict[str, str]:
        """This configuration as `RNN_SENTIMENT_*` variables (how a supervisor configures workers)."""
        return {_env_name(f.name): str(getattr(self, f.name)) for f in fields(self)}

    @property
    def resolved_workers(self) -> int:
        # Measured on 2 cores: 2 workers gave 1.5-1.7x one worker's req/s from concurrency 8 up,
        # with lower p99, and the same latency at concurrency 1 (bench/results/serving.md).
        if self.workers:
            return self.workers
        if self.address.rpartition(":")[2] == "0":
            return 1  # workers must share one known port; an ephemeral port is for one process
        return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))

    @property
    def resolved_torch_threads(self) -> int:
        # Measured on 2 cores (GRU 256, batches 1-32): 2 intra-op threads ran 4-20x slower than 1
        # while the event loop was busy, because they fight the loop for the second core. An
        # RNN's per-step products are too small to gain from splitting; scale with --workers.
        return self.torch_threads or 1

    @property
    def resolved_model_dir(self) -> Path:
        return Path(self.model_dir) if self.model_dir else default_model_dir()


def _env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def _flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected a boolean (true/false), got {text!r}")


def _convert(kind: type, text: str) -> Any:
    if kind is bool:
        return _parse_bool(text)
    return kind(text)


_TYPES = {"str": str, "int": int, "float": float, "bool": bool}


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per ServerConfig field; unset flags fall back to env, then default."""
    for f in fields(ServerConfig):
        kind = _TYPES[str(f.type)]
        help_text = f"{f.metadata['help']} (env {_env_name(f.name)}, default {f.default!r})"
        if kind is bool:
            parser.add_argument(
                _flag_name(f.name), dest=f.name, default=None,
                action=argparse.BooleanOptionalAction, help=help_text,
            )
        else:
            parser.add_argument(
                _flag_name(f.name), dest=f.name, default=None, type=kind, help=help_text
            )


def config_from(args: argparse.Namespace | None = None, environ: Mapping[str, str] | None = None) -> ServerConfig:
    """Build a ServerConfig: flag > `RNN_SENTIMENT_*` environment variable > default."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in fields(ServerConfig):
        kind = _TYPES[str(f.type)]
        flag_value = getattr(args, f.name, None) if args is not None else None
        if flag_value is not None:
            values[f.name] = flag_value
        elif _env_name(f.name) in environ:
            raw = environ[_env_name(f.name)]
            try:
                values[f.name] = _convert(kind, raw)
            except ValueError as error:
                raise ValueError(f"{_env_name(f.name)}={raw!r}: {error}") from None
    config = ServerConfig(**values)
    config.validate()
    return config


def config_table_markdown() -> str:
    """The README's configuration table, generated so it cannot drift from the code."""
    rows = ["| flag | environment variable | default | meaning |", "| --- | --- | --- | --- |"]
    for f in fields(ServerConfig):
        default = f.default if f.default is not MISSING else ""
        rows.append(
            f"| `{_flag_name(f.name)}` | `{_env_name(f.name)}` | `{default!r}` | {f.metadata['help']} |"
        )
    return "\n".join(rows)
