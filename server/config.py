"""ServerConfig: every server knob, from defaults, `RNN_SENTIMENT_*` variables and flags.

Precedence is flag > environment variable > default. Each field's metadata holds its help
text, which feeds both `--help` and the configuration table in docs/configuration.md (`rnn-sentiment serve --print-config-table`).
"""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from rnn_sentiment.model.checkpoint_schema import MAX_TOKENS_BOUND
from rnn_sentiment.model.config import BACKENDS
from rnn_sentiment.model.truncation import DEFAULT_MAX_TOKENS, DEFAULT_TRUNCATION, TRUNCATIONS

from .cpu_quota import cpu_quota, cpus_within_quota
from .event_loop import EVENT_LOOPS
from .token_limits import token_limit_overrides
from .tls import tls_problems

ENV_PREFIX = "RNN_SENTIMENT_"
DEVICES = ("auto", "cpu", "cuda")
LOG_FORMATS = ("text", "json")


@dataclass(frozen=True)
class NumericRange:
    """The values a numeric knob accepts (inclusive), and what its special value means."""

    lowest: float
    highest: float
    note: str = ""


# Every int and float knob's range, checked at start by validate(). The upper bounds catch unit
# slips (seconds typed into a *_ms knob) and absurd sizes; NaN and inf are refused for every float
# knob, in this table or not (`--max-batch-delay-ms inf` made every Predict wait out its deadline).
NUMERIC_RANGES: dict[str, NumericRange] = {
    "model_poll_seconds": NumericRange(0, 86_400, "0 = no polling"),
    "onnx_max_batch": NumericRange(0, 4_096, "0 = torch for every batch"),
    "max_texts_per_request": NumericRange(1, 100_000),
    "max_text_chars": NumericRange(1, 10_000_000),
    "max_tokens": NumericRange(1, MAX_TOKENS_BOUND),
    "max_batch_size": NumericRange(1, 65_536),
    "max_batch_delay_ms": NumericRange(0, 10_000),
    "max_queue_texts": NumericRange(1, 10_000_000),
    "max_concurrent_rpcs": NumericRange(0, 1_000_000, "0 = no limit"),
    "max_streams": NumericRange(1, 1_000_000),
    "stream_idle_seconds": NumericRange(0, 86_400, "0 = never"),
    "max_stream_tokens": NumericRange(1, 100_000_000),
    "max_pending_rpcs": NumericRange(1, 1_000_000),
    "workers": NumericRange(0, 1_024, "0 = one per core"),
    "torch_threads": NumericRange(0, 1_024, "0 = 1"),
    "grace_seconds": NumericRange(0, 3_600),
    "drain_seconds": NumericRange(0, 3_600),
    "max_connection_age_seconds": NumericRange(0, 30 * 86_400, "0 = never"),
    "max_connection_age_grace_seconds": NumericRange(0, 86_400),
    "keepalive_seconds": NumericRange(0, 86_400, "0 = off"),
    "restart_backoff_seconds": NumericRange(0, 3_600),
    "restart_backoff_max_seconds": NumericRange(0, 86_400),
    "restart_healthy_seconds": NumericRange(0, 86_400),
}


# Knobs that were removed, and what replaces them. Still recognised (as a flag or a variable) so
# that a deployment setting one fails at start with this message, not runs silently without it.
REMOVED_KNOBS: dict[str, str] = {
    "busy_batch_delay_ms": "removed: it gained no req/s and lost p99 against no wait (docs/performance.md); "
                           "--max-batch-delay-ms is the one batching wait",
}


def default_model_dir() -> Path:
    """The model repository shipped inside the package: one checkpoint per subdirectory."""
    return Path(__file__).resolve().parent.parent / "model" / "checkpoints"


def _knob(default: Any, help_text: str, env_only: bool = False) -> Any:
    # env_only: a secret, so no flag (a flag's value shows in `ps`) and never in the repr.
    return field(default=default, repr=not env_only, metadata={"help": help_text, "env_only": env_only})


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
    max_text_chars: int = _knob(
        5000, "Most characters one text may have (prose runs 5-6 per token: keep it above 6 x --max-tokens so "
        "a long text is truncated, not refused)"
    )
    max_tokens: int = _knob(
        DEFAULT_MAX_TOKENS, "Most tokens a model reads of one text; the rest is dropped and the prediction says "
        "truncated. Bounds a text's cost, which grows with its tokens (see docs/models.md#long-texts)"
    )
    truncation: str = _knob(
        DEFAULT_TRUNCATION, "Which tokens of a longer text are read: head (the first --max-tokens) or head_tail "
        "(the first quarter and the last three quarters, where reviews give their verdict; the middle is dropped)"
    )
    model_token_limits: str = _knob(
        "", "Per-model --max-tokens and --truncation: NAME=TOKENS[:TRUNCATION], comma-separated, e.g. "
        "sst2-rnn=256:head; a model not named uses the two flags"
    )
    max_batch_size: int = _knob(64, "Most texts one model forward pass takes")
    max_batch_delay_ms: float = _knob(
        0.0, "Extra wait to fill a batch when the model is idle (0: an idle model runs at once)"
    )
    max_queue_texts: int = _knob(2048, "Texts waiting for the model before RESOURCE_EXHAUSTED")
    max_streams: int = _knob(
        128, "StreamSentiment streams open at once per worker; one more is refused with RESOURCE_EXHAUSTED, an open "
        "one is never evicted. Each stream also holds one of --max-concurrent-rpcs for its lifetime: raise both "
        "together (see docs/streaming.md)"
    )
    stream_idle_seconds: float = _knob(
        60.0, "End a StreamSentiment stream with DEADLINE_EXCEEDED when no message has come for this long (0: never)"
    )
    max_stream_tokens: int = _knob(
        100_000, "Most tokens one StreamSentiment stream may send, read or dropped past the model's token limit; "
        "beyond, the stream ends with RESOURCE_EXHAUSTED"
    )
    max_concurrent_rpcs: int = _knob(
        256, "Calls in progress per worker (health checks aside) beyond which a call is refused at once with "
        "RESOURCE_EXHAUSTED and RetryInfo, counted in grpc_server_handled_total (0: no limit; see docs/reliability.md)"
    )
    max_pending_rpcs: int = _knob(
        20_000, "Calls gRPC core may hold before the server picks them up; beyond it gRPC itself refuses calls as "
        "CANCELLED, uncounted (gRPC's default, 1,000, did so in a burst; see docs/reliability.md)"
    )
    workers: int = _knob(
        0, "Server processes sharing the gRPC port (SO_REUSEPORT), metrics aggregated (0: one per CPU this process "
        "may use, capped by a container's CPU quota (docker --cpus, a Kubernetes CPU limit); 1 if port is 0)"
    )
    pin_workers: bool = _knob(
        False, "With more than one worker, pin each (all its threads) to a CPU of its own when there are enough "
        "CPUs: more req/s and a lower p99 under load; a pinned worker cannot move away from a busy neighbour "
        "(measured in docs/performance.md)"
    )
    torch_threads: int = _knob(
        0, "Torch intra-op threads per worker (0: 1, measured best: the event loop needs the other cores)"
    )
    event_loop: str = _knob(
        "auto", "asyncio event loop: auto (uvloop when installed: more req/s, see docs/performance.md), uvloop or asyncio"
    )
    reflection: bool | None = _knob(
        None, "Serve gRPC server reflection (for grpcurl and friends); unset: on, but off when bearer-token auth "
        "is on (then --reflection turns it on, for callers with a token)"
    )
    tls_cert: str = _knob("", "PEM certificate chain: serve gRPC over TLS (with --tls-key; re-read when the file "
                          "changes, no restart); empty: plaintext")
    tls_key: str = _knob("", "PEM private key (unencrypted) of --tls-cert")
    tls_client_ca: str = _knob("", "PEM CA bundle: mutual TLS, every client must present a certificate it signed "
                               "(needs --tls-cert)")
    auth_token_file: str = _knob("", "Bearer-token auth: a file of valid tokens, one per line (several for rotation; "
                                 "re-read when it changes); health stays open")
    auth_tokens: str = _knob("", "Bearer-token auth: valid tokens, comma-separated (environment only, never a flag)",
                             env_only=True)
    grace_seconds: float = _knob(10.0, "On SIGTERM/SIGINT, how long in-flight calls may finish")
    drain_seconds: float = _knob(
        5.0, "On SIGTERM/SIGINT, health turns NOT_SERVING and new calls get UNAVAILABLE (retryable) for up to "
        "this long before the port closes, so balancers and clients move away; ends early once no call has "
        "come for 0.2 s"
    )
    max_connection_age_seconds: float = _knob(
        30.0, "Close each client connection gracefully (GOAWAY) after about this long, so clients reconnect "
        "and spread over workers and replicas, restarted ones included (0: never)"
    )
    max_connection_age_grace_seconds: float = _knob(
        10.0, "How long calls in flight on an aged-out connection may still finish"
    )
    keepalive_seconds: float = _knob(
        60.0, "Ping a client connection idle this long; drop it when the ping is not answered in 20 s (0: off)"
    )
    restart_backoff_seconds: float = _knob(
        0.5, "--workers N: wait this long before restarting a crashed worker, doubling with each crash in a row"
    )
    restart_backoff_max_seconds: float = _knob(30.0, "--workers N: the longest wait before a restart")
    restart_healthy_seconds: float = _knob(
        60.0, "--workers N: a worker that ran this long since its restart counts as healthy: its next crash "
        "waits restart_backoff_seconds again"
    )
    log_format: str = _knob("text", "Log line format: text or json")
    log_level: str = _knob("INFO", "Log level: DEBUG, INFO, WARNING, ERROR")

    def validate(self) -> None:
        """Raise ValueError with the fix spelled out, before anything starts."""
        problems = []
        if self.device not in DEVICES:
            problems.append(f"device={self.device!r}: use one of {', '.join(DEVICES)}")
        if self.backend not in BACKENDS:
            problems.append(f"backend={self.backend!r}: use one of {', '.join(BACKENDS)}")
        if self.event_loop not in EVENT_LOOPS:
            problems.append(f"event_loop={self.event_loop!r}: use one of {', '.join(EVENT_LOOPS)}")
        if self.truncation not in TRUNCATIONS:
            problems.append(f"truncation={self.truncation!r}: use one of {', '.join(TRUNCATIONS)}")
        try:
            token_limit_overrides(self.model_token_limits)
        except ValueError as error:
            problems.append(f"model_token_limits={self.model_token_limits!r}: {error}")
        if self.log_format not in LOG_FORMATS:
            problems.append(f"log_format={self.log_format!r}: use one of {', '.join(LOG_FORMATS)}")
        problems.extend(_numeric_problems(self))
        if ":" not in self.address:
            problems.append(f"address={self.address!r}: write host:port, e.g. 127.0.0.1:50051")
        if self.metrics_address and ":" not in self.metrics_address:
            problems.append(f"metrics_address={self.metrics_address!r}: write host:port or ''")
        problems.extend(tls_problems(self.tls_cert, self.tls_key, self.tls_client_ca))
        if self.auth_token_file and not os.access(self.auth_token_file, os.R_OK):
            problems.append(f"auth_token_file={self.auth_token_file!r} is not a readable file")
        elif self.auth_enabled:
            problems.extend(_auth_problems(self.auth_tokens, self.auth_token_file))
        if self.model_dir and not Path(self.model_dir).is_dir():
            problems.append(f"model_dir={self.model_dir!r} is not a directory")
        if problems:
            raise ValueError("invalid server configuration: " + "; ".join(problems))

    def as_environment(self) -> dict[str, str]:
        """This configuration as `RNN_SENTIMENT_*` variables (how a supervisor configures workers)."""
        # An unset tri-state (None) stays unset, so the worker resolves it the same way.
        return {_env_name(f.name): str(getattr(self, f.name)) for f in fields(self) if getattr(self, f.name) is not None}

    @property
    def auth_enabled(self) -> bool:
        return bool(self.auth_tokens or self.auth_token_file)

    @property
    def resolved_reflection(self) -> bool:
        # Reflection tells an unauthenticated caller the whole API; with auth on it is opt-in.
        return (not self.auth_enabled) if self.reflection is None else self.reflection

    @property
    def tls_enabled(self) -> bool:
        return bool(self.tls_cert)

    @property
    def resolved_workers(self) -> int:
        # One per core: more req/s and a lower p99 than one worker under load, the same latency
        # at concurrency 1 (docs/performance.md).
        if self.workers:
            return self.workers
        if self.address.rpartition(":")[2] == "0":
            return 1  # workers must share one known port; an ephemeral port is for one process
        visible = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        # A container's CPU quota caps it: `--cpus 2` on a 64-core host is 2 workers, not 64.
        return cpus_within_quota(visible, cpu_quota())

    @property
    def resolved_torch_threads(self) -> int:
        # Several intra-op threads ran several times slower than one while the event loop was
        # busy, because they fight the loop for the other core (docs/performance.md). An RNN's
        # per-step products are too small to gain from splitting; scale with --workers.
        return self.torch_threads or 1

    @property
    def resolved_model_dir(self) -> Path:
        return Path(self.model_dir) if self.model_dir else default_model_dir()


def _auth_problems(auth_tokens: str, auth_token_file: str) -> list[str]:
    from .auth import token_set

    try:
        tokens = token_set(auth_tokens, auth_token_file)
    except ValueError as error:
        return [str(error)]
    if tokens is None or not tokens.tokens():
        return ["bearer-token auth is on but no token is given: put tokens in auth_token_file "
                "(one per line) or RNN_SENTIMENT_AUTH_TOKENS (comma-separated)"]
    return []


def _numeric_problems(config: ServerConfig) -> list[str]:
    """Each int/float knob that is not finite or not in its NUMERIC_RANGES range, naming its flag."""
    problems = []
    for f in fields(config):
        value = getattr(config, f.name)
        if str(f.type) not in ("int", "float") or value is None:
            continue
        where = f"{_flag_name(f.name)}/{_env_name(f.name)}={value!r}"
        allowed = NUMERIC_RANGES.get(f.name)
        span = f" from {_typed_back(allowed.lowest)} to {_typed_back(allowed.highest)}" if allowed else ""
        note = f" ({allowed.note})" if allowed and allowed.note else ""
        if not math.isfinite(value):
            problems.append(f"{where}: must be a finite number{span}{note}")
        elif allowed and not allowed.lowest <= value <= allowed.highest:
            problems.append(f"{where}: must be{span}{note}")
    return problems


def _typed_back(limit: float) -> str:
    """A limit as an operator would type it back: whole numbers in full (10000000, never 1e+07,
    which an integer flag refuses)."""
    return str(int(limit)) if float(limit).is_integer() else f"{limit:g}"


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


_TYPES = {"str": str, "int": int, "float": float, "bool": bool, "bool | None": bool}


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per ServerConfig field; unset flags fall back to env, then default."""
    for f in fields(ServerConfig):
        if f.metadata["env_only"]:
            continue
        kind = _TYPES[str(f.type)]
        # argparse %-formats help strings: a literal % (as in "50% of the texts") must be doubled.
        help_text = f"{f.metadata['help']} (env {_env_name(f.name)}, default {f.default!r})".replace("%", "%%")
        if kind is bool:
            parser.add_argument(
                _flag_name(f.name), dest=f.name, default=None,
                action=argparse.BooleanOptionalAction, help=help_text,
            )
        else:
            parser.add_argument(
                _flag_name(f.name), dest=f.name, default=None, type=kind, help=help_text
            )
    for name in REMOVED_KNOBS:  # hidden; config_from refuses them
        parser.add_argument(_flag_name(name), dest=_removed_dest(name), default=None, nargs="?", const="",
                            help=argparse.SUPPRESS)


def _removed_dest(name: str) -> str:
    return "removed_" + name


def config_from(args: argparse.Namespace | None = None, environ: Mapping[str, str] | None = None) -> ServerConfig:
    """Build a ServerConfig: flag > `RNN_SENTIMENT_*` environment variable > default."""
    environ = os.environ if environ is None else environ
    removed = [name for name in REMOVED_KNOBS
               if getattr(args, _removed_dest(name), None) is not None or _env_name(name) in environ]
    if removed:
        raise ValueError("; ".join(f"{_flag_name(name)}/{_env_name(name)} was {REMOVED_KNOBS[name]}"
                                   for name in removed))
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
    """The configuration table of docs/configuration.md, generated so it cannot drift from the code."""
    rows = ["| flag | environment variable | default | meaning |", "| --- | --- | --- | --- |"]
    for f in fields(ServerConfig):
        default = f.default if f.default is not MISSING else ""
        flag = "(none)" if f.metadata["env_only"] else f"`{_flag_name(f.name)}`"
        rows.append(
            f"| {flag} | `{_env_name(f.name)}` | `{default!r}` | {f.metadata['help']} |"
        )
    return "\n".join(rows)
