"""make bench: our server against its ceilings, on loopback, bounded in time and requests.

    python -m bench.run [--quick] [--model-dir DIR] [--output-dir DIR]

Measured in one run, so the ratios compare like with like on the same machine at the same time:
  ceiling B  the model in-process (tokenize + forward), batch 1..128, 1 thread and all cores
  ceiling A  a no-op grpc.aio server answering the same Predict messages; and as many no-op
             processes as cores on one port (what --workers N could do if the model were free)
  ours       batching off (--max-batch-size 1), --workers 1, and --workers 2 (the default on 2 cores); one-text
             requests at each concurrency, 64-text requests, and an RSS-growth check
Results: bench/results/serving.{json,md} (a --quick smoke run writes under bench/results/tmp/).
"""

from __future__ import annotations

import argparse
import math
import shlex
from pathlib import Path

from .harness import (Bodies, RunningServer, Settings, cpu_count, display_path, prepare_run,
                      load, run_ceiling_b, start_noop_server, start_our_server,
                      wait_quiet)
from .report import LOAD_HEADERS, fmt, load_rows, markdown_table, ratio, write_results
from .servers import stop_servers_on_signals
from .texts import TEXTS

CEILING_A = "ceiling A (no-op)"
MANY_TEXTS_CONCURRENCY = 8  # 8 callers x 64 texts: enough to keep the model busy, within the queue limit


def ceiling_a_processes_label(processes: int) -> str:
    return f"ceiling A, {processes} processes (no-op)"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a ~1-minute smoke run (results under results/tmp/)")
    parser.add_argument("--model-dir", type=Path, default=None,
                        help="model directory passed to the server (default: the shipped models)")
    parser.add_argument("--output-dir", type=Path, default=None, help="where the JSON and Markdown go")
    parser.add_argument("--name", default="serving", help="file stem of the results")
    parser.add_argument("--rss-requests", type=int, default=None,
                        help="requests in the RSS-growth run (default 200000; --quick 5000; 0 skips it)")
    parser.add_argument("--note", action="append", default=[], help="a line for the results' notes (repeatable)")
    parser.add_argument("--concurrency", default=None, help="comma-separated concurrencies (default 1,8,32,128)")
    parser.add_argument("--extra", action="append", default=[], metavar="FLAGS",
                        help='another server configuration to sweep, e.g. --extra "--workers 2 --max-batch-delay-ms 2"')
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop_servers_on_signals()
    run = prepare_run("bench.run", args, argv, args.rss_requests)
    settings, checkpoint, work, output_dir, env, bodies = (
        run.settings, run.checkpoint, run.work, run.output_dir, run.env, run.bodies)
    one_file, many_file = run.one_text_file, run.many_texts_file
    nproc = cpu_count()
    print(f"bench: {env['machine']['nproc']} cores ({env['machine']['cpu_model']}), checkpoint {checkpoint}, "
          f"warm-up {settings.warmup_s:g} s + {settings.duration_s:g} s per run; scratch in {work}", flush=True)

    # Ceiling B before and after the load runs, the best of the two kept: a ceiling is what the
    # machine can do, and on a shared machine the two moments see different neighbours.
    threads = sorted({1, nproc})
    print("ceiling B: the model in-process", flush=True)
    ceiling_b_runs = [run_ceiling_b(checkpoint, threads, settings)]
    show_ceiling_b(ceiling_b_runs[-1])

    # Every server starts first and they take turns at each concurrency, so the rows compared in a
    # ratio were measured minutes apart at most, under much the same neighbours' load.
    configurations = [
        ("ours, batching off", ["--max-batch-size", "1", "--workers", "1"]),
        ("ours, --workers 1", ["--workers", "1"]),
        ("ours, --workers 2", ["--workers", "2"]),
    ] + [(f"ours, {extra}", shlex.split(extra)) for extra in args.extra]
    runs: list[dict] = []
    rss_check: dict | None = None
    servers: dict[str, RunningServer] = {}
    try:
        print("starting ceiling A (a no-op grpc.aio server) and " + ", ".join(
            f"rnn-sentiment serve {shlex.join(flags)}".rstrip() for _, flags in configurations), flush=True)
        servers[CEILING_A] = start_noop_server(work, bodies)
        if nproc > 1:
            servers[ceiling_a_processes_label(nproc)] = start_noop_server(work, bodies, processes=nproc)
        for label, flags in configurations:
            servers[label] = start_our_server(label, flags, args.model_dir, work, bodies)
        for concurrency in settings.concurrency:
            for label, server in servers.items():
                runs.append(load(label, server, one_file, bodies.one_text, 1, concurrency, settings, work))
                wait_quiet()
        for label in (CEILING_A, "ours, --workers 1", "ours, --workers 2"):
            runs.append(load(label, servers[label], many_file, bodies.many_texts, len(TEXTS),
                             MANY_TEXTS_CONCURRENCY, settings, work))
            wait_quiet()
        if settings.rss_requests:
            rss_check = check_rss("ours, --workers 1", servers["ours, --workers 1"], one_file, bodies, settings, work)
    finally:
        for server in servers.values():
            server.process.stop()

    print("ceiling B again", flush=True)
    ceiling_b_runs.append(run_ceiling_b(checkpoint, threads, settings))
    show_ceiling_b(ceiling_b_runs[-1])
    ceiling_b = best_ceiling_b(ceiling_b_runs)
    order = [CEILING_A, ceiling_a_processes_label(nproc)] + [label for label, _ in configurations]
    runs.sort(key=lambda r: (order.index(r["server"]), r["texts_per_request"], r["concurrency"]))

    document = {**env, "settings": settings.__dict__, "checkpoint": display_path(checkpoint),
                "model": {"name": ceiling_b[1]["model"], "sha256": ceiling_b[1]["sha256"]},
                "ceiling_b": {str(k): v for k, v in ceiling_b.items()},
                "ceiling_b_measurements": [{str(k): v for k, v in one.items()} for one in ceiling_b_runs],
                "runs": runs, "rss_check": rss_check,
                "notes": args.note}
    document["ratios"] = ratios(document, nproc)
    markdown = render(document, nproc)
    json_path, md_path = write_results(output_dir, args.name, document, markdown)
    print()
    print(markdown)
    print(f"wrote {json_path} and {md_path}")
    return 0


def _backend_mark(row: dict) -> str:
    return ", ort" if row.get("backend") == "onnxruntime" else ""


def show_ceiling_b(measured: dict[int, dict]) -> None:
    for threads, data in measured.items():
        print("  threads", threads, " ".join(f"b{r['batch']}={r['texts_per_s']:,.0f}/s" for r in data["batches"]),
              flush=True)


def best_ceiling_b(measured: list[dict[int, dict]]) -> dict[int, dict]:
    """Per thread count and batch size, the best of several ceiling B measurements."""
    best: dict[int, dict] = {}
    for one in measured:
        for threads, data in one.items():
            if threads not in best:
                best[threads] = {**data, "batches": [dict(row) for row in data["batches"]]}
                continue
            for row, new in zip(best[threads]["batches"], data["batches"], strict=True):
                if new["texts_per_s"] > row["texts_per_s"]:
                    row.update(new)
    return best


def check_rss(label: str, server, one_file: Path, bodies: Bodies, settings: Settings, work: Path) -> dict:
    """RSS before and after many requests at concurrency 32: a leak shows as growth."""
    from .procstat import sample_tree

    before = sample_tree(server.process.pid)
    result = load(label + " (RSS check)", server, one_file, bodies.one_text, 1, 32, settings, work,
                  requests=settings.rss_requests)
    after = sample_tree(server.process.pid)
    return {"server": label, "requests": settings.rss_requests, "rps": result["rps"], "errors": result["errors"],
            "rss_before_mb": round(before.rss_bytes / 2**20, 1), "rss_after_mb": round(after.rss_bytes / 2**20, 1),
            "growth_mb": round((after.rss_bytes - before.rss_bytes) / 2**20, 1)}


def _find(runs: list[dict], server: str, concurrency: int, texts: int = 1) -> dict | None:
    for run in runs:
        if run["server"] == server and run["concurrency"] == concurrency and run["texts_per_request"] == texts:
            return run
    return None


def ceiling_b_at(document: dict, threads: int | None, batch: int) -> dict | None:
    """Ceiling B's row for `batch` at `threads`, or (threads None) the best thread count's."""
    rows = [row | {"threads": int(t)} for t, data in document["ceiling_b"].items() for row in data["batches"]
            if row["batch"] == batch and (threads is None or int(t) == threads)]
    return max(rows, key=lambda row: row["texts_per_s"], default=None)


def model_texts_per_core_s(document: dict, batch: float) -> float | None:
    """Ceiling B's one-thread texts/s at a (mean) batch size, interpolated in log(batch) between the
    measured sizes: what one core computes when the batcher forms batches of that size."""
    rows = sorted(document["ceiling_b"].get("1", {}).get("batches", []), key=lambda row: row["batch"])
    if not rows:
        return None
    if batch <= rows[0]["batch"]:
        return rows[0]["texts_per_s"]
    for low, high in zip(rows, rows[1:]):
        if batch <= high["batch"]:
            share = (math.log(batch) - math.log(low["batch"])) / (math.log(high["batch"]) - math.log(low["batch"]))
            return low["texts_per_s"] + share * (high["texts_per_s"] - low["texts_per_s"])
    return rows[-1]["texts_per_s"]


def front_end_and_model_bound(no_op: dict, model_per_core: float) -> float:
    """One-text req/s of a server that costs what the no-op ceiling costs per call plus the model's
    per-text work, on the CPU the no-op server got beside the load generator (its measured cores):
    per call, 1/no-op req/s of that CPU for the front end and 1/(cores x model texts/s) for the model."""
    return 1 / (1 / no_op["rps"] + 1 / (no_op["server_cpu_cores"] * model_per_core))


def ratios(document: dict, nproc: int) -> list[dict]:
    """Every ratio the README and the issue's targets talk about, with what it compares."""
    runs = document["runs"]
    out: list[dict] = []

    def add(name: str, value: float | None, target: str = "") -> None:
        out.append({"ratio": name, "value": None if value is None else round(value, 3), "target": target})

    concurrencies = sorted({r["concurrency"] for r in runs if r["texts_per_request"] == 1})
    for c in concurrencies:
        a = _find(runs, "ceiling A (no-op)", c)
        for server in ("ours, batching off", "ours, --workers 1", "ours, --workers 2"):
            run = _find(runs, server, c)
            if a and run:
                add(f"{server} / ceiling A, req/s at concurrency {c}", ratio(run["rps"], a["rps"]),
                    "≥ 0.5 (default or chosen workers)" if c == 32 else "")
        a_all, two = _find(runs, ceiling_a_processes_label(nproc), c), _find(runs, "ours, --workers 2", c)
        if a_all and two:
            # The model is not free: this bounds what any number of workers could do, not a target.
            add(f"ours, --workers 2 / ceiling A with {nproc} processes, req/s at concurrency {c}",
                ratio(two["rps"], a_all["rps"]))
            per_core = model_texts_per_core_s(document, two.get("mean_batch") or 1)
            if per_core and a_all.get("server_cpu_cores"):
                bound = front_end_and_model_bound(a_all, per_core)
                add(f"ours, --workers 2 / bound ({nproc}-process no-op + model at batch {two.get('mean_batch') or 1:g}: "
                    f"{bound:,.0f} req/s), req/s at concurrency {c}", ratio(two["rps"], bound),
                    "≥ 0.9" if c in (32, 128) else "")
        off, default, two = (_find(runs, s, c) for s in ("ours, batching off", "ours, --workers 1", "ours, --workers 2"))
        if off and default:
            add(f"default / batching off, req/s at concurrency {c}", ratio(default["rps"], off["rps"]))
        if default and two:
            add(f"--workers 2 / --workers 1, req/s at concurrency {c}", ratio(two["rps"], default["rps"]))
    b64_best, b64_one = ceiling_b_at(document, None, 64), ceiling_b_at(document, 1, 64)
    for server in ("ours, --workers 1", "ours, --workers 2"):
        run = next((r for r in runs if r["server"] == server and r["texts_per_request"] > 1), None)
        if run and b64_best:
            add(f"{server}, 64-text requests: texts/s / ceiling B at batch 64 (best: {b64_best['threads']} thread{'s' if b64_best['threads'] != 1 else ''})",
                ratio(run["texts_per_s"], b64_best["texts_per_s"]), "≥ 0.8")
        if run and b64_one and b64_best and b64_best["threads"] != 1:
            add(f"{server}, 64-text requests: texts/s / ceiling B at batch 64 (1 thread)",
                ratio(run["texts_per_s"], b64_one["texts_per_s"]))
    a1, b1 = _find(runs, "ceiling A (no-op)", 1), ceiling_b_at(document, None, 1)
    for server in ("ours, --workers 1", "ours, --workers 2"):
        run = _find(runs, server, 1)
        if run and a1 and b1:
            floor = a1["p50_ms"] + b1["ms_per_batch"]
            add(f"{server}: p50 at concurrency 1 ({run['p50_ms']:.2f} ms) / (ceiling A p50 + one batch-1 "
                f"forward = {floor:.2f} ms)",
                ratio(run["p50_ms"], floor), "p50 ≤ 1.0 ms")
    return out


def render(document: dict, nproc: int) -> str:
    machine = document["machine"]
    lines = [
        "# rnn-sentiment serving benchmark",
        "",
        f"- date: {document['date']}",
        f"- machine: {machine['nproc']} cores, {machine['cpu_model']}, {machine['mem_total_gib']} GiB RAM, "
        f"Linux {machine['kernel']}, Python {machine['python']}, torch {document['torch']}; "
        f"load average at start {machine['loadavg_at_start']:.2f}",
        f"- command: `{document['command']}`",
        *(f"- note: {note}" for note in document.get("notes", [])),
        f"- model: {document['model']['name']} (sha256 {document['model']['sha256'][:12]}…) from "
        f"`{document['checkpoint']}`",
        f"- load generator: {document['load_generator']}, one connection per caller up to 32 "
        f"(128 = 32 connections × 4 streams); warm-up {document['settings']['warmup_s']:g} s, then "
        f"{document['settings']['duration_s']:g} s measured per row; all servers started first, taking turns at "
        "each concurrency",
        "- latency: from h2load's per-request log; errors: non-200, failed streams, or a 200 without "
        "a whole gRPC message; server CPU and RSS: the server's process tree from /proc; "
        "others' CPU: machine busy time that was neither the server nor h2load (other work on a shared machine)",
        "",
        "## Ceiling B: the model in-process (tokenize + forward), texts/s (ms per batch), best window before and after the load runs",
        "",
    ]
    batches = [r["batch"] for r in next(iter(document["ceiling_b"].values()))["batches"]]
    rows = []
    for threads, data in document["ceiling_b"].items():
        rows.append([f"{threads} thread{'s' if threads != '1' else ''}"]
                    + [f"{fmt(r['texts_per_s'])} ({fmt(r['ms_per_batch'], 2)} ms{_backend_mark(r)})"
                       for r in data["batches"]])
    lines += [markdown_table(["threads"] + [f"batch {b}" for b in batches], rows), "",
              "ort: ONNX Runtime was the faster executor at that batch size, else torch. Each backend's texts/s:", ""]
    rows = []
    for threads, data in document["ceiling_b"].items():
        for backend in ("torch", "onnxruntime"):
            if f"{backend}_texts_per_s" in data["batches"][0]:
                rows.append([f"{backend}, {threads} thread{'s' if threads != '1' else ''}"]
                            + [fmt(r.get(f"{backend}_texts_per_s")) for r in data["batches"]])
    lines += [markdown_table(["backend, threads"] + [f"batch {b}" for b in batches], rows), ""]
    measurements = document.get("ceiling_b_measurements", [])
    if len(measurements) > 1:
        # The best window hides how unsteady a setting is on a shared machine; each pass shows it.
        rows = []
        for when, one in zip(("before", "after"), measurements):
            for threads, data in one.items():
                rows.append([f"{when}, {threads} thread{'s' if threads != '1' else ''}"]
                            + [fmt(r["mean_texts_per_s"]) for r in data["batches"]])
        lines += ["Mean texts/s of each pass (before and after the load runs):", "",
                  markdown_table(["pass"] + [f"batch {b}" for b in batches], rows), ""]
    lines += ["## Load runs", "", markdown_table(LOAD_HEADERS, load_rows(document["runs"])), ""]
    if document.get("rss_check"):
        rss = document["rss_check"]
        lines += ["## RSS growth", "",
                  f"{rss['requests']:,} one-text requests at concurrency 32 against "
                  f"{rss['server']}, one process, so its RSS is one worker's "
                  f"({fmt(rss['rps'])} req/s, {rss['errors']} errors): RSS {rss['rss_before_mb']} MB before, "
                  f"{rss['rss_after_mb']} MB after, growth {rss['growth_mb']} MB.", ""]
    lines += ["## Ratios", "", markdown_table(
        ["ratio", "value", "target"],
        [[r["ratio"], fmt(r["value"], 2), r["target"]] for r in document["ratios"]]), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
