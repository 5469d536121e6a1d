"""make bench-frontend: gRPC front ends compared in interleaved rounds, on ceiling A and on our server.

    python -m bench.frontend [--stacks 1.75.1,1.85.4] [--rounds 3] [--seconds 8] [--concurrency 1,32,128]
                             [--variants KIND:FRONT_END,...] [--sync-threads auto|N]

A variant is a kind (`ceiling`: bench/noop_server.py pinned to core 0, h2load pinned to core 1;
`full`: `rnn-sentiment serve --workers 2` with the shipped model and its defaults), a front end
(`aio-uvloop`, `aio-asyncio`, or `sync`: grpc.server on a thread pool; for `full` that is
bench/sync_server.py) and a grpc stack (bench/grpc_stacks.py: each stack's grpcio first on the
server's PYTHONPATH, the same stubs for all). Each round starts every variant in turn, variants
that differ only by stack side by side, and loads it with one-text Predicts at each concurrency;
so a neighbour's load lands on all alike, and each variant gets a median and a min-max over the
rounds. Ratios are to the baseline stack's aio-uvloop row of the same kind and concurrency: the
ratio of the medians, and the min-max of the ratios within each round.
The sync pool is sized by measurement first: `--sync-threads auto` tries 2/4/8/16 once per stack
on the sync no-op server at the highest concurrency and keeps the most req/s.
Results: bench/results/frontend.{json,md}.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from . import grpc_stacks
from .harness import BENCH_DIR, PREDICT, Bodies, RunningServer, Settings, display_path, load, prepare_run, wait_quiet
from .report import LOAD_HEADERS, fmt, load_rows, markdown_table, write_results
from .servers import ServerProcess, free_port, serving_workers, stop_servers_on_signals, wait_until_answering

KINDS = ("ceiling", "full")
FRONT_ENDS = ("aio-uvloop", "aio-asyncio", "sync")
SYNC_SERVER = BENCH_DIR / "sync_server.py"  # helper A2's whole-server sync front end, when present
SERVER_CORE, LOADGEN_CORE = 0, 1  # ceiling A: one core each, so req/s is per core of the server
SIZING_THREADS = (2, 4, 8, 16)
FULL_WORKERS = 2
BASELINE_FRONT_END = "aio-uvloop"


@dataclass(frozen=True)
class Variant:
    kind: str  # ceiling | full
    front_end: str  # aio-uvloop | aio-asyncio | sync
    stack: str  # grpcio version

    @property
    def name(self) -> str:
        return f"{self.kind} {self.front_end} grpcio {self.stack}"


def default_variant_specs(sync_server_present: bool) -> list[str]:
    specs = [f"ceiling:{f}" for f in FRONT_ENDS] + ["full:aio-uvloop", "full:aio-asyncio"]
    return specs + ["full:sync"] if sync_server_present else specs


def parse_variants(text: str | None, stacks: Sequence[str], sync_server_present: bool) -> list[Variant]:
    """KIND:FRONT_END specs (`*` for all front ends), each for every stack; ordered so stacks alternate.

    None means the defaults: every ceiling variant, and every full one whose server exists.
    """
    specs = default_variant_specs(sync_server_present) if text is None else [s.strip() for s in text.split(",") if s.strip()]
    chosen: set[tuple[str, str]] = set()
    for spec in specs:
        kind, _, front_end = spec.partition(":")
        if kind not in KINDS or (front_end != "*" and front_end not in FRONT_ENDS):
            raise ValueError(f"bad variant {spec!r}: write KIND:FRONT_END with KIND in {list(KINDS)} "
                             f"and FRONT_END in {list(FRONT_ENDS)} or *, e.g. ceiling:sync,full:aio-uvloop")
        chosen.update((kind, f) for f in (FRONT_ENDS if front_end == "*" else (front_end,)))
    if not stacks:
        raise ValueError("no stacks: give --stacks VERSION,VERSION")
    return [Variant(kind, front_end, stack) for kind in KINDS for front_end in FRONT_ENDS
            if (kind, front_end) in chosen for stack in stacks]


@dataclass(frozen=True)
class Spread:
    median: float
    low: float
    high: float


def spread(values: Sequence[float]) -> Spread | None:
    return Spread(statistics.median(values), min(values), max(values)) if values else None


def per_round_ratios(values: Sequence[float], baseline: Sequence[float]) -> list[float]:
    """Round k's value over round k's baseline (the pairs interleaving makes comparable)."""
    return [v / b for v, b in zip(values, baseline) if b]


def summarize(runs: Sequence[dict], baseline_stack: str) -> list[dict]:
    """Per variant and concurrency: medians and spreads over rounds, and ratios to the baseline row."""
    groups: dict[tuple[str, int], list[dict]] = {}
    for run in runs:
        groups.setdefault((run["variant"], run["concurrency"]), []).append(run)
    rows = []
    for (name, concurrency), group in groups.items():
        group = sorted(group, key=lambda r: r["round"])
        first = group[0]
        baseline_name = Variant(first["kind"], BASELINE_FRONT_END, baseline_stack).name
        base = sorted(groups.get((baseline_name, concurrency), []), key=lambda r: r["round"])
        rps = [r["rps"] for r in group]
        base_rps = {r["round"]: r["rps"] for r in base}
        paired = per_round_ratios([r["rps"] for r in group if r["round"] in base_rps],
                                  [base_rps[r["round"]] for r in group if r["round"] in base_rps])
        rps_spread, base_spread = spread(rps), spread([r["rps"] for r in base])
        rows.append({
            "variant": name, "kind": first["kind"], "front_end": first["front_end"], "stack": first["stack"],
            "concurrency": concurrency, "rounds": len(group),
            "rps": dataclasses.asdict(rps_spread),
            "p50_ms": statistics.median(r["p50_ms"] for r in group),
            "p99_ms": statistics.median(r["p99_ms"] for r in group),
            "errors": sum(r["errors"] for r in group),
            "server_cpu_cores": statistics.median(r["server_cpu_cores"] for r in group),
            "baseline": baseline_name if base else None,
            "ratio_of_medians": round(rps_spread.median / base_spread.median, 3) if base_spread and base_spread.median else None,
            "round_ratios": [round(r, 3) for r in paired],
        })
    return rows


@contextmanager
def loadgen_pinned(cores: set[int] | None) -> Iterator[None]:
    """Run the block (and the h2load it starts, which inherits it) on `cores` only."""
    if cores is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cores)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


@dataclass
class StackContext:
    """What every server of the bake-off shares: the stacks, the stubs, the tree, the request."""

    stacks: dict[str, grpc_stacks.GrpcStack]
    stubs: Path
    tree: Path
    work: Path
    bodies: Bodies


def start_variant(variant: Variant, ctx: StackContext, threads: int, label: str) -> tuple[RunningServer, list[dict]]:
    """The variant's server on a free loopback port, once it answers and runs the intended stack."""
    port, metrics_port = free_port(), 0
    address = f"127.0.0.1:{port}"
    loop = variant.front_end.removeprefix("aio-")
    if variant.kind == "ceiling":
        front = ["--front-end", "sync", "--threads", str(threads)] if variant.front_end == "sync" else ["--event-loop", loop]
        command = ["taskset", "-c", str(SERVER_CORE), sys.executable, "-m", "bench.noop_server", "--address", address, *front]
    elif variant.front_end == "sync":
        command = [sys.executable, "-m", "bench.sync_server", "--address", address, "--threads", str(threads),
                   "--workers", str(FULL_WORKERS)]
    else:
        metrics_port = free_port()
        command = [sys.executable, "-m", "rnn_sentiment.cli", "serve", "--workers", str(FULL_WORKERS),
                   "--address", address, "--metrics-address", f"127.0.0.1:{metrics_port}", "--log-format", "json",
                   "--event-loop", loop]
    log_path = ctx.work / f"{label.replace(' ', '_')}.server.log"
    stack = ctx.stacks[variant.stack]
    process = ServerProcess(label, command, log_path, env=grpc_stacks.stack_environment(stack, ctx.tree),
                            cwd=BENCH_DIR.parent)

    def ready() -> bool:
        if metrics_port:  # our server logs JSON, one "serving" per worker
            return serving_workers(log_path) >= FULL_WORKERS
        return "serving on port" in process.log_tail(100_000)

    try:
        size = wait_until_answering(process, address, PREDICT, ctx.bodies.one_text, timeout_s=300, ready=ready)
        reports = grpc_stacks.probe_reports(process.log_tail(1_000_000))
        grpc_stacks.check_probes(reports, stack, ctx.stubs)
    except BaseException:
        process.stop()
        raise
    server = RunningServer(process, port, metrics_port, FULL_WORKERS if variant.kind == "full" else 1,
                           {ctx.bodies.one_text: size})
    return server, [dataclasses.asdict(r) for r in reports]


def measure(variant: Variant, ctx: StackContext, threads: int, settings: Settings, concurrencies: Sequence[int],
            label: str) -> tuple[list[dict], list[dict]]:
    """One start of the variant's server, one h2load run per concurrency; the runs and the probe reports."""
    server, reports = start_variant(variant, ctx, threads, label)
    one_file = ctx.work / "predict-1-text.bin"
    runs = []
    try:
        pinned = {LOADGEN_CORE} if variant.kind == "ceiling" else None
        for concurrency in concurrencies:
            with loadgen_pinned(pinned):
                run = load(label, server, one_file, ctx.bodies.one_text, 1, concurrency, settings, ctx.work)
            runs.append(run)
            wait_quiet()
    finally:
        server.process.stop()
    return runs, reports


def size_sync_pool(stack: str, ctx: StackContext, settings: Settings, concurrency: int) -> tuple[int, list[dict]]:
    """Each of SIZING_THREADS once on the sync no-op server: the pool size with the most req/s, and all runs."""
    runs = []
    for threads in SIZING_THREADS:
        variant = Variant("ceiling", "sync", stack)
        [run], _ = measure(variant, ctx, threads, settings, [concurrency], f"sizing {variant.name} threads {threads}")
        runs.append({**run, "threads": threads, "stack": stack})
    best = max(runs, key=lambda r: r["rps"])
    print(f"sync pool for grpcio {stack}: {best['threads']} threads", flush=True)
    return best["threads"], runs


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    constraints_pin = grpc_stacks.pinned_version(grpc_stacks.CONSTRAINTS.read_text(), "grpcio")
    parser = argparse.ArgumentParser(prog="python -m bench.frontend", description=__doc__.splitlines()[0])
    parser.add_argument("--stacks", default=None,
                        help="grpcio versions, comma-separated (default: constraints.txt's and the newest release)")
    parser.add_argument("--baseline", default=constraints_pin, help="the stack ratios divide by (default: constraints.txt's)")
    parser.add_argument("--variants", default=None,
                        help="KIND:FRONT_END,... (KIND ceiling|full, FRONT_END aio-uvloop|aio-asyncio|sync|*); "
                             "default: every ceiling variant, full aio-uvloop and aio-asyncio, and full sync when "
                             "bench/sync_server.py exists")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8, help="measured seconds per run (after a 2 s warm-up)")
    parser.add_argument("--concurrency", default="1,32,128")
    parser.add_argument("--sync-threads", default="auto", help="auto (size by measurement) or the pool size")
    parser.add_argument("--output-dir", type=Path, default=None, help="default bench/results/")
    parser.add_argument("--name", default="frontend", help="file stem of the results")
    parser.add_argument("--note", action="append", default=[], help="a line for the results' notes (repeatable)")
    args = parser.parse_args(argv)
    args.quick, args.model_dir = False, None  # what harness.prepare_run reads
    if args.stacks is None:  # the pin against whatever a fresh unpinned install would take today
        args.stacks = ",".join(dict.fromkeys([constraints_pin, grpc_stacks.newest_release("grpcio")]))
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop_servers_on_signals()
    stacks = [s.strip() for s in args.stacks.split(",") if s.strip()]
    variants = parse_variants(args.variants, stacks, SYNC_SERVER.is_file())
    baseline = args.baseline if args.baseline in stacks else stacks[-1]
    if any(v.kind == "ceiling" for v in variants) and (os.cpu_count() or 1) < 2:
        raise SystemExit("ceiling variants pin the server and h2load to a core each: this needs 2 cores")
    run = prepare_run("bench.frontend", args, argv)
    settings = dataclasses.replace(run.settings, duration_s=args.seconds)
    env, work = run.env, run.work
    ctx = StackContext({s: grpc_stacks.ensure_stack(s) for s in stacks}, stubs := grpc_stacks.ensure_stubs(),
                       grpc_stacks.package_tree(stubs), work, run.bodies)
    print(f"bench-frontend: {len(variants)} variants x {args.rounds} rounds, concurrency {settings.concurrency}; "
          f"scratch in {work}", flush=True)

    threads: dict[str, int] = {}
    sizing: list[dict] = []
    for stack in stacks:
        if any(v.front_end == "sync" and v.stack == stack for v in variants):
            if args.sync_threads == "auto":
                threads[stack], stack_runs = size_sync_pool(stack, ctx, settings, max(settings.concurrency))
                sizing += stack_runs
            else:
                threads[stack] = int(args.sync_threads)

    runs: list[dict] = []
    probes: dict[str, list[dict]] = {}
    for round_number in range(1, args.rounds + 1):
        print(f"round {round_number} of {args.rounds}", flush=True)
        for variant in variants:
            pool = threads.get(variant.stack, 0) if variant.front_end == "sync" else 0
            variant_runs, reports = measure(variant, ctx, pool, settings, settings.concurrency,
                                            f"{variant.name} r{round_number}")
            probes.setdefault(variant.name, reports)
            runs += [{**r, **dataclasses.asdict(variant), "variant": variant.name, "round": round_number,
                      "threads": pool or None} for r in variant_runs]

    document = {**env, "settings": {**settings.__dict__, "rounds": args.rounds}, "stacks": {
        s: {"requirements": list(st.requirements), "constrained": st.constrained} for s, st in ctx.stacks.items()},
        "stubs": {"grpcio_tools": grpc_stacks.TOOLS_VERSION, "path": display_path(ctx.stubs)},
        "baseline": baseline, "sync_threads": threads, "sync_sizing": sizing, "probes": probes,
        "summary": summarize(runs, baseline), "runs": runs, "notes": args.note}
    markdown = render(document)
    json_path, md_path = write_results(args.output_dir or run.output_dir, args.name, document, markdown)
    print()
    print(markdown)
    print(f"wrote {json_path} and {md_path}")
    return 0


def _stack_line(name: str, document: dict) -> str:
    seen = next((p for variant, reports in document["probes"].items() if variant.endswith(f"grpcio {name}")
                 for p in reports), None)
    imported = f"; imported: grpcio {seen['grpc']}, protobuf {seen['protobuf']}" if seen else ""
    return f"- stack {name}: `{' '.join(document['stacks'][name]['requirements'])}`{imported}"


def render(document: dict) -> str:
    machine, settings = document["machine"], document["settings"]
    warnings = sorted({w for reports in document["probes"].values() for p in reports for w in p["warnings"]})
    lines = [
        "# gRPC front ends: grpcio versions, grpc.aio against grpc.server, uvloop on and off",
        "",
        f"- date: {document['date']}",
        f"- machine: {machine['nproc']} cores, {machine['cpu_model']}, {machine['mem_total_gib']} GiB RAM, "
        f"Linux {machine['kernel']}, Python {machine['python']}; load average at start {machine['loadavg_at_start']:.2f}",
        f"- command: `{document['command']}`",
        *(f"- note: {note}" for note in document.get("notes", [])),
        *(_stack_line(name, document) for name in document["stacks"]),
        f"- stubs: generated once by grpcio-tools {document['stubs']['grpcio_tools']} ({document['stubs']['path']}), "
        "the same for every stack; each server process printed the grpcio and stubs it imported, and the harness "
        "checked them" + (f"; warnings on import: {'; '.join(warnings)}" if warnings else "; no warnings on import"),
        f"- ceiling: bench/noop_server.py pinned to core {SERVER_CORE}, h2load to core {LOADGEN_CORE}; full: "
        f"`rnn-sentiment serve --workers {FULL_WORKERS}` (shipped model, defaults) or bench/sync_server.py, unpinned",
        f"- load: {document['load_generator']}, one-text Predict, one connection per caller up to 32; warm-up "
        f"{settings['warmup_s']:g} s, then {settings['duration_s']:g} s measured per run; interleaved rounds: "
        f"{settings['rounds']} (every variant once per round)",
        "- sync thread pool per stack: " + (", ".join(f"grpcio {s}: {n}" for s, n in document["sync_threads"].items())
                                            or "–"),
        "",
        f"## Medians over rounds, ratios to grpcio {document['baseline']} {BASELINE_FRONT_END} of the same kind",
        "",
        markdown_table(
            ["variant", "conc.", "rounds", "req/s median", "req/s min-max", "p50 ms", "p99 ms", "errors",
             "server CPU (cores)", "ratio of medians", "ratio per round (min-max)"],
            [[r["variant"], r["concurrency"], r["rounds"], fmt(r["rps"]["median"]),
              f"{fmt(r['rps']['low'])}-{fmt(r['rps']['high'])}", fmt(r["p50_ms"], 2), fmt(r["p99_ms"], 2),
              r["errors"], fmt(r["server_cpu_cores"], 2), fmt(r["ratio_of_medians"], 2),
              f"{fmt(min(r['round_ratios']), 2)}-{fmt(max(r['round_ratios']), 2)}" if r["round_ratios"] else "–"]
             for r in document["summary"]]),
        "",
    ]
    if document["sync_sizing"]:
        lines += ["## Sync pool sizing (ceiling, once each)", "",
                  markdown_table(["stack", "threads", "conc.", "req/s", "p50 ms", "p99 ms", "server CPU (cores)"],
                                 [[r["stack"], r["threads"], r["concurrency"], fmt(r["rps"]), fmt(r["p50_ms"], 2),
                                   fmt(r["p99_ms"], 2), fmt(r["server_cpu_cores"], 2)] for r in document["sync_sizing"]]),
                  ""]
    lines += ["## Every run", "",
              markdown_table(LOAD_HEADERS, load_rows([{**r, "server": f"{r['variant']} (round {r['round']})"}
                                                      for r in document["runs"]])), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
