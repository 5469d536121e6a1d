"""Text log lines cannot be forged; throttled warnings stay throttled; request ids are checked."""

from __future__ import annotations

import json
import logging
import re
import shlex
import sys

import pytest

from rnn_sentiment.server.admission import AdmissionLimit
from rnn_sentiment.server.instrumentation import request_id_of
from rnn_sentiment.server.log_throttle import ThrottledWarning
from rnn_sentiment.server.logging_setup import JsonFormatter, TextFormatter, configure_logging

HOSTILE = [
    "abc\n2026-01-01 00:00:00,000 ERROR rnn_sentiment.server: forged",
    "abc\r\x1b[2J\x1b[31mred\x00\x07",
    'x code=OK grpc_code="OK"',
    "zero\u200bwidth\u202eright-to-left",
]


def _record(message: str, *args: object, fields: dict | None = None, exc_info: object = None) -> logging.LogRecord:
    record = logging.LogRecord("rnn_sentiment.server.access", logging.INFO, __file__, 1, message, args, exc_info)  # type: ignore[arg-type]
    if fields is not None:
        record.fields = fields
    return record


def _unsafe_characters(line: str) -> list[str]:
    return [c for c in line if not c.isprintable()]


@pytest.mark.parametrize("value", HOSTILE)
def test_a_field_value_stays_one_field_on_one_line(value: str) -> None:
    line = TextFormatter().format(_record("rpc", fields={"request_id": value, "method": "Predict", "code": "NOT_FOUND"}))
    assert "\n" not in line and _unsafe_characters(line) == []
    # Parsed as the shell would (quotes group): exactly the three fields, the value intact.
    _, fields_text = line.split(": rpc ", 1)
    pairs = dict(token.split("=", 1) for token in shlex.split(fields_text))
    assert set(pairs) == {"request_id", "method", "code"}
    assert pairs["code"] == "NOT_FOUND"


@pytest.mark.parametrize("value", HOSTILE)
def test_the_message_is_escaped_too(value: str) -> None:
    line = TextFormatter().format(_record("model %s not found", value))
    assert "\n" not in line and _unsafe_characters(line) == []
    assert "model abc" in line or "model x code" in line or "model zero" in line


def test_plain_values_stay_bare_and_readable() -> None:
    line = TextFormatter().format(_record("serving", fields={"grpc_address": "127.0.0.1:50051", "workers": 2,
                                                            "models": "sst2-gru@2.1.0,sst2-rnn@1.0.0"}))
    assert line.endswith("serving grpc_address=127.0.0.1:50051 workers=2 models=sst2-gru@2.1.0,sst2-rnn@1.0.0")


def test_a_traceback_keeps_its_lines_but_none_passes_for_a_log_line() -> None:
    try:
        raise ValueError("boom\n2026-01-01 00:00:00,000 INFO forged")
    except ValueError:
        line = TextFormatter().format(_record("internal error", fields={"a": "b"}, exc_info=sys.exc_info()))
    first, *rest = line.split("\n")
    assert first.endswith("internal error a=b")
    assert rest and all(r.startswith("  | ") for r in rest)


def test_throttled_warning_writes_one_line_per_interval_with_the_count(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    throttled = ThrottledWarning(logging.getLogger("test.throttle"), "bad bytes", 10.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="test.throttle"):
        written = [throttled.warn(method="Predict") for _ in range(500)]
        now[0] += 10.0
        written.append(throttled.warn(method="Trace"))
    assert written.count(True) == 2 and written[0] and written[-1]
    assert [r.fields for r in caplog.records] == [
        {"method": "Predict", "suppressed": 0}, {"method": "Trace", "suppressed": 499},
    ]


def test_admission_limit_refuses_beyond_the_limit_and_frees_on_leave() -> None:
    limit = AdmissionLimit(2)
    assert limit.try_enter() and limit.try_enter()
    assert not limit.try_enter()
    limit.leave()
    assert limit.try_enter()
    assert "limit of 2 calls" in limit.refusal().message
    with pytest.raises(ValueError):
        AdmissionLimit(0)


@pytest.mark.parametrize("value", ["req-123", "a.b:c_d-E9", "x" * 128])
def test_a_safe_request_id_is_kept(value: str) -> None:
    request_id = request_id_of((("other", "v"), ("x-request-id", value)))
    assert (request_id.echoed, request_id.replaced) == (value, False)


@pytest.mark.parametrize("value", [*HOSTILE, "x" * 129, "x" * 8192, "", "café", "a/b", b"raw-bytes"])
def test_any_other_request_id_is_replaced_by_a_server_made_one(value: object) -> None:
    request_id = request_id_of((("x-request-id", value),))
    assert request_id.replaced and re.fullmatch(r"[0-9a-f]{32}", request_id.echoed)


def test_no_request_id_means_nothing_to_echo() -> None:
    request_id = request_id_of((("user-agent", "grpc-python"),))
    assert (request_id.echoed, request_id.replaced) == ("", False)


def test_throttled_warning_writes_a_burst_per_interval_then_counts(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    throttled = ThrottledWarning(logging.getLogger("test.burst"), "rpc", 10.0, clock=lambda: now[0],
                                 level=logging.INFO, burst=3)
    with caplog.at_level(logging.INFO, logger="test.burst"):
        written = [throttled.warn(code="NOT_FOUND") for _ in range(50)]
        now[0] += 10.0
        written.append(throttled.warn(code="NOT_FOUND"))
    assert written[:3] == [True] * 3 and written.count(True) == 4 and written[-1]
    assert [r.fields["suppressed"] for r in caplog.records] == [0, 0, 0, 47]
    assert all(r.levelno == logging.INFO for r in caplog.records)


@pytest.mark.parametrize(("message", "shown"), [
    ("line one\nline two", "line one\\nline two"),
    ("tab\there\x1b[31m", "tab\\there\\u001b[31m"),
    ("C:\\new", "C:\\\\new"),  # a backslash doubled, so a written `\n` cannot pass for an escaped newline
    ("plain words", "plain words"),
])
def test_a_message_shows_each_escaped_character_as_its_json_escape(message: str, shown: str) -> None:
    line = TextFormatter().format(_record("%s", message))
    assert line.endswith(f" INFO rnn_sentiment.server.access: {shown}")


@pytest.mark.parametrize(("key", "shown"), [("method", "method"), ("a b", '"a b"'), ("x=1 y", '"x=1 y"')])
def test_a_field_key_that_is_not_plain_is_quoted(key: str, shown: str) -> None:
    assert TextFormatter().format(_record("rpc", fields={key: "v"})).endswith(f"rpc {shown}=v")


def test_a_stack_keeps_its_lines_but_none_passes_for_a_log_line() -> None:
    record = _record("slow call")
    record.stack_info = "Stack (most recent call last):\n  File \"x.py\", line 1\n2026-01-01 00:00:00,000 INFO forged"
    first, *rest = TextFormatter().format(record).split("\n")
    assert first.endswith("slow call") and len(rest) == 3
    assert all(r.startswith("  | ") for r in rest)


def test_a_json_line_carries_the_record_its_fields_and_its_exception() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = _record("internal error on %s", "Predict", fields={"code": "INTERNAL"}, exc_info=sys.exc_info())
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["time"])
    assert (entry["level"], entry["logger"], entry["pid"]) == ("INFO", "rnn_sentiment.server.access", record.process)
    assert (entry["message"], entry["code"]) == ("internal error on Predict", "INTERNAL")
    assert entry["exception"].startswith("Traceback") and entry["exception"].endswith("ValueError: boom")
    assert "exception" not in json.loads(JsonFormatter().format(_record("served")))


@pytest.mark.parametrize(("log_format", "is_json"), [("json", True), ("text", False)])
def test_configure_logging_writes_the_chosen_format_at_the_chosen_level(
        log_format: str, is_json: bool, capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        configure_logging(log_format, "warning")
        logging.getLogger("test.configure").info("hidden")
        logging.getLogger("test.configure").warning("shown")
    finally:
        root.handlers[:], root.level = saved
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("{") == is_json and "shown" in lines[0]


def test_a_throttle_needs_a_burst_of_at_least_one() -> None:
    with pytest.raises(ValueError, match="burst must be >= 1, got 0"):
        ThrottledWarning(logging.getLogger("test.burst"), "rpc", 10.0, burst=0)


def test_a_throttled_warning_below_the_loggers_level_writes_and_counts_nothing(
        caplog: pytest.LogCaptureFixture) -> None:
    throttled = ThrottledWarning(logging.getLogger("test.quiet"), "bad bytes", 10.0, clock=lambda: 100.0)
    with caplog.at_level(logging.ERROR, logger="test.quiet"):
        assert [throttled.warn(method="Predict") for _ in range(3)] == [False] * 3
    with caplog.at_level(logging.WARNING, logger="test.quiet"):
        assert throttled.warn(method="Trace")
    # The events nobody could see were not "suppressed": the first line written says none were.
    assert [r.fields for r in caplog.records] == [{"method": "Trace", "suppressed": 0}]
