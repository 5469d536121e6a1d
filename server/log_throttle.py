"""ThrottledWarning: at most one log line per interval for an event a caller can repeat at will.

A hostile or broken client can send thousands of malformed messages a second; one line each
would let it fill the disk and bury everything else. The line that is written says how many
were suppressed since the previous one.
"""

from __future__ import annotations

import logging
import time
from typing import Callable


class ThrottledWarning:
    """`warn(**fields)` logs `message` at `level` (WARNING) at most `burst` times (1) in every
    `interval_seconds` window; the first line of the next window carries the suppressed count.

    >>> bad_bytes = ThrottledWarning(logging.getLogger("demo"), "could not parse a request", 10.0)
    >>> bad_bytes.warn(method="Predict")  # written; the next ones within 10 s are only counted
    """

    def __init__(self, logger: logging.Logger, message: str, interval_seconds: float,
                 clock: Callable[[], float] = time.monotonic, level: int = logging.WARNING,
                 burst: int = 1) -> None:
        if burst < 1:
            raise ValueError(f"burst must be >= 1, got {burst}")
        self._logger = logger
        self._level = level
        self._message = message
        self._interval = interval_seconds
        self._clock = clock
        self._burst = burst
        self._window_ends = float("-inf")
        self._written_in_window = 0
        self._suppressed = 0

    def warn(self, **fields: object) -> bool:
        """Log now, or count the event as suppressed; True when a line was written."""
        if not self._logger.isEnabledFor(self._level):
            return False
        now = self._clock()
        if now >= self._window_ends:
            self._window_ends = now + self._interval
            self._written_in_window = 0
        elif self._written_in_window >= self._burst:
            self._suppressed += 1
            return False
        self._logger.log(self._level, self._message, extra={"fields": {**fields, "suppressed": self._suppressed}})
        self._suppressed = 0
        self._written_in_window += 1
        return True
