"""Ceiling A: a grpc.aio server that answers Predict at once with a fixed answer, no model.

It parses the same PredictRequest and sends a PredictResponse of the same shape and size as
the real server's (one prediction per text), so the difference to our server is the model,
the batcher and our per-call work. `python -m bench.noop_server --address 127.0.0.1:PORT`.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import sys

from grpc import aio
from rnn_sentiment.server.event_loop import EVENT_LOOPS, run
from rnn_sentiment.v1 import sentiment_pb2 as pb
from rnn_sentiment.v1 import sentiment_pb2_grpc as pb_grpc

_ANSWER = pb.Prediction(label="positive", score=0.9, probabilities=[0.1, 0.9], token_count=20,
                        unknown_token_count=1, truncated=False)


class NoOpSentimentServicer(pb_grpc.SentimentServiceServicer):
    async def Predict(self, request: pb.PredictRequest, context: aio.ServicerContext) -> pb.PredictResponse:
        return pb.PredictResponse(predictions=[_ANSWER] * len(request.texts), model="sst2-gru",
                                  model_version="1.0.0")


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", default="127.0.0.1:0")
    # The same loop our server picks by default, so the ceiling is Python gRPC's cost as we run it.
    parser.add_argument("--event-loop", default="auto", choices=EVENT_LOOPS)
    parser.add_argument("--processes", type=int, default=1, help="servers sharing the port (needs a fixed port)")
    args = parser.parse_args()
    if args.processes > 1 and args.address.endswith(":0"):
        parser.error("--processes > 1 needs a fixed port: each process binds the same one")
    children = [subprocess.Popen([sys.executable, "-m", "bench.noop_server", "--address", args.address,
                                  "--event-loop", args.event_loop]) for _ in range(args.processes - 1)]
    try:
        run(serve(args.address), args.event_loop)
    finally:
        for child in children:
            child.terminate()
        for child in children:
            child.wait()


if __name__ == "__main__":
    main()
