"""Ceiling A: a gRPC server that answers Predict at once with a fixed answer, no model.

It parses the same PredictRequest and sends a PredictResponse of the same shape and size as
the real server's (one prediction per text), so the difference to our server is the model,
the batcher and our per-call work. StreamSentiment answers every chunk at once the same way
(bench/stream_scale.py's ceiling). `python -m bench.noop_server --address 127.0.0.1:PORT`
runs grpc.aio (the server's front end); `--front-end sync --threads N` runs grpc.server on a
thread pool of N instead, so the two front ends compare on the same answer (bench/frontend.py).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import sys
import threading
from typing import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import grpc
from grpc import aio
from rnn_sentiment.server.event_loop import EVENT_LOOPS, run
from rnn_sentiment.v1 import sentiment_pb2 as pb
from rnn_sentiment.v1 import sentiment_pb2_grpc as pb_grpc

_ANSWER = pb.Prediction(label="positive", score=0.9, probabilities=[0.1, 0.9], token_count=20,
                        unknown_token_count=1, truncated=False)


FRONT_ENDS = ("aio", "sync")


def _answer(request: pb.PredictRequest) -> pb.PredictResponse:
    return pb.PredictResponse(predictions=[_ANSWER] * len(request.texts), model="sst2-gru", model_version="1.0.0")


def _stream_answer(final: bool = False) -> pb.StreamSentimentResponse:
    return pb.StreamSentimentResponse(prediction=_ANSWER, model="sst2-gru", model_version="1.0.0", final=final)


class NoOpSentimentServicer(pb_grpc.SentimentServiceServicer):
    async def Predict(self, request: pb.PredictRequest, context: aio.ServicerContext) -> pb.PredictResponse:
        return _answer(request)

    async def StreamSentiment(self, requests: AsyncIterator[pb.StreamSentimentRequest],
                              context: aio.ServicerContext) -> AsyncIterator[pb.StreamSentimentResponse]:
        """Every chunk answered at once, then a final answer at half-close: the shape of our server's stream."""
        async for _ in requests:
            yield _stream_answer()
        yield _stream_answer(final=True)


class SyncNoOpSentimentServicer(pb_grpc.SentimentServiceServicer):
    def Predict(self, request: pb.PredictRequest, context: grpc.ServicerContext) -> pb.PredictResponse:
        return _answer(request)


async def serve(address: str) -> None:
    server = aio.server()
    pb_grpc.add_SentimentServiceServicer_to_server(NoOpSentimentServicer(), server)
    port = server.add_insecure_port(address)
    await server.start()
    print(f"serving on port {port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(grace=1.0)


def serve_sync(address: str, threads: int) -> None:
    """grpc.server on a pool of `threads` until SIGTERM or SIGINT."""
    server = grpc.server(ThreadPoolExecutor(max_workers=threads))
    pb_grpc.add_SentimentServiceServicer_to_server(SyncNoOpSentimentServicer(), server)
    port = server.add_insecure_port(address)
    server.start()
    print(f"serving on port {port}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stop.set())
    stop.wait()
    server.stop(grace=1.0).wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", default="127.0.0.1:0")
    # The same loop our server picks by default, so the ceiling is Python gRPC's cost as we run it.
    parser.add_argument("--event-loop", default="auto", choices=EVENT_LOOPS)
    parser.add_argument("--processes", type=int, default=1, help="servers sharing the port (needs a fixed port)")
    parser.add_argument("--front-end", default="aio", choices=FRONT_ENDS,
                        help="aio: grpc.aio on --event-loop; sync: grpc.server on a pool of --threads")
    parser.add_argument("--threads", type=int, default=8, help="--front-end sync: the thread pool's size")
    args = parser.parse_args()
    if args.processes > 1 and args.address.endswith(":0"):
        parser.error("--processes > 1 needs a fixed port: each process binds the same one")
    if args.threads < 1:
        parser.error("--threads must be at least 1")
    children = [subprocess.Popen([sys.executable, "-m", "bench.noop_server", "--address", args.address,
                                  "--event-loop", args.event_loop, "--front-end", args.front_end,
                                  "--threads", str(args.threads)]) for _ in range(args.processes - 1)]
    try:
        if args.front_end == "sync":
            serve_sync(args.address, args.threads)
        else:
            run(serve(args.address), args.event_loop)
    finally:
        for child in children:
            child.terminate()
        for child in children:
            child.wait()


if __name__ == "__main__":
    main()
