"""make bench-peers: our server beside TorchServe 0.12 and MLServer 1.7, same model, same load generator.

    python -m bench.peers.run [--quick] [--model-dir DIR] [--torchserve-workers 1,2]
        [--torchserve-backend torch,onnx] [--mlserver-workers 1]

Each server serves the same checkpoint with the same model functions, batching on (TorchServe
batch 32 / 5 ms and MLServer adaptive batching 32 / 5 ms: the best settings measured for them
on 2 cores), and takes the same one-text requests from h2load at each concurrency. TorchServe
runs twice per worker count: on torch, as the peers usually do, and on the ONNX Runtime session
our server builds (same graph, options and length runs), so one ratio compares front ends alone.
All servers start first and take turns, so compared rows see much the same neighbours on a
shared machine.
The peers run from bench/.peers-venv (bench/peers/setup.sh installs them).
Results: bench/results/peers.{json,md} (a --quick smoke run writes under bench/results/tmp/).
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..harness import (BENCH_DIR, PREDICT, RunningServer, display_path, prepare_run,
                       load, start_our_server, wait_quiet)
from ..report import LOAD_HEADERS, fmt, load_rows, markdown_table, ratio, write_results
from ..servers import stop_servers_on_signals
from ..stream_predict import (CONCURRENCY as STREAMS, MESSAGES_PER_STREAM, STREAM_PREDICT, served_texts_per_s,
                              stream_body, stream_response_bytes)
from ..texts import ONE_TEXT
from ..wire import grpc_frame
from .mlserver import MODEL_INFER, MLServerConfig, model_infer_request, start_mlserver
from .torchserve import BACKENDS as TORCHSERVE_BACKENDS
from .torchserve import PREDICTIONS, TorchServeConfig, predictions_request, start_torchserve

VENV = BENCH_DIR / ".peers-venv"
# The default on 2 cores, and the same with the peers' executor (torch) for a like-for-like row.
DEFAULT_OURS = ("--workers 2", "--workers 2 --backend torch")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.peers.run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run (results under results/tmp/)")
    parser.add_argument("--model-dir", type=Path, default=None, help="model directory (default: the shipped models)")
    parser.add_argument("--output-dir", type=Path, default=None)
    parser.add_argument("--name", default="peers", help="file stem of the results")
    parser.add_argument("--torchserve-workers", default="1,2", help="TorchServe worker counts to run, comma-separated")
    parser.add_argument("--torchserve-backend", default=",".join(TORCHSERVE_BACKENDS), type=_backends,
                        help="TorchServe handler executors to run, comma-separated: torch (torchserve_handler.py), "
                             "onnx (the same handler on our server's ONNX Runtime session); default both")
    parser.add_argument("--mlserver-workers", default="1", help="MLServer parallel_workers to run, comma-separated")
    parser.add_argument("--skip-setup", action="store_true", help="do not run bench/peers/setup.sh first")
    parser.add_argument("--note", action="append", default=[], help="a line for the results' notes (repeatable)")
    parser.add_argument("--concurrency", default=None, help="comma-separated concurrencies (default 1,8,32,128)")
    parser.add_argument("--no-stream-predict", dest="stream_predict", action="store_false",
                        help="leave out the row of our first configuration over StreamPredict (32 streams of "
                             "one-text messages, measured with the concurrency-32 rows)")
    parser.add_argument("--ours", action="append", default=None, metavar="FLAGS",
                        help='our server configurations (repeatable; default: "--workers 2" and "--workers 2 --backend torch")')
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop_servers_on_signals()
    if not args.skip_setup:
        subprocess.run(["bash", str(BENCH_DIR / "peers" / "setup.sh")], check=True)
    run = prepare_run("bench.peers.run", args, argv)
    settings, checkpoint, work, output_dir, env, bodies = (
        run.settings, run.checkpoint, run.work, run.output_dir, run.env, run.bodies)
    one_file = run.one_text_file
    print(f"bench-peers: {env['machine']['nproc']} cores, checkpoint {checkpoint}; scratch in {work}", flush=True)

    ts_message, ml_message = predictions_request(ONE_TEXT), model_infer_request(ONE_TEXT)
    ts_file, ml_file = work / "torchserve-1-text.bin", work / "mlserver-1-text.bin"
    ts_file.write_bytes(grpc_frame(ts_message))
    ml_file.write_bytes(grpc_frame(ml_message))

    # Every server starts first (idle ones cost next to nothing) and they take turns at each
    # concurrency: rows compared in a ratio were measured minutes apart at most, under much the
    # same neighbours' load on a shared machine.
    # (label, server, request file, request, RPC path, the peer's executor: None for ours)
    servers: list[tuple[str, RunningServer, Path, bytes, str, str | None]] = []
    try:
        for flags in args.ours if args.ours is not None else DEFAULT_OURS:
            label = f"ours, {flags}" if flags else "ours, defaults"
            print("starting", label, flush=True)
            server = start_our_server(label, shlex.split(flags), args.model_dir, work, bodies)
            servers.append((label, server, one_file, bodies.one_text, PREDICT, None))
        for backend in args.torchserve_backend:
            for workers in _counts(args.torchserve_workers):
                ts_config = TorchServeConfig(workers=workers, backend=backend)
                print("starting", ts_config.label, flush=True)
                server = start_torchserve(VENV, checkpoint, work, ts_config, ts_message)
                servers.append((ts_config.label, server, ts_file, ts_message, PREDICTIONS, backend))
        for workers in _counts(args.mlserver_workers):
            ml_config = MLServerConfig(parallel_workers=workers)
            print("starting", ml_config.label, flush=True)
            server = start_mlserver(VENV, checkpoint, work, ml_config, ml_message)
            servers.append((ml_config.label, server, ml_file, ml_message, MODEL_INFER, "torch"))
        streamed = None  # (label, server, request file): our first configuration over StreamPredict
        if args.stream_predict and servers and servers[0][5] is None:
            label, server = f"{servers[0][0]}, {stream_predict_label()}", servers[0][1]
            stream_file = work / f"stream-predict-{MESSAGES_PER_STREAM}.bin"
            stream_file.write_bytes(stream_body(MESSAGES_PER_STREAM))
            server.response_bytes[b"stream"] = stream_response_bytes(server.target, MESSAGES_PER_STREAM)
            streamed = (label, server, stream_file)
        runs: list[dict] = []
        for concurrency in settings.concurrency:
            for label, server, body_file, message, path, executor in servers:
                run = load(label, server, body_file, message, 1, concurrency, settings, work, path=path)
                if executor is not None:
                    run["executor"] = executor
                runs.append(run)
                wait_quiet()
            if streamed and concurrency == STREAMS:
                label, server, stream_file = streamed
                run = load(label, server, stream_file, b"stream", MESSAGES_PER_STREAM, STREAMS, settings, work,
                           path=STREAM_PREDICT)
                # h2load counts a stream once all its messages are answered; the server's count has no edge.
                runs.append(run | {"texts_per_s": served_texts_per_s(run), "stream_predict": True})
                wait_quiet()
    finally:
        for _, server, *_ in servers:
            server.process.stop()
    order = [label for label, *_ in servers] + ([streamed[0]] if streamed else [])
    runs.sort(key=lambda r: (order.index(r["server"]), r["concurrency"]))

    document = {**env, "settings": settings.__dict__, "checkpoint": display_path(checkpoint), "runs": runs,
                "notes": args.note}
    document["ratios"] = ratios(runs)
    markdown = render(document)
    json_path, md_path = write_results(output_dir, args.name, document, markdown)
    print()
    print(markdown)
    print(f"wrote {json_path} and {md_path}")
    return 0


def _counts(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _backends(text: str) -> list[str]:
    """--torchserve-backend's value: executors in TORCHSERVE_BACKENDS, comma-separated."""
    backends = [x.strip() for x in text.split(",") if x.strip()]
    wrong = [b for b in backends if b not in TORCHSERVE_BACKENDS]
    if wrong:
        raise argparse.ArgumentTypeError(
            f"unknown backend {', '.join(wrong)}; options are {','.join(TORCHSERVE_BACKENDS)}")
    return list(dict.fromkeys(backends))


@dataclass(frozen=True)
class PeerGroup:
    """The peer rows one ratio takes the best of: rows whose label starts with `prefix`, on
    `executor` when given (a run's "executor" key)."""

    name: str
    prefix: str
    targets: dict[int, str]  # concurrency -> the target there
    executor: str | None = None

    def holds(self, run: dict) -> bool:
        return run["server"].startswith(self.prefix) and self.executor in (None, run.get("executor"))


# Against TorchServe twice: its best row on either executor (the target as the issue states it),
# and its best on ONNX Runtime, which runs what we run, so that ratio is the front ends' alone.
TORCHSERVE_TARGETS = {32: "≥ 1.5", 128: "≥ 1.25"}  # issue 17
PEER_GROUPS = (
    PeerGroup("TorchServe, either executor", "TorchServe", TORCHSERVE_TARGETS),
    PeerGroup("TorchServe on ONNX Runtime", "TorchServe", TORCHSERVE_TARGETS, executor="onnx"),
    PeerGroup("MLServer", "MLServer", {32: "≥ 3", 128: "≥ 3"}),
)


def _best(runs: list[dict], group: PeerGroup, concurrency: int) -> dict | None:
    """The group's configuration with the most req/s at this concurrency."""
    candidates = [r for r in runs if group.holds(r) and r["concurrency"] == concurrency]
    return max(candidates, key=lambda r: r["rps"], default=None)


def stream_predict_label() -> str:
    return f"StreamPredict, {STREAMS} streams × {MESSAGES_PER_STREAM} one-text messages"


def ratios(runs: list[dict]) -> list[dict]:
    out = []
    unary = [r for r in runs if not r.get("stream_predict")]
    for streamed in (r for r in runs if r.get("stream_predict")):
        for concurrency in (32, 128):
            best = _best(unary, PEER_GROUPS[0], concurrency)
            if best:
                out.append({
                    "ratio": f"{streamed['server']}: texts/s / best {PEER_GROUPS[0].name} ({best['server']}), "
                             f"req/s at concurrency {concurrency}",
                    "value": round(ratio(streamed["texts_per_s"], best["rps"]) or 0, 3),
                    "p99_ours_ms": None, "p99_peer_ms": best["p99_ms"], "target": "≥ 2",
                })
    runs = unary
    for concurrency in sorted({r["concurrency"] for r in runs}):
        for group in PEER_GROUPS:
            best, target = _best(runs, group, concurrency), group.targets.get(concurrency)
            ours_labels = dict.fromkeys(r["server"] for r in runs if r["server"].startswith("ours"))
            for ours in ours_labels:
                run = next((r for r in runs if r["server"] == ours and r["concurrency"] == concurrency), None)
                if run and best:
                    out.append({
                        "ratio": f"{ours} / best {group.name} ({best['server']}), req/s at concurrency {concurrency}",
                        "value": round(ratio(run["rps"], best["rps"]) or 0, 3),
                        "p99_ours_ms": run["p99_ms"], "p99_peer_ms": best["p99_ms"],
                        "target": f"{target}, lower p99" if target else "",
                    })
    return out


def render(document: dict) -> str:
    machine = document["machine"]
    lines = [
        "# rnn-sentiment beside TorchServe and MLServer",
        "",
        f"- date: {document['date']}",
        f"- machine: {machine['nproc']} cores, {machine['cpu_model']}, {machine['mem_total_gib']} GiB RAM, "
        f"Linux {machine['kernel']}, Python {machine['python']}, torch {document['torch']}; "
        f"load average at start {machine['loadavg_at_start']:.2f}",
        f"- command: `{document['command']}`",
        *(f"- note: {note}" for note in document.get("notes", [])),
        f"- every server serves `{document['checkpoint']}`: the peers through `encode_texts` + `predict_encoded` "
        "(torch), except TorchServe's onnx rows, which run our server's ONNX Runtime session (`make_predictor`: "
        "same graph, options and length runs); ours with its `--backend` (default auto: ONNX Runtime, in runs of "
        "up to 16 texts of similar length; `--backend torch` is the like-for-like row for the torch peers); "
        "one-text requests; the peers with their batching "
        "on (batch 32, 5 ms) and WARN logging; 1 intra-op thread per worker",
        f"- load generator: {document['load_generator']}, one connection per caller up to 32; warm-up "
        f"{document['settings']['warmup_s']:g} s, then {document['settings']['duration_s']:g} s measured per row; "
        "errors: non-200, failed streams, or a 200 without a whole gRPC message; all servers started first, "
        "taking turns at each concurrency",
        f"- the StreamPredict row: {STREAMS} streams (connections), each {MESSAGES_PER_STREAM} one-text messages "
        "answered pipelined, then a new stream; req/s counts streams, texts/s is what the server computed "
        "(h2load counts a stream only once all its messages are answered); measured beside the concurrency-32 rows",
        "",
        markdown_table(LOAD_HEADERS, load_rows(document["runs"])),
        "",
        "## Ratios",
        "",
        markdown_table(["ratio", "value", "p99 ours / peer (ms)", "target"],
                       [[r["ratio"], fmt(r["value"], 2), f"{fmt(r['p99_ours_ms'], 1)} / {fmt(r['p99_peer_ms'], 1)}",
                         r["target"]] for r in document["ratios"]]),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
