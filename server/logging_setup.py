"""Log lines as text for people or JSON for log pipelines, chosen by ServerConfig.log_format."""

from __future__ import annotations

import json
import logging
import re
import sys
import time


class JsonFormatter(logging.Formatter):
    """One JSON object per line; `extra={"fields": {...}}` adds structured fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


# A field value written bare in the text format; anything else is quoted and escaped.
_BARE_VALUE = re.compile(r"[A-Za-z0-9._:/@,+\-]+")
_EXCEPTION_INDENT = "  | "


def _escape_char(char: str) -> str:
    return "\\\\" if char == "\\" else json.dumps(char)[1:-1]


def escape_message(text: str) -> str:
    """`text` with every non-printable character (newline, ESC, NUL, zero-width space...) and the
    backslash written as an escape, so it stays on one line and shows what it holds."""
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(c if c.isprintable() and c != "\\" else _escape_char(c) for c in text)


def format_value(value: object) -> str:
    """A field value that cannot break out of its `key=value`: bare if plain, else a JSON string."""
    text = value if isinstance(value, str) else str(value)
    if _BARE_VALUE.fullmatch(text):
        return text
    return json.dumps(text)  # ASCII only: every control, format and non-ASCII character escaped


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message key=value ...`, one line per record whatever the values hold.

    The message and every field value are escaped (as the JSON format does), so a caller's bytes
    can neither start a new line nor pass for another field (`code=OK`). A traceback keeps its
    lines, each indented so that none can pass for a log line.
    """

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_message(record.message)
        return super().formatMessage(record)

    def formatException(self, ei) -> str:  # type: ignore[no-untyped-def]
        text = super().formatException(ei)
        return "\n".join(_EXCEPTION_INDENT + escape_message(line) for line in text.splitlines())

    def formatStack(self, stack_info: str) -> str:
        return "\n".join(_EXCEPTION_INDENT + escape_message(line) for line in stack_info.splitlines())

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = getattr(record, "fields", None)
        if fields:
            rendered = " ".join(f"{format_key(k)}={format_value(v)}" for k, v in fields.items())
            # Fields belong on the first line, before any traceback.
            first, newline, rest = line.partition("\n")
            line = f"{first} {rendered}{newline}{rest}"
        return line


def format_key(key: object) -> str:
    text = str(key)
    return text if _BARE_VALUE.fullmatch(text) and "=" not in text else json.dumps(text)


def configure_logging(log_format: str, level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    # Imported here so this module stays importable without grpc (it is only formatting).
    from .instrumentation import RequestIdFilter

    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
