"""StreamPredict: independent Predict requests pipelined over one stream, answered in order.

Each message runs exactly the unary Predict's work (validation, the model's micro-batcher,
limits, model metrics) while the next messages are already being read, so one stream keeps
many texts in the batcher at once. At most MAX_IN_FLIGHT_PER_STREAM messages are read ahead
of the answers: beyond that the handler stops reading, and HTTP/2 flow control slows the
sender down instead of the server queueing its work without bound.

A message whose Predict would fail gets an error response (the code, message and field
violations the unary call would have ended with) and the stream carries on; so does a message
whose bytes are not a StreamPredictRequest (the tolerant deserializer of
server/instrumentation.py hands those over as UNPARSABLE).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import Any, AsyncIterator, Awaitable, Callable

import grpc

from rnn_sentiment.v1 import sentiment_pb2 as pb

from .errors import MAX_DESCRIPTION_CHARS, MAX_FIELD_CHARS, MAX_VIOLATIONS, ServiceError, truncate_chars
from .instrumentation import REFUSAL_LOG_SECONDS, UNPARSABLE, access_log, unparsable_request
from .log_throttle import ThrottledWarning

log = logging.getLogger(__name__)
# As for unary calls: a caller can send malformed bytes at will, so the warning is throttled.
_unparsable_log = ThrottledWarning(access_log, "could not parse a request (malformed protobuf)", REFUSAL_LOG_SECONDS)

# Messages read but not yet answered, per stream. 64 keeps a few full batches of one-text
# messages in the batcher (max batch size 32 by default), which is all the pipelining buys;
# more would only let one stream fill the shared model queue.
MAX_IN_FLIGHT_PER_STREAM = 64
# StreamPredictRequest.request is where the unary request's fields live on the stream.
FIELD_PREFIX = "request."

PredictOne = Callable[[pb.PredictRequest, "float | None"], Awaitable[pb.PredictResponse]]

_INTERNAL = pb.StreamError(code=grpc.StatusCode.INTERNAL.value[0],
                           message="internal error; the server logged the details")


def stream_error(error: ServiceError) -> pb.StreamError:
    """The unary call's status as a StreamError; violations bounded as errors.py bounds them."""
    return pb.StreamError(
        code=error.code.value[0],
        message=error.message,
        field_violations=[
            pb.FieldViolation(field=truncate_chars(FIELD_PREFIX + v.field, MAX_FIELD_CHARS),
                              description=truncate_chars(v.description, MAX_DESCRIPTION_CHARS))
            for v in error.violations[:MAX_VIOLATIONS]
        ],
    )


async def answer_one(message: Any, predict: PredictOne, time_remaining: float | None) -> pb.StreamPredictResponse:
    """The response to one message: what Predict returned, or why it failed."""
    if message is UNPARSABLE:
        _unparsable_log.warn(method="StreamPredict")
        return pb.StreamPredictResponse(error=stream_error(unparsable_request("StreamPredict")))
    try:
        return pb.StreamPredictResponse(id=message.id, response=await predict(message.request, time_remaining))
    except ServiceError as error:
        return pb.StreamPredictResponse(id=message.id, error=stream_error(error))
    except Exception:
        # The stack trace goes to our log, never to the caller; the stream goes on.
        log.exception("internal error", extra={"fields": {"method": "StreamPredict", "id": message.id[:64]}})
        return pb.StreamPredictResponse(id=message.id, error=_INTERNAL)


async def answer_in_order(
    requests: AsyncIterator[Any],
    predict: PredictOne,
    time_remaining: Callable[[], float | None],
    max_in_flight: int = MAX_IN_FLIGHT_PER_STREAM,
) -> AsyncIterator[pb.StreamPredictResponse]:
    """Answer every message of `requests` in order, up to `max_in_flight` of them at once."""
    # Plain deque and events rather than asyncio.Queue and Semaphore: this runs once per
    # message on the path that exists for throughput, and an event costs nothing unless waited on.
    answers: collections.deque[asyncio.Future[pb.StreamPredictResponse]] = collections.deque()
    arrived = asyncio.Event()  # the reader added an answer, or stopped
    room = asyncio.Event()  # fewer than max_in_flight messages are unanswered
    room.set()
    reading = True

    async def read() -> None:
        nonlocal reading
        try:
            async for message in requests:
                answers.append(asyncio.ensure_future(answer_one(message, predict, time_remaining())))
                arrived.set()
                if len(answers) >= max_in_flight:  # read no further until an answer is sent
                    room.clear()
                    await room.wait()
        finally:
            # After the last message, or when reading failed: the reader's exception is raised
            # below, once the answers to the messages before it are sent.
            reading = False
            arrived.set()

    reader = asyncio.ensure_future(read())
    try:
        while answers or reading:
            if not answers:
                arrived.clear()
                await arrived.wait()
                continue
            response = await answers[0]
            answers.popleft()
            room.set()
            yield response
        await reader
    finally:
        # The caller went away (or reading failed): the unanswered texts leave the batcher.
        reader.cancel()
        for unanswered in answers:
            unanswered.cancel()
