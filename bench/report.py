"""Write a benchmark's results as JSON (everything) and Markdown (the tables people read)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path


def fmt(value: object, digits: int = 0) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if value != value:  # NaN
            return "–"
        return f"{value:,.{digits}f}"
    return str(value)


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if not numerator or not denominator:
        return None
    return numerator / denominator


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


LOAD_HEADERS = ("server", "conc.", "texts/req", "req/s", "texts/s", "p50 ms", "p95 ms", "p99 ms", "errors",
                "server CPU (cores)", "RSS MB (largest proc)", "mean batch", "others' CPU (cores)")


def load_rows(runs: Sequence[dict]) -> list[list[str]]:
    rows = []
    for run in runs:
        rows.append([
            run["server"], run["concurrency"], run["texts_per_request"], fmt(run["rps"]), fmt(run["texts_per_s"]),
            fmt(run["p50_ms"], 2), fmt(run["p95_ms"], 2), fmt(run["p99_ms"], 2), run["errors"],
            fmt(run["server_cpu_cores"], 2), f"{fmt(run['server_rss_mb'])} ({fmt(run['server_max_worker_rss_mb'])})",
            fmt(run.get("mean_batch"), 1), fmt(run["other_cpu_cores"], 2),
        ])
    return rows


def write_results(directory: Path, stem: str, document: dict, markdown: str) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    json_path = directory / f"{stem}.json"
    md_path = directory / f"{stem}.md"
    json_path.write_text(json.dumps(document, indent=2) + "\n")
    md_path.write_text(markdown)
    return json_path, md_path
