"""StreamSentiment at scale: many open streams, each sending one word every --interval seconds.

For each stream count it reports every update sent and answered, the update latency (a word's
send to its answer, at the client) percentiles, and the server's RSS; a short step search finds
the largest count whose p99 stays within --p99-ms. Each stream sends the words of the bench
texts and half-closes after --words-per-stream words (its final answer counts as an update),
then reopens: every update is a real model step (the model stops reading past its token limit).

The schedule (`stream_schedule`): stream i opens at a random moment within --ramp-seconds and
its first stream is a random 1..--words-per-stream words long, so the reopens that follow are
spread over time (streams / (words per stream x interval) a second) instead of all streams
reopening together one cycle after a common start. The clients are Node processes
(bench/stream_client.js, @grpc/grpc-js) where node is installed, Python grpc.aio otherwise
(--client): both share the server's cores, and grpc-js takes less of them. --ceiling also runs the
main count against bench/noop_server.py (two processes, every message answered at once), the
front end's own floor on the same schedule.

    python -m bench.stream_scale                       # 1,000 streams for 30 s, step search, --workers 2
    python -m bench.stream_scale --streams 200 --seconds 5 --search ""    # a smoke run
    python -m bench.stream_scale --client python --ramp-seconds 0.2        # Python clients, all streams opening within 0.2 s
    python -m bench.stream_scale --search "" --no-ceiling --server-args=--pin-workers   # one server flag against the default

Results: bench/results/stream_scale.{md,json}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import grpc
from grpc import aio

from rnn_sentiment.v1 import sentiment_pb2 as pb
from rnn_sentiment.v1 import sentiment_pb2_grpc as pb_grpc

from .harness import RESULTS_DIR, command_line, new_work_dir
from .node_client import node_available, node_modules
from .procstat import machine_facts, sample_tree
from .report import markdown_table, write_results
from .servers import ServerProcess, free_port, serving_workers
from .texts import TEXTS

WORDS = [word for text in TEXTS for word in text.split()]


@dataclass
class RunResult:
    streams: int
    seconds: float
    interval_s: float
    sent: int = 0
    answered: int = 0
    errors: int = 0
    error_codes: dict[str, int] = field(default_factory=dict)
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    updates_per_s: float = 0.0
    server_rss_mb: float = 0.0
    largest_worker_rss_mb: float = 0.0
    server_cpu_cores: float = 0.0
    server_cpu_us_per_update: float = 0.0  # CPU time (all server processes) per update answered
    # The clients share the machine with the server: what they took, and how late they sent.
    client_cpu_cores: float = 0.0  # CPU time of the client processes (all their threads) per second
    offered_updates_per_s: float = 0.0  # what the schedule asks: streams / interval (+ each stream's final)
    send_lag_p99_ms: float = 0.0  # a word's send after its tick: a late client or an unanswered previous word
    # Steady state: the updates sent once every stream had its first answer (plus one interval)
    # and before the last interval of the run, so neither the opening burst (every stream's first
    # message within one interval of its client process's start) nor the closing one is in it.
    steady_updates: int = 0
    steady_seconds: float = 0.0
    steady_p50_ms: float = 0.0
    steady_p99_ms: float = 0.0


@dataclass
class Timings:
    """One client process's updates: each one's latency and wall-clock send time, and when each
    stream had its first answer."""

    latencies: list[float] = field(default_factory=list)
    sent_at: list[float] = field(default_factory=list)  # time.time(): comparable across processes
    lags: list[float] = field(default_factory=list)
    first_answers: list[float] = field(default_factory=list)

    def answered(self, sent_wall: float, latency: float) -> None:
        self.sent_at.append(sent_wall)
        self.latencies.append(latency)


@dataclass(frozen=True)
class StreamPlan:
    """One stream's part of the schedule, the same for both clients."""

    position: int  # its first word's index in WORDS
    delay_s: float  # when it opens, after its client process starts
    first_words: int  # the length of its first stream; later ones have --words-per-stream


def stream_schedule(first: int, streams: int, ramp_seconds: float, interval: float,
                    words_per_stream: int) -> list[StreamPlan]:
    """Streams first..first+streams-1: each opens within max(ramp, interval) seconds and its first
    stream has 1..words_per_stream words, both drawn from a generator seeded by its index."""
    ramp = max(ramp_seconds, interval)
    plans = []
    for index in range(first, first + streams):
        rng = random.Random(index)
        plans.append(StreamPlan(position=rng.randrange(len(WORDS)), delay_s=rng.random() * ramp,
                                first_words=1 + rng.randrange(words_per_stream)))
    return plans


async def _one_stream(stub: pb_grpc.SentimentServiceStub, plan: StreamPlan, interval: float, stop_at: float,
                      words_per_stream: int, timings: Timings, result: RunResult) -> None:
    position = plan.position
    await asyncio.sleep(plan.delay_s)
    first_answer_pending = True
    next_tick = time.monotonic()  # when the next word is due: one every interval from the first
    words = plan.first_words
    while time.monotonic() < stop_at:
        call = stub.StreamSentiment()
        try:
            for _ in range(words):
                if next_tick > time.monotonic():
                    await asyncio.sleep(next_tick - time.monotonic())
                # A word waits for the previous one's answer (one stream reads in order); when that
                # or this loop runs late, the word goes out late and the lag shows how late.
                timings.lags.append(time.monotonic() - next_tick)
                next_tick += interval
                sent, sent_wall = time.perf_counter(), time.time()
                result.sent += 1
                await call.write(pb.StreamSentimentRequest(text=WORDS[position % len(WORDS)] + " "))
                await call.read()
                timings.answered(sent_wall, time.perf_counter() - sent)
                if first_answer_pending:
                    timings.first_answers.append(time.time())
                    first_answer_pending = False
                result.answered += 1
                position += 1
                if time.monotonic() >= stop_at:
                    break
            sent, sent_wall = time.perf_counter(), time.time()
            result.sent += 1
            await call.done_writing()
            final = await call.read()
            if final is not aio.EOF and final.final:
                timings.answered(sent_wall, time.perf_counter() - sent)
                result.answered += 1
            code = await call.code()
            if code != grpc.StatusCode.OK:
                _count_failure(result, code)
            words = words_per_stream
        except grpc.RpcError as error:
            _count_failure(result, error.code())
            await asyncio.sleep(interval)


def _count_failure(result: RunResult, code: grpc.StatusCode | None) -> None:
    name = code.name if code is not None else "UNKNOWN"
    result.errors += 1
    result.error_codes[name] = result.error_codes.get(name, 0) + 1


@dataclass
class ClientShare:
    """What one client process did: its counts and every update's latency."""

    sent: int = 0
    answered: int = 0
    errors: int = 0
    error_codes: dict[str, int] = field(default_factory=dict)
    timings: Timings = field(default_factory=Timings)
    stop_at: float = 0.0  # time.time() when its streams stop sending
    cpu_seconds: float = 0.0  # the client process's CPU time over its streams


async def _client_share(target: str, plans: list[StreamPlan], seconds: float, interval: float, channels: int,
                        words_per_stream: int) -> ClientShare:
    share = RunResult(len(plans), seconds, interval)
    timings = Timings()
    cpu = time.process_time()
    # Several connections: the kernel spreads connections (not streams) over the workers. Channels
    # to one target share one connection through gRPC's global subchannel pool: each needs its own
    # pool, or a client process opens one connection and its streams all land on one worker.
    opened = [aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)]) for _ in range(channels)]
    try:
        stubs = [pb_grpc.SentimentServiceStub(c) for c in opened]
        stop_at, stop_at_wall = time.monotonic() + seconds, time.time() + seconds
        await asyncio.gather(*(_one_stream(stubs[i % channels], plan, interval, stop_at, words_per_stream,
                                           timings, share) for i, plan in enumerate(plans)))
    finally:
        await asyncio.gather(*(c.close() for c in opened))
    return ClientShare(share.sent, share.answered, share.errors, share.error_codes, timings, stop_at_wall,
                       time.process_time() - cpu)


def _run_client_share(arguments: tuple) -> ClientShare:
    _install_uvloop()
    return asyncio.run(_client_share(*arguments))


NODE_CLIENT = Path(__file__).with_name("stream_client.js")
PROTO_ROOT = Path(__file__).resolve().parent.parent / "proto"
CLIENTS = ("node", "python")


def _node_shares(arguments: list[tuple]) -> list[ClientShare]:
    """The client shares run by bench/stream_client.js, one Node process each, all at once."""
    modules = node_modules()
    work = Path(tempfile.mkdtemp(prefix="stream-client-"))
    processes = []
    try:
        for i, (target, plans, seconds, interval, channels, words_per_stream) in enumerate(arguments):
            config = work / f"client-{i}.json"
            config.write_text(json.dumps({
                "target": target, "plans": [asdict(plan) for plan in plans], "seconds": seconds,
                "interval": interval, "channels": channels, "words_per_stream": words_per_stream, "words": WORDS,
                "proto_root": str(PROTO_ROOT)}))
            processes.append(subprocess.Popen(
                ["node", str(NODE_CLIENT), str(config)], stdout=subprocess.PIPE,
                env={**os.environ, "NODE_PATH": str(modules)}))
        shares = []
        for process in processes:
            out, _ = process.communicate(timeout=seconds + 120)
            if process.returncode != 0:
                raise RuntimeError(f"the Node stream client exited {process.returncode}")
            data = json.loads(out)
            timings = Timings(latencies=data["latencies"], sent_at=data["sent_at"], lags=data["lags"],
                              first_answers=data["first_answers"])
            shares.append(ClientShare(data["sent"], data["answered"], data["errors"], data["error_codes"], timings,
                                      data["stop_at"], data["cpu_seconds"]))
        return shares
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
        shutil.rmtree(work, ignore_errors=True)


def run_streams(target: str, streams: int, seconds: float, interval: float, channels: int,
                words_per_stream: int, server_pid: int, client_processes: int, client: str = "python",
                ramp_seconds: float = 0.0) -> RunResult:
    """`streams` streams for `seconds`, spread over `client_processes` client processes."""
    result = RunResult(streams, seconds, interval)
    sizes = [streams // client_processes + (i < streams % client_processes) for i in range(client_processes)]
    firsts = [sum(sizes[:i]) for i in range(client_processes)]
    per_process_channels = max(1, channels // client_processes)
    arguments = [(target, stream_schedule(first, size, ramp_seconds, interval, words_per_stream), seconds, interval,
                  per_process_channels, words_per_stream)
                 for first, size in zip(firsts, sizes) if size]
    cpu_before = sample_tree(server_pid).cpu_seconds
    started = time.monotonic()
    if client == "node":
        shares = _node_shares(arguments)
    else:
        with multiprocessing.get_context("spawn").Pool(len(arguments)) as pool:
            shares = pool.map(_run_client_share, arguments)
    elapsed = time.monotonic() - started
    tree = sample_tree(server_pid)
    latencies: list[float] = []
    lags: list[float] = []
    client_cpu = 0.0
    for share in shares:
        lags += share.timings.lags
        client_cpu += share.cpu_seconds
        result.sent += share.sent
        result.answered += share.answered
        result.errors += share.errors
        for code, count in share.error_codes.items():
            result.error_codes[code] = result.error_codes.get(code, 0) + count
        latencies += share.timings.latencies
    _steady_state(result, shares, interval)
    result.updates_per_s = round(result.answered / seconds, 1)
    result.server_cpu_cores = round((tree.cpu_seconds - cpu_before) / elapsed, 2)
    result.server_cpu_us_per_update = round((tree.cpu_seconds - cpu_before) / max(1, result.answered) * 1e6, 1)
    result.client_cpu_cores = round(client_cpu / elapsed, 2)
    result.offered_updates_per_s = round(streams / interval * (1 + 1 / words_per_stream), 1)
    if lags:
        result.send_lag_p99_ms = round(sorted(lags)[min(len(lags) - 1, int(len(lags) * 0.99))] * 1000, 2)
    result.server_rss_mb = round(tree.rss_bytes / 2**20, 1)
    result.largest_worker_rss_mb = round(tree.max_rss_bytes / 2**20, 1)
    if latencies:
        ordered = sorted(latencies)
        result.p50_ms = _percentile_ms(ordered, 0.5)
        result.p99_ms = _percentile_ms(ordered, 0.99)
        result.max_ms = round(ordered[-1] * 1000, 2)
    return result


def _percentile_ms(ordered: list[float], fraction: float) -> float:
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] * 1000, 2)


def _steady_state(result: RunResult, shares: list[ClientShare], interval: float) -> None:
    """The updates sent from one interval after the last stream's first answer (in any client
    process) to one interval before the first process stopped sending."""
    first_answers = [t for share in shares for t in share.timings.first_answers]
    if not first_answers:
        return
    start = max(first_answers) + interval
    end = min(share.stop_at for share in shares) - interval
    steady = sorted(latency for share in shares
                    for sent, latency in zip(share.timings.sent_at, share.timings.latencies) if start <= sent < end)
    result.steady_seconds = round(max(0.0, end - start), 1)
    result.steady_updates = len(steady)
    if steady:
        result.steady_p50_ms = _percentile_ms(steady, 0.5)
        result.steady_p99_ms = _percentile_ms(steady, 0.99)


def _install_uvloop() -> None:
    try:
        import uvloop  # the client's loop is part of what is measured: the faster one
    except ImportError:
        return
    uvloop.install()


def server_command(port: int, workers: int, max_streams: int, server_args: Sequence[str] = ()) -> list[str]:
    """The server under test: room for every stream, then --server-args, which may override any of it."""
    return [sys.executable, "-m", "rnn_sentiment.cli", "serve", "--address", f"127.0.0.1:{port}",
            "--metrics-address", "", "--log-format", "json", "--workers", str(workers),
            "--max-streams", str(max_streams), "--max-concurrent-rpcs", str(max_streams + 64), *server_args]


def start_server(workers: int, max_streams: int, work_dir: Path,
                 server_args: Sequence[str] = ()) -> tuple[ServerProcess, str]:
    port = free_port()
    log_path = work_dir / "stream-scale.server.log"
    command = server_command(port, workers, max_streams, server_args)
    server = ServerProcess("rnn-sentiment (streams)", command, log_path)
    deadline = time.monotonic() + 180
    while serving_workers(log_path) < workers:
        if not server.alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the server did not start:\n{server.log_tail()}")
        time.sleep(0.2)
    return server, f"127.0.0.1:{port}"


def markdown(document: dict) -> str:
    runs = [("server", r) for r in document["runs"]]
    if document.get("ceiling"):
        runs.append(("no-op ceiling", document["ceiling"]))
    rows = [[kind, r["streams"], r["seconds"], r["sent"], r["answered"], r["errors"], r["updates_per_s"], r["p50_ms"],
             r["p99_ms"], r["max_ms"], r["server_cpu_cores"], r["server_cpu_us_per_update"], r["server_rss_mb"],
             r["largest_worker_rss_mb"], r.get("client_cpu_cores", ""), r.get("offered_updates_per_s", ""),
             r.get("send_lag_p99_ms", ""), r.get("steady_seconds", ""), r.get("steady_updates", ""),
             r.get("steady_p50_ms", ""), r.get("steady_p99_ms", "")]
            for kind, r in runs]
    table = markdown_table(["answered by", "streams", "seconds", "updates sent", "answered", "failed streams",
                            "updates/s", "p50 ms", "p99 ms", "max ms", "server CPU cores", "server CPU µs/update",
                            "server RSS MB", "largest process RSS MB", "client CPU cores", "offered updates/s",
                            "send lag p99 ms", "steady s", "steady updates", "steady p50 ms", "steady p99 ms"], rows)
    largest = document["largest_within_p99"]
    steady = document.get("largest_within_p99_steady")
    client = document.get("client", "python")
    client_kind = "Node (@grpc/grpc-js)" if client == "node" else "Python grpc.aio"
    ramp = document.get("ramp_seconds", document["interval_s"])
    return (f"# StreamSentiment at scale\n\n`{document['command']}`\n\n"
            f"Each stream sends one word every {document['interval_s']} s to `--workers {document['workers']}"
            f"{(' ' + document['server_args']) if document.get('server_args') else ''}` "
            f"(the shipped GRU), over {document['channels']} connections from {document['client_processes']} "
            f"{client_kind} client process(es) on the same machine ({document['machine'].get('nproc', '?')} CPUs, "
            f"load average {document['machine'].get('loadavg_at_start', 0):.1f} at the start). The streams open at "
            f"random moments within {ramp:g} s; each one's first stream has a random 1 to "
            f"{document.get('words_per_stream', 100)} words, later ones all of them, so streams close and reopen "
            f"spread over time. Latency: a word's send to its answer, at the client; a stream sends its next "
            f"word only after the answer, so a slow answer delays the next send: send lag is how late a word "
            f"went out after its tick, and updates/s below the offered rate is the shortfall. The clients' own "
            f"CPU is on the same cores. Server RSS: every process of the server (supervisor and workers), at the "
            f"end of the run; before any stream: {document['idle_rss_mb']} MB. Steady: only the updates sent from "
            f"one interval after every stream's first answer to one interval before the end, so without the "
            f"opening and the closing ones. The no-op ceiling (bench/noop_server.py, one process per worker, "
            f"every message answered at once with a fixed prediction) is the gRPC front end's own floor on the "
            f"same schedule.\n\n"
            f"{table}\n\nLargest stream count with p99 ≤ {document['p99_target_ms']} ms: "
            f"**{largest if largest is not None else 'none of those tried'}** over the whole run, "
            f"**{steady if steady is not None else 'none of those tried'}** in the steady state.\n")


def _report(label: str, result: RunResult) -> None:
    print(f"  {label} {result.streams:>5} streams {result.seconds:>4.0f} s: {result.answered}/{result.sent} answered, "
          f"{result.errors} failed streams, p50 {result.p50_ms} ms, p99 {result.p99_ms} ms, "
          f"{result.updates_per_s:,.0f}/{result.offered_updates_per_s:,.0f} updates/s, send lag p99 "
          f"{result.send_lag_p99_ms} ms, server {result.server_cpu_cores} cores "
          f"({result.server_cpu_us_per_update} µs/update), clients {result.client_cpu_cores} cores, "
          f"RSS {result.server_rss_mb} MB; steady {result.steady_seconds} s: p50 {result.steady_p50_ms} ms, "
          f"p99 {result.steady_p99_ms} ms", flush=True)


def run_all(args: argparse.Namespace, argv: list[str]) -> dict:
    work_dir = new_work_dir()
    machine = machine_facts()  # its load average: before this benchmark adds its own
    counts = sorted({int(c) for c in args.search.split(",") if c.strip()} | {args.streams})
    processes = args.client_processes or (1 if args.client == "node" else 2)

    def run(target: str, count: int, seconds: float, pid: int) -> RunResult:
        return run_streams(target, count, seconds, args.interval, args.channels, args.words_per_stream, pid,
                           processes, args.client, args.ramp_seconds)

    def warm_up(target: str, pid: int) -> None:
        # Each worker builds a model's stream executor on its first stream: not part of the measure.
        run_streams(target, args.channels, 2.0, args.interval, args.channels, args.words_per_stream, pid,
                    processes, args.client)

    server, target = start_server(args.workers, max(counts), work_dir, shlex.split(args.server_args))
    runs: list[RunResult] = []
    idle_rss_mb = round(sample_tree(server.pid).rss_bytes / 2**20, 1)
    try:
        warm_up(target, server.pid)
        for count in counts:
            result = run(target, count, args.seconds if count == args.streams else args.search_seconds, server.pid)
            _report("server ", result)
            runs.append(result)
            time.sleep(1.0)  # streams from one run end before the next opens its own
    finally:
        server.stop()
    ceiling = None
    if args.ceiling:
        noop, noop_target = start_noop_stream_server(args.workers, work_dir)
        try:
            warm_up(noop_target, noop.pid)
            ceiling = run(noop_target, args.streams, args.seconds, noop.pid)
            _report("ceiling", ceiling)
        finally:
            noop.stop()
    complete = [r for r in runs if r.errors == 0 and r.answered == r.sent]
    within = [r.streams for r in complete if r.p99_ms <= args.p99_ms]
    within_steady = [r.streams for r in complete if r.steady_updates and r.steady_p99_ms <= args.p99_ms]
    return {"command": command_line(argv), "workers": args.workers, "server_args": args.server_args,
            "interval_s": args.interval,
            "channels": args.channels, "client": args.client, "client_processes": processes,
            "ramp_seconds": max(args.ramp_seconds, args.interval), "words_per_stream": args.words_per_stream,
            "p99_target_ms": args.p99_ms, "idle_rss_mb": idle_rss_mb, "machine": machine,
            "largest_within_p99": max(within) if within else None,
            "largest_within_p99_steady": max(within_steady) if within_steady else None,
            "runs": [asdict(r) for r in runs], "ceiling": asdict(ceiling) if ceiling is not None else None}


def start_noop_stream_server(processes: int, work_dir: Path) -> tuple[ServerProcess, str]:
    """bench/noop_server.py, `processes` of them sharing a port: every stream message answered at once."""
    port = free_port()
    log_path = work_dir / "stream-scale.noop.log"
    server = ServerProcess("no-op streams", [sys.executable, "-m", "bench.noop_server", "--address",
                                             f"127.0.0.1:{port}", "--processes", str(processes)],
                           log_path, cwd=Path(__file__).resolve().parent.parent)
    deadline = time.monotonic() + 60
    while log_path.read_text(errors="replace").count("serving on port") < processes:
        if not server.alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the no-op server did not start:\n{server.log_tail()}")
        time.sleep(0.1)
    return server, f"127.0.0.1:{port}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=1000, help="the main run's open streams")
    parser.add_argument("--seconds", type=float, default=30.0, help="the main run's length")
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between one stream's words")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--server-args", default="",
                        help="more flags for the server (not the ceiling), e.g. --server-args=--pin-workers")
    parser.add_argument("--channels", type=int, default=32, help="client connections the streams share")
    parser.add_argument("--client", choices=CLIENTS, default="node" if node_available() else "python",
                        help="the client processes: Node (@grpc/grpc-js, the default where node is installed) "
                             "or Python grpc.aio")
    parser.add_argument("--client-processes", type=int, default=0,
                        help="client processes the streams are spread over (default: 1 Node, 2 Python)")
    parser.add_argument("--ramp-seconds", type=float, default=2.0,
                        help="the streams open at random moments within this (at least --interval)")
    parser.add_argument("--ceiling", action=argparse.BooleanOptionalAction, default=True,
                        help="also run the main count against the no-op server")
    parser.add_argument("--words-per-stream", type=int, default=100)
    parser.add_argument("--search", default="250,500,750", help="other stream counts, comma-separated")
    parser.add_argument("--search-seconds", type=float, default=10.0)
    parser.add_argument("--p99-ms", type=float, default=50.0)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="directory for stream_scale.{md,json}")
    args = parser.parse_args(argv)
    document = run_all(args, ["python", "-m", "bench.stream_scale", *argv])
    json_path, md_path = write_results(args.out, "stream_scale", document, markdown(document))
    print(f"wrote {md_path} and {json_path}")
    print(json.dumps({key: document[key] for key in ("largest_within_p99", "largest_within_p99_steady")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
