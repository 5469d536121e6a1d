"""What the SDK's streams share, blocking or awaited: requests, failover bookkeeping, errors.

Failover needs no help from the server: a StreamSentiment stream's state is a pure function of
the text read so far, so the client keeps that text (`SentText`) and, when the stream fails with
UNAVAILABLE (a drain, a replica restart) or the server ended it as idle, opens a new one anywhere
and replays the text before the next chunk. The waits between attempts follow the channel's retry policy (`Backoff`).

>>> sent = SentText(model="", include_steps=False)
>>> sent.acknowledge("the plot is dull ")
>>> sent.acknowledge("but the acting is wonderful")
>>> [r.text for r in sent.replay()]
['the plot is dull but the acting is wonderful']
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Sequence

import grpc

from rnn_sentiment.v1 import sentiment_pb2 as pb

from .errors import SentimentError

# A replayed text goes in pieces of at most this many characters (or the longest chunk the
# server already accepted on the stream, if longer), under the server's per-chunk limit
# (--max-text-chars, 5,000 by default). Any split reads the same tokens: the server holds an
# unfinished word until the next piece completes it.
REPLAY_PIECE_CHARS = 1000
# StreamPredict: requests sent but not yet answered, per stream. The server reads at most 64
# ahead of its answers; a few more keep its reader busy while answers travel back.
MAX_IN_FLIGHT = 64
# Where the unary request's fields live in a StreamPredictRequest (StreamError field paths).
REQUEST_FIELD_PREFIX = "request."


@dataclass(frozen=True)
class Backoff:
    """When to try again after UNAVAILABLE: gRPC's retry policy (the channel's service config)."""

    max_attempts: int = 5
    initial_seconds: float = 0.1
    max_seconds: float = 2.0
    multiplier: float = 2.0

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number `retry` (0-based): random up to the backoff, as gRPC."""
        ceiling = min(self.initial_seconds * self.multiplier ** retry, self.max_seconds)
        return random.uniform(0, ceiling)

    @classmethod
    def from_channel_options(cls, options: Sequence[tuple[str, Any]]) -> "Backoff | None":
        """The retry policy in a channel's options, or None when retries are off there."""
        given = dict(options)
        if not given.get("grpc.enable_retries", 0) or "grpc.service_config" not in given:
            return None
        for method_config in json.loads(given["grpc.service_config"]).get("methodConfig", []):
            policy = method_config.get("retryPolicy")
            if policy and "UNAVAILABLE" in policy.get("retryableStatusCodes", []):
                return cls(
                    max_attempts=int(policy["maxAttempts"]),
                    initial_seconds=float(str(policy["initialBackoff"]).rstrip("s")),
                    max_seconds=float(str(policy["maxBackoff"]).rstrip("s")),
                    multiplier=float(policy["backoffMultiplier"]),
                )
        return None


def can_retry(error: grpc.RpcError, backoff: Backoff | None, retries_so_far: int, has_deadline: bool) -> bool:
    """Whether a failed stream may be reopened, within the policy's attempts: UNAVAILABLE (the
    server drained or went away), or DEADLINE_EXCEEDED on a stream without a deadline of its own,
    which only the server's idle timeout ends that way (a caller who paused, e.g. typing)."""
    code = error.code() if hasattr(error, "code") else None
    reopenable = code == grpc.StatusCode.UNAVAILABLE or (code == grpc.StatusCode.DEADLINE_EXCEEDED and not has_deadline)
    return backoff is not None and reopenable and retries_so_far + 1 < backoff.max_attempts


@dataclass
class SentText:
    """A StreamSentiment stream's text as the server has acknowledged it, chunk by chunk."""

    model: str
    include_steps: bool
    chunks: list[str] = field(default_factory=list)

    def request(self, chunk: str, first: bool) -> pb.StreamSentimentRequest:
        """The message carrying `chunk`; the first of a stream also names the model and options."""
        if first:
            return pb.StreamSentimentRequest(text=chunk, model=self.model, include_steps=self.include_steps)
        return pb.StreamSentimentRequest(text=chunk)

    def acknowledge(self, chunk: str) -> None:
        """The server answered `chunk`: a reopened stream must read it again."""
        if chunk:
            self.chunks.append(chunk)

    def replay(self) -> list[pb.StreamSentimentRequest]:
        """The messages that bring a new stream to where the old one was (the first one opens it)."""
        text = "".join(self.chunks)
        piece = max(REPLAY_PIECE_CHARS, max((len(c) for c in self.chunks), default=0))
        pieces = [text[i:i + piece] for i in range(0, len(text), piece)]
        return [self.request(p, first=i == 0) for i, p in enumerate(pieces)]


def ended_early() -> SentimentError:
    return SentimentError("UNAVAILABLE", "the stream ended before the server answered the chunk")


def predict_requests(texts: Iterable[str], model: str, batch: int) -> Iterator[pb.StreamPredictRequest]:
    """StreamPredictRequests of `batch` texts each (the last may hold fewer), ids "0", "1", ..."""
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    group: list[str] = []
    number = 0
    for text in texts:
        group.append(text)
        if len(group) == batch:
            yield pb.StreamPredictRequest(id=str(number), request=pb.PredictRequest(texts=group, model=model))
            group, number = [], number + 1
    if group:
        yield pb.StreamPredictRequest(id=str(number), request=pb.PredictRequest(texts=group, model=model))


def error_of(response: pb.StreamPredictResponse) -> SentimentError | None:
    """The SentimentError the unary Predict would have raised for this message, or None.

    Field paths lose the stream's "request." prefix, so they read as the unary call's ("texts[1]").
    """
    if response.WhichOneof("outcome") != "error":
        return None
    error = response.error
    code = next((c.name for c in grpc.StatusCode if c.value[0] == error.code), "UNKNOWN")
    return SentimentError(code, error.message, {
        v.field.removeprefix(REQUEST_FIELD_PREFIX): v.description for v in error.field_violations
    })
