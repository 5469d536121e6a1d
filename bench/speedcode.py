"""make bench-speedcode: does each piece of speed code beat its plain alternative today?

    python -m bench.speedcode [--rounds 3] [--concurrency 32,128] [--pieces NAME,...]

A piece of speed code stays in the server only while this shows it winning
(docs/performance.md, "Speed code, measured"); a new one joins PIECES with its alternative.

Each piece is measured as an A/B of the whole server (`--workers 2`, the shipped GRU) under
h2load, in interleaved rounds: at each concurrency, A then B, round after round, so both see
the same neighbours. On a metric (req/s, higher is better; p99 latency, lower is better) one
side wins when the medians differ by more than the spread (max - min over the rounds) of A and
of B. A side wins a concurrency when it wins a metric there and loses none; a piece stays only
if it wins some concurrency and loses none. The 1-minute load average is recorded before every
run: on a shared machine it says how much the numbers can be trusted.

Results: bench/results/speedcode.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from statistics import median
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .harness import RESULTS_DIR, RunningServer, Settings, prepare_run, load, start_our_server, wait_quiet
from .report import fmt, markdown_table, write_results
from .servers import stop_servers_on_signals

WORKERS = ["--workers", "2"]


@dataclass(frozen=True)
class Variant:
    """One side of an A/B: the server with these flags (variants with equal flags share a server)."""

    label: str
    flags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Piece:
    name: str
    code: str  # where it lives
    a: Variant  # with the speed code
    b: Variant  # its plain alternative


PIECES = [
    Piece("--pin-workers", "server/affinity.py", Variant("pinned", ("--pin-workers",)), Variant("unpinned")),
]


@dataclass
class Rounds:
    """One variant's runs at one concurrency."""

    rps: list[float] = field(default_factory=list)
    cpu_us_per_request: list[float] = field(default_factory=list)  # the server's, all processes
    p99_ms: list[float] = field(default_factory=list)
    load_1min: list[float] = field(default_factory=list)
    others_cpu: list[float] = field(default_factory=list)


def spread(values: list[float]) -> float:
    return max(values) - min(values)


def metric_verdict(a: list[float], b: list[float], higher_is_better: bool) -> str:
    """'A wins', 'B wins' or 'within noise': the medians' difference against both spreads."""
    difference = median(a) - median(b)
    if abs(difference) <= max(spread(a), spread(b)):
        return "within noise"
    return "A wins" if (difference > 0) == higher_is_better else "B wins"


def judge(rows: list[dict]) -> None:
    """Add each row's verdicts (req/s, p99, both) and each piece's keep/remove, from the raw rounds."""
    for row in rows:
        row["rps_verdict"] = metric_verdict(row["a_rps"], row["b_rps"], higher_is_better=True)
        row["p99_verdict"] = metric_verdict(row["a_p99_ms"], row["b_p99_ms"], higher_is_better=False)
        both = {row["rps_verdict"], row["p99_verdict"]}
        row["verdict"] = ("mixed" if {"A wins", "B wins"} <= both else "A wins" if "A wins" in both
                          else "B wins" if "B wins" in both else "within noise")
    for piece in dict.fromkeys(row["piece"] for row in rows):
        verdicts = [row["verdict"] for row in rows if row["piece"] == piece]
        keep = "A wins" in verdicts and not {"B wins", "mixed"} & set(verdicts)
        for row in rows:
            if row["piece"] == piece:
                row["piece_verdict"] = "keep" if keep else "remove"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.speedcode", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds of A and B per concurrency (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="seconds of warm-up before each run")
    parser.add_argument("--duration", type=int, default=5, help="seconds measured per run")
    parser.add_argument("--concurrency", default="32,128", help="comma-separated concurrencies (default 32,128)")
    parser.add_argument("--pieces", default="", help="comma-separated piece names (default: all): "
                        + ", ".join(piece.name for piece in PIECES))
    parser.add_argument("--model-dir", type=Path, default=None, help="model directory (default: the shipped models)")
    parser.add_argument("--output-dir", type=Path, default=None, help=f"where results go (default {RESULTS_DIR})")
    parser.add_argument("--name", default="speedcode", help="file stem of the results")
    parser.add_argument("--note", action="append", default=[], help="a line for the results' notes (repeatable)")
    parser.add_argument("--render", type=Path, default=None, metavar="JSON",
                        help="measure nothing: print the Markdown of a saved result, its verdicts recomputed")
    parser.set_defaults(quick=False)  # prepare_run reads it
    return parser.parse_args(argv)


def chosen_pieces(names: str) -> list[Piece]:
    if not names:
        return PIECES
    by_name = {piece.name: piece for piece in PIECES}
    unknown = [name for name in names.split(",") if name not in by_name]
    if unknown:
        raise SystemExit(f"unknown piece(s) {unknown}; choose from {list(by_name)}")
    return [by_name[name] for name in names.split(",")]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render is not None:
        document = json.loads(args.render.read_text())
        judge(document["rows"])
        print(render(document))
        return 0
    if args.rounds < 1:
        raise SystemExit("--rounds must be at least 1")
    stop_servers_on_signals()
    pieces = chosen_pieces(args.pieces)
    run = prepare_run("bench.speedcode", args, argv)
    settings = Settings(warmup_s=args.warmup, duration_s=args.duration,
                        concurrency=tuple(int(c) for c in args.concurrency.split(",")),
                        ceiling_b_seconds=0, rss_requests=0, quick=False)
    output_dir = args.output_dir or RESULTS_DIR
    variants = list(dict.fromkeys(v for piece in pieces for v in (piece.a, piece.b)))
    # Per piece: a server shared by two pieces is measured beside each piece's other variant.
    measured: dict[tuple[str, str, int], Rounds] = {
        (piece.name, side, c): Rounds() for piece in pieces for side in "ab" for c in settings.concurrency}
    servers: dict[tuple[str, ...], RunningServer] = {}
    to_start = list({variant.flags: variant for variant in variants}.values())

    def start(variant: Variant) -> None:
        servers[variant.flags] = start_our_server(variant.label, WORKERS + list(variant.flags), args.model_dir,
                                                  run.work, run.bodies)

    try:
        # Started side by side: each takes tens of seconds to load on a busy machine.
        print("starting: " + "; ".join(f"serve {' '.join(WORKERS + list(v.flags))}" for v in to_start), flush=True)
        with ThreadPoolExecutor(len(to_start)) as starting:
            for started in [starting.submit(start, variant) for variant in to_start]:
                started.result()
        for round_index in range(args.rounds):
            print(f"round {round_index + 1} of {args.rounds}", flush=True)
            for concurrency in settings.concurrency:
                for piece in pieces:
                    for side, variant in (("a", piece.a), ("b", piece.b)):
                        load_1min = os.getloadavg()[0]
                        result = load(variant.label, servers[variant.flags], run.one_text_file, run.bodies.one_text, 1,
                                      concurrency, settings, run.work)
                        if result["errors"]:
                            raise SystemExit(f"{variant.label}: {result['errors']} errors at concurrency "
                                             f"{concurrency}; see the logs in {run.work}")
                        rounds = measured[(piece.name, side, concurrency)]
                        rounds.rps.append(result["rps"])
                        rounds.cpu_us_per_request.append(result["server_cpu_cores"] / result["rps"] * 1e6)
                        rounds.p99_ms.append(result["p99_ms"])
                        rounds.load_1min.append(load_1min)
                        rounds.others_cpu.append(result["other_cpu_cores"])
                        wait_quiet()
    finally:
        for server in servers.values():
            server.process.stop()

    rows = []
    for piece in pieces:
        for concurrency in settings.concurrency:
            a, b = measured[(piece.name, "a", concurrency)], measured[(piece.name, "b", concurrency)]
            rows.append({"piece": piece.name, "code": piece.code, "a": piece.a.label, "b": piece.b.label,
                         "concurrency": concurrency, "a_rps": a.rps, "b_rps": b.rps,
                         "a_p99_ms": a.p99_ms, "b_p99_ms": b.p99_ms, "a_cpu_us": a.cpu_us_per_request,
                         "b_cpu_us": b.cpu_us_per_request,
                         "load_1min": a.load_1min + b.load_1min, "others_cpu": a.others_cpu + b.others_cpu})
    judge(rows)
    document = {**run.env, "settings": {"rounds": args.rounds, "warmup_s": args.warmup, "duration_s": args.duration,
                                        "concurrency": list(settings.concurrency)},
                "notes": args.note, "rows": rows}
    markdown = render(document)
    json_path, md_path = write_results(output_dir, args.name, document, markdown)
    print()
    print(markdown)
    print(f"wrote {json_path} and {md_path}")
    return 0


def _span(values: list[float], digits: int = 0) -> str:
    return f"{fmt(min(values), digits)}–{fmt(max(values), digits)}"


def render(document: dict) -> str:
    machine = document["machine"]
    settings = document["settings"]
    lines = [
        "# Speed code, measured: each piece against its plain alternative",
        "",
        f"- date: {document['date']}",
        f"- machine: {machine['nproc']} cores, {machine['cpu_model']}, Linux {machine['kernel']}, "
        f"Python {machine['python']}, torch {document['torch']}; shared with other work (see load)",
        f"- command: `{document['command']}`",
        *(f"- note: {note}" for note in document.get("notes", [])),
        f"- server: `rnn-sentiment serve --workers 2`, shipped GRU; h2load one-text Predict; "
        f"{settings['rounds']} interleaved rounds (A then B at each concurrency), "
        f"{settings['warmup_s']:g} s warm-up + {settings['duration_s']:g} s measured per run",
        "- verdict, per metric (req/s: higher is better; p99: lower is better): `A wins` / `B wins` when the "
        "medians differ by more than the spread (max − min over the rounds) of A and of B, else `within noise`; "
        "a side wins a concurrency when it wins a metric and loses none (`mixed`: each wins one); a piece is "
        "kept when it wins some concurrency and loses none",
        "",
        markdown_table(
            ["piece", "A", "B", "conc.", "req/s A / B (median)", "A − B", "req/s spread A / B",
             "p99 ms A / B (median)", "p99 spread A / B", "server CPU µs/req A / B", "load (1 min)", "others' CPU",
             "req/s", "p99", "verdict", "piece"],
            [[row["piece"], row["a"], row["b"], row["concurrency"],
              f"{fmt(median(row['a_rps']))} / {fmt(median(row['b_rps']))}",
              f"{median(row['a_rps']) - median(row['b_rps']):+,.0f} "
              f"({(median(row['a_rps']) / median(row['b_rps']) - 1) * 100:+.1f}%)",
              f"{fmt(spread(row['a_rps']))} / {fmt(spread(row['b_rps']))}",
              f"{fmt(median(row['a_p99_ms']), 1)} / {fmt(median(row['b_p99_ms']), 1)}",
              f"{fmt(spread(row['a_p99_ms']), 1)} / {fmt(spread(row['b_p99_ms']), 1)}",
              f"{fmt(median(row['a_cpu_us']))} / {fmt(median(row['b_cpu_us']))}",
              _span(row["load_1min"], 1), _span(row["others_cpu"], 2), row["rps_verdict"], row["p99_verdict"],
              row["verdict"], row["piece_verdict"]]
             for row in document["rows"]]),
        "",
        "Every round, req/s (p99 ms), A | B:",
        "",
        markdown_table(["piece", "conc.", "A", "B"],
                       [[row["piece"], row["concurrency"],
                         ", ".join(f"{fmt(v)} ({fmt(p, 0)})" for v, p in zip(row["a_rps"], row["a_p99_ms"])),
                         ", ".join(f"{fmt(v)} ({fmt(p, 0)})" for v, p in zip(row["b_rps"], row["b_p99_ms"]))]
                        for row in document["rows"]]),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
