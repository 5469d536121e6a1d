"""The open StreamSentiment streams of one worker: a bounded registry, never evicting.

A stream is admitted or refused when it opens (RESOURCE_EXHAUSTED past `max_streams`); once
open it ends only by its caller (half-close or cancel), by a limit it breaks (idle too long,
too many tokens, a bad chunk) or by the drain (UNAVAILABLE, so a client reopens it elsewhere).
Nothing else ends a stream, and nothing ends one silently: every end is a status with a message.

Everything here runs on the event loop: no locks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import AsyncIterator, Iterator, TypeVar

from .errors import ServiceError, deadline_exceeded, resource_exhausted, unavailable
from .metrics import ServerMetrics

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class StreamLimits:
    """The limits on StreamSentiment streams (ServerConfig's --max-streams, --stream-idle-seconds,
    --max-stream-tokens; --max-text-chars bounds a chunk and the text held without a boundary)."""

    max_streams: int = 128
    idle_seconds: float = 60.0  # 0: never
    max_stream_tokens: int = 100_000
    max_chunk_chars: int = 5000


@dataclass(eq=False)  # identity: sessions live in a set
class StreamSession:
    """One open stream's place in the registry: what the drain or the idle timer needs to end it."""

    model: str = ""  # set by bind_model once the first message has chosen it
    nbytes: int = 0  # what its state holds (StreamState.nbytes() and held text), for the gauge
    end_reason: ServiceError | None = None  # set by the registry: the status the stream ends with
    # The idle timer is one timer handle per idle period, re-armed when it finds the stream active,
    # not an asyncio.timeout per message: that costs a timer and a context per chunk, on every
    # update of every stream.
    _task: asyncio.Task | None = field(default=None, repr=False)  # the stream's handler, which a wait runs in
    _waiting: bool = field(default=False, repr=False)  # True while next_message waits for a message
    _wait_started: float = field(default=0.0, repr=False)  # loop time the current (or last) wait began
    _idle_seconds: float = field(default=0.0, repr=False)
    _timer: asyncio.TimerHandle | None = field(default=None, repr=False)
    _interrupted: ServiceError | None = field(default=None, repr=False)  # why the wait was cancelled

    async def next_message(self, messages: AsyncIterator[T], idle_seconds: float) -> T | None:
        """The next message, None at half-close; raises the ServiceError that ends the stream
        when it has been idle for `idle_seconds` or the registry ended it meanwhile."""
        if self.end_reason is not None:
            raise self.end_reason
        loop = asyncio.get_running_loop()
        if self._task is None:
            self._task = asyncio.current_task()
        self._wait_started = loop.time()
        self._idle_seconds = idle_seconds
        if idle_seconds and self._timer is None:
            self._timer = loop.call_at(self._wait_started + idle_seconds, self._check_idle)
        self._waiting = True
        try:
            return await anext(messages)
        except StopAsyncIteration:
            return None
        except asyncio.CancelledError:
            reason = self._interrupted
            self._interrupted = None
            # Ours alone (no other cancel pending, e.g. the caller's): the stream ends with a status.
            if reason is not None and self._task is not None and self._task.uncancel() == 0:
                raise (self.end_reason or reason) from None
            raise
        finally:
            self._waiting = False

    def end(self, reason: ServiceError) -> None:
        """End this stream with `reason`: at once when it waits for a message, else before its next."""
        if self.end_reason is None:
            self.end_reason = reason
        if self._waiting:
            self._interrupt(self.end_reason)

    def close(self) -> None:
        """The stream is over: its idle timer goes."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._task = None

    def _check_idle(self) -> None:
        self._timer = None
        if not self._idle_seconds or self._task is None:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        due = self._wait_started + self._idle_seconds
        if self._waiting and now >= due:
            self._interrupt(idle_timeout(self._idle_seconds))
            return
        # Answering a message: the next wait starts later than now, so it cannot be due before now + idle.
        self._timer = loop.call_at(due if self._waiting else now + self._idle_seconds, self._check_idle)

    def _interrupt(self, reason: ServiceError) -> None:
        if self._interrupted is None and self._task is not None:
            self._interrupted = reason
            self._task.cancel()


def idle_timeout(idle_seconds: float) -> ServiceError:
    return deadline_exceeded(
        f"the stream was idle for {idle_seconds:g} s (no message); the server ends idle streams after "
        f"--stream-idle-seconds (RNN_SENTIMENT_STREAM_IDLE_SECONDS) seconds: send a message sooner or reopen the stream"
    )


class StreamRegistry:
    """At most `max_streams` open streams; the drain ends them all."""

    def __init__(self, limits: StreamLimits, metrics: ServerMetrics) -> None:
        self.limits = limits
        self._metrics = metrics
        self._open: set[StreamSession] = set()
        self._ending: asyncio.Task[None] | None = None

    @property
    def open_count(self) -> int:
        return len(self._open)

    @contextlib.contextmanager
    def session(self) -> Iterator[StreamSession]:
        """A registered session for the block's duration: RESOURCE_EXHAUSTED when all are taken.
        Leaving the block (any way: end, error, cancel) frees the slot at once."""
        if len(self._open) >= self.limits.max_streams:
            raise resource_exhausted(
                f"this server has {len(self._open)} streams open, its limit (--max-streams "
                f"{self.limits.max_streams} per worker); open streams are never evicted: retry shortly or "
                f"use another replica"
            )
        session = StreamSession()
        self._open.add(session)
        try:
            yield session
        finally:
            session.close()
            self._open.discard(session)
            if session.model:
                self.set_bytes(session, 0)
                self._metrics.streams_active.labels(session.model).dec()

    def bind_model(self, session: StreamSession, model: str) -> None:
        """The stream's model is known (its first message): it counts in that model's series."""
        session.model = model
        self._metrics.streams_active.labels(model).inc()

    def set_bytes(self, session: StreamSession, nbytes: int) -> None:
        """Record what `session` holds now, for rnn_sentiment_stream_session_bytes."""
        if nbytes != session.nbytes:
            self._metrics.stream_session_bytes.labels(session.model).inc(nbytes - session.nbytes)
            session.nbytes = nbytes

    def end_all_after(self, seconds: float) -> None:
        """Drain: after `seconds` (the grace period) end every open stream with UNAVAILABLE, which
        clients retry elsewhere (the SDK replays the text). Streams that finish before keep their
        normal end."""
        if self._ending is None:
            self._ending = asyncio.ensure_future(self._end_all_after(seconds))

    async def stop(self) -> None:
        """Cancel a pending end_all_after (the drain is over)."""
        if self._ending is not None:
            self._ending.cancel()
            await asyncio.gather(self._ending, return_exceptions=True)

    async def _end_all_after(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        if self._open:
            log.info("ending open streams: the server is draining", extra={"fields": {"streams": len(self._open)}})
        reason = unavailable(
            f"the server is shutting down and ended this stream after its {seconds:g} s grace period; "
            "reopen it on another replica and resend the text so far"
        )
        for session in list(self._open):
            session.end(reason)
