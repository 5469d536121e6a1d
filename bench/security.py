"""What TLS, mutual TLS and bearer tokens add to a call, apart from the model.

    python -m bench.security                # about 30 s on 2 cores
    python -m bench.security --calls 2000 --rounds 5

A stand-in SentimentService that answers at once (no model: only the transport and the auth
check are measured) runs in a child process on loopback, once per mode, behind the server's own
TLS credentials (server/tls.py) and AuthInterceptor (server/auth.py). The SDK calls Predict one
call after another on one channel; modes are interleaved round by round so that a noisy
neighbour slows them all alike. Reported: median per-call latency per mode (the median of the
rounds' medians), and the cost of one token check against 1 and 10 configured tokens.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import tempfile
import time
import timeit
from pathlib import Path

MODES = ("plaintext", "tls", "tls+token", "mtls+token")
TOKEN = "bench-token-5c0f3e9a7d21b846"


def _serve(mode: str, pki: str, port_queue: "multiprocessing.Queue[int]", stop: "multiprocessing.Event") -> None:
    import grpc
    from grpc import aio

    from rnn_sentiment.server.auth import AuthInterceptor, TokenSet
    from rnn_sentiment.server.tls import TlsFiles, add_grpc_port
    from rnn_sentiment.v1 import sentiment_pb2 as pb
    from rnn_sentiment.v1 import sentiment_pb2_grpc as pb_grpc

    class Instant(pb_grpc.SentimentServiceServicer):
        async def Predict(self, request: pb.PredictRequest, context: grpc.aio.ServicerContext) -> pb.PredictResponse:
            return pb.PredictResponse(predictions=[pb.Prediction(label="positive", score=0.9)], model="instant")

    async def main() -> None:
        interceptors = [AuthInterceptor(TokenSet((TOKEN.encode(),)))] if "token" in mode else []
        server = aio.server(interceptors=interceptors)
        pb_grpc.add_SentimentServiceServicer_to_server(Instant(), server)
        files = None
        if mode != "plaintext":
            directory = Path(pki)
            files = TlsFiles(directory / "server.pem", directory / "server.key",
                             directory / "ca.pem" if mode.startswith("mtls") else None)
        port = add_grpc_port(server, "127.0.0.1:0", files)
        await server.start()
        port_queue.put(port)
        while not stop.is_set():
            await asyncio.sleep(0.05)
        await server.stop(0)

    asyncio.run(main())


def _client_settings(mode: str, pki: Path) -> dict:
    settings: dict = {"retry": False}
    if mode != "plaintext":
        settings["root_ca"] = pki / "ca.pem"
    if mode.startswith("mtls"):
        settings.update(client_cert=pki / "client.pem", client_key=pki / "client.key")
    if "token" in mode:
        settings["token"] = TOKEN
    return settings


def _write_pki(directory: Path) -> None:
    from tests.certificates import CertificateAuthority

    ca = CertificateAuthority.create(directory)
    ca.cert.rename(directory / "ca.pem")
    ca.cert = directory / "ca.pem"
    ca.issue(directory, "server", dns_names=("localhost",), ips=("127.0.0.1",), stem="server")
    ca.issue(directory, "client", client=True, stem="client")


def _round(mode: str, pki: Path, calls: int) -> float:
    from rnn_sentiment.client import SentimentClient

    ports: multiprocessing.Queue[int] = multiprocessing.Queue()
    stop = multiprocessing.Event()
    child = multiprocessing.Process(target=_serve, args=(mode, str(pki), ports, stop))
    child.start()
    try:
        port = ports.get(timeout=30)
        with SentimentClient(f"127.0.0.1:{port}", timeout=10, **_client_settings(mode, pki)) as client:
            for _ in range(50):  # the handshake and warm-up stay out of the figures
                client.predict("good")
            seconds = []
            for _ in range(calls):
                start = time.perf_counter()
                client.predict("good")
                seconds.append(time.perf_counter() - start)
        return statistics.median(seconds)
    finally:
        stop.set()
        child.join(10)


def _token_check_microseconds(tokens: int) -> float:
    from rnn_sentiment.server.auth import TokenSet

    token_set = TokenSet(tuple(f"token-{i:02d}-5c0f3e9a7d21b846".encode() for i in range(tokens)))
    presented = b"token-00-5c0f3e9a7d21b846"
    runs = 20_000
    return min(timeit.repeat(lambda: token_set.accepts(presented), number=runs, repeat=5)) / runs * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000, help="timed calls per mode and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        pki = Path(directory)
        _write_pki(pki)
        medians: dict[str, list[float]] = {mode: [] for mode in MODES}
        for _ in range(args.rounds):
            for mode in MODES:
                medians[mode].append(_round(mode, pki, args.calls))
    base = statistics.median(medians["plaintext"])
    print(f"| mode | median per call (µs), {args.rounds} rounds × {args.calls} calls | vs plaintext |")
    print("| --- | --- | --- |")
    for mode in MODES:
        value = statistics.median(medians[mode])
        print(f"| {mode} | {value * 1e6:.0f} | {value / base:.2f}x |")
    print()
    for tokens in (1, 10):
        print(f"token check against {tokens} token(s): {_token_check_microseconds(tokens):.2f} µs")


if __name__ == "__main__":
    main()
