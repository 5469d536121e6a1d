"""One state machine for a process's signals: loading -> serving -> draining -> stopped.

Every signal the server acts on has a handler in every phase, so none can take its default
action (SIGHUP's kills the process with nothing logged):

| signal         | loading                      | serving          | draining | stopped |
| -------------- | ---------------------------- | ---------------- | -------- | ------- |
| SIGTERM/SIGINT | drain at once (stop loading) | drain            | ignored  | ignored |
| SIGHUP         | ignored                      | `on_hangup()`    | ignored  | ignored |

SIGHUP while loading is ignored rather than deferred: the files it asks to re-read are being
read right now. Every ignored signal is logged. The server (app.py) and the supervisor of
`--workers N` (supervisor.py) each run one.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import signal
from typing import Callable

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
HANDLED_SIGNALS = (*STOP_SIGNALS, signal.SIGHUP)


class Phase(enum.Enum):
    LOADING = "loading"
    SERVING = "serving"
    DRAINING = "draining"
    STOPPED = "stopped"


class Lifecycle:
    """The phase of this process and what each signal does in it.

    >>> lifecycle = Lifecycle("server")                # doctest: +SKIP
    >>> lifecycle.install(asyncio.get_running_loop())  # first thing: no default actions from now on
    >>> lifecycle.serving(on_hangup=reload_models)     # once ready
    >>> await lifecycle.drain_requested.wait()         # SIGTERM/SIGINT, in any phase
    """

    def __init__(self, process: str) -> None:
        self.process = process  # "server" or "supervisor", in the log lines
        self.phase = Phase.LOADING
        self.drain_requested = asyncio.Event()
        self._on_hangup: Callable[[], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """Handle SIGTERM, SIGINT and SIGHUP on `loop` from now on."""
        self._loop = loop
        for sig in HANDLED_SIGNALS:
            loop.add_signal_handler(sig, self.handle, sig)

    def serving(self, on_hangup: Callable[[], None]) -> None:
        """Ready: SIGHUP calls `on_hangup` from now on (unless a drain already began)."""
        if self.phase is Phase.LOADING:
            self.phase = Phase.SERVING
            self._on_hangup = on_hangup

    def stopped(self) -> None:
        """Done: ignore these signals at the OS level, so nothing can kill the process while it
        exits (docs/reliability.md, "Exit.").

        SIG_IGN replaces the loop's handler directly: `remove_signal_handler` restores SIG_DFL
        for a moment, and a SIGTERM in that moment kills the process. uvloop leaves dispositions
        alone when it closes; asyncio's own loop restores SIG_DFL when it closes, a wider moment,
        so from that loop the handlers are removed now, each ignored again at once.
        """
        self.phase = Phase.STOPPED
        restoring = self._loop if isinstance(self._loop, asyncio.SelectorEventLoop) else None
        for sig in HANDLED_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
            if restoring is not None and not restoring.is_closed():
                restoring.remove_signal_handler(sig)
                signal.signal(sig, signal.SIG_IGN)

    def handle(self, sig: int) -> None:
        name = signal.Signals(sig).name
        fields = {"signal": name, "phase": self.phase.value, "process": self.process}
        if sig == signal.SIGHUP:
            if self.phase is Phase.SERVING and self._on_hangup is not None:
                self._on_hangup()
            else:
                log.warning("SIGHUP ignored: it reloads models only while serving", extra={"fields": fields})
            return
        if self.phase in (Phase.LOADING, Phase.SERVING):
            log.info(f"{name}: draining", extra={"fields": fields})
            self.phase = Phase.DRAINING
            self.drain_requested.set()
        else:
            log.warning(f"{name} ignored: already {self.phase.value}", extra={"fields": fields})
