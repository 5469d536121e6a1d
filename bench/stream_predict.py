"""StreamPredict against unary Predict: texts/s on the same server, in the same run.

    python -m bench.stream_predict [--quick] [--rounds N] [--model-dir DIR] [--output-dir DIR]

Both are driven by h2load (a C HTTP/2 client, so the load generator's CPU is small and alike for
both): unary Predict as one-text calls at concurrency 32 (32 connections), StreamPredict as
32 streams (32 connections) each carrying MESSAGES_PER_STREAM one-text StreamPredictRequests
that the server answers pipelined, then a new stream. The two take turns for `--rounds`
rounds (interleaved, so a neighbour's load lands on both alike); the results are the medians
and the spread (lowest, highest) over the rounds of the texts the model computed per second
(see `served_texts_per_s`) and of the server CPU each text cost.
Results: bench/results/stream_predict.{json,md} (a --quick run writes under bench/results/tmp/).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import grpc

from rnn_sentiment.v1 import sentiment_pb2 as pb

from .harness import RunningServer, load, prepare_run, start_our_server, wait_quiet
from .report import fmt, markdown_table, write_results
from .servers import stop_servers_on_signals
from .texts import ONE_TEXT
from .wire import grpc_frame

STREAM_PREDICT = "/rnn_sentiment.v1.SentimentService/StreamPredict"
CONCURRENCY = 32
# Messages per h2load "request" (one stream): enough that opening the stream is a small part of
# its cost, and the server's in-flight bound per stream, so all of them are pipelined at once;
# few enough that many streams complete in each measured window on a busy machine.
MESSAGES_PER_STREAM = 64
UNARY = "unary Predict, concurrency 32"
STREAMED = f"StreamPredict, 32 streams × {MESSAGES_PER_STREAM} messages"
TARGET = 2.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.stream_predict", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one short round (results under results/tmp/)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 3; --quick 1)")
    parser.add_argument("--model-dir", type=Path, default=None, help="model directory (default: the shipped models)")
    parser.add_argument("--output-dir", type=Path, default=None, help="where the JSON and Markdown go")
    parser.add_argument("--flags", default="", help='server flags, e.g. "--workers 1" (default: the defaults)')
    parser.add_argument("--note", action="append", default=[], help="a line for the results' notes (repeatable)")
    args = parser.parse_args(argv)
    args.concurrency = str(CONCURRENCY)
    return args


def stream_body(messages: int) -> bytes:
    """A StreamPredict request body: `messages` framed one-text requests, back to back."""
    return b"".join(
        grpc_frame(pb.StreamPredictRequest(id=str(i), request=pb.PredictRequest(texts=[ONE_TEXT])).SerializeToString())
        for i in range(messages)
    )


def stream_response_bytes(target: str, messages: int) -> int:
    """The size of one stream's whole response body, as h2load counts it (frames included)."""
    with grpc.insecure_channel(target) as channel:
        call = channel.stream_stream(STREAM_PREDICT, request_serializer=pb.StreamPredictRequest.SerializeToString,
                                     response_deserializer=lambda raw: raw)
        requests = (pb.StreamPredictRequest(id=str(i), request=pb.PredictRequest(texts=[ONE_TEXT]))
                    for i in range(messages))
        answers = list(call(requests, timeout=60))
    for raw in answers:
        if pb.StreamPredictResponse.FromString(raw).WhichOneof("outcome") != "response":
            raise RuntimeError(f"StreamPredict answered an error: {pb.StreamPredictResponse.FromString(raw)}")
    return sum(len(grpc_frame(raw)) for raw in answers)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop_servers_on_signals()
    run = prepare_run("bench.stream_predict", args, argv, rss_requests=0)
    settings, work, bodies = run.settings, run.work, run.bodies
    rounds = args.rounds or (1 if args.quick else 3)
    flags = args.flags.split()
    stream_file = work / f"stream-predict-{MESSAGES_PER_STREAM}.bin"
    stream_file.write_bytes(stream_body(MESSAGES_PER_STREAM))
    print(f"bench: {rounds} interleaved rounds of {settings.warmup_s:g} s warm-up + {settings.duration_s:g} s, "
          f"server flags {flags or 'default'}; scratch in {work}", flush=True)
    server: RunningServer = start_our_server("ours", flags, args.model_dir, work, bodies)
    runs: list[dict] = []
    try:
        server.response_bytes[b"stream"] = stream_response_bytes(server.target, MESSAGES_PER_STREAM)
        for number in range(rounds):
            print(f"round {number + 1}", flush=True)
            runs.append(load(UNARY, server, run.one_text_file, bodies.one_text, 1, CONCURRENCY, settings, work)
                        | {"round": number + 1})
            wait_quiet()
            runs.append(load(STREAMED, server, stream_file, b"stream", MESSAGES_PER_STREAM, CONCURRENCY, settings,
                             work, path=STREAM_PREDICT) | {"round": number + 1})
            wait_quiet()
    finally:
        server.process.stop()
    document = {**run.env, "settings": settings.__dict__, "server_flags": flags, "rounds": rounds,
                "messages_per_stream": MESSAGES_PER_STREAM, "runs": runs, "notes": args.note}
    document["summary"] = summary(runs)
    markdown = render(document)
    json_path, md_path = write_results(run.output_dir, "stream_predict", document, markdown)
    print()
    print(markdown)
    print(f"wrote {json_path} and {md_path}")
    return 0


def served_texts_per_s(run: dict) -> float:
    """Texts the model computed per second in the measured window (h2load's count as a fallback).

    h2load counts a stream only once all its messages are answered, and its measured window
    starts with none open, so its count misses the streams still open at the end: up to a
    stream's duration (about a second here) out of the window's. The server's own count of the
    texts it computed has no such edge, and counts unary calls the same way.
    """
    return run.get("model_texts_per_s") or run["texts_per_s"]


def summary(runs: list[dict]) -> dict:
    """Per kind: median, lowest and highest texts/s and server CPU; and the ratio of the medians."""
    out: dict = {}
    for kind in (UNARY, STREAMED):
        mine = [r for r in runs if r["server"] == kind]
        rates = [served_texts_per_s(r) for r in mine]
        out[kind] = {
            "texts_per_s_median": statistics.median(rates), "texts_per_s_min": min(rates),
            "texts_per_s_max": max(rates),
            "h2load_texts_per_s_median": statistics.median(r["texts_per_s"] for r in mine),
            "server_cpu_cores_median": statistics.median(r["server_cpu_cores"] for r in mine),
            "server_cpu_ms_per_text_median": statistics.median(
                1000 * r["server_cpu_cores"] / served_texts_per_s(r) for r in mine if served_texts_per_s(r)),
            "errors": sum(r["errors"] for r in mine),
        }
    out["ratio"] = out[STREAMED]["texts_per_s_median"] / out[UNARY]["texts_per_s_median"]
    # On a shared machine the scheduler hands a busy process a share of the cores, not what it
    # could use, so the server CPU each text costs is the steadier comparison of the two paths.
    out["cpu_ratio"] = out[UNARY]["server_cpu_ms_per_text_median"] / out[STREAMED]["server_cpu_ms_per_text_median"]
    # Per round too: the spread of the ratio says more than the spread of either rate.
    per_round = [served_texts_per_s(s) / served_texts_per_s(u) for u, s in zip(runs[0::2], runs[1::2])]
    out["ratio_min"], out["ratio_max"] = min(per_round), max(per_round)
    return out


def render(document: dict) -> str:
    machine, s = document["machine"], document["summary"]
    rows = [[kind, fmt(s[kind]["texts_per_s_median"]),
             f"{fmt(s[kind]['texts_per_s_min'])}–{fmt(s[kind]['texts_per_s_max'])}",
             fmt(s[kind]["h2load_texts_per_s_median"]),
             fmt(s[kind]["server_cpu_cores_median"], 2), fmt(s[kind]["server_cpu_ms_per_text_median"], 3),
             str(s[kind]["errors"])] for kind in (UNARY, STREAMED)]
    per_run = [[str(r["round"]), r["server"], fmt(served_texts_per_s(r)), fmt(r["texts_per_s"]), fmt(r["p50_ms"], 2),
                fmt(r["p99_ms"], 2), fmt(r["server_cpu_cores"], 2), fmt(r["other_cpu_cores"], 2), str(r["errors"])]
               for r in document["runs"]]
    return "\n".join([
        "# StreamPredict against unary Predict",
        "",
        f"- date: {document['date']}",
        f"- machine: {machine['nproc']} cores, {machine['cpu_model']}, Python {machine['python']}; "
        f"load average at start {machine['loadavg_at_start']:.2f}",
        f"- command: `{document['command']}`",
        *(f"- note: {note}" for note in document.get("notes", [])),
        f"- server: `{' '.join(['rnn-sentiment', 'serve', *document['server_flags']])}` (one server for both)",
        f"- load generator: {document['load_generator']}, 32 connections; unary: one-text Predict calls; "
        f"StreamPredict: each stream carries {document['messages_per_stream']} one-text messages, then the next "
        f"stream opens; {document['rounds']} interleaved rounds of {document['settings']['warmup_s']:g} s warm-up + "
        f"{document['settings']['duration_s']:g} s measured",
        "",
        markdown_table(["", "texts/s (median)", "lowest–highest", "h2load's count", "server CPU (cores)",
                        "server CPU ms per text", "errors"], rows),
        "",
        f"StreamPredict / unary: **{s['ratio']:.2f}×** (medians; per round {s['ratio_min']:.2f}–{s['ratio_max']:.2f}; "
        f"target ≥ {TARGET:g}×). Server CPU per text: {s[UNARY]['server_cpu_ms_per_text_median']:.3f} ms unary, "
        f"{s[STREAMED]['server_cpu_ms_per_text_median']:.3f} ms StreamPredict: **{s['cpu_ratio']:.2f}×** less.",
        "",
        "## Every run",
        "",
        markdown_table(["round", "what", "texts/s", "h2load's count", "p50 ms", "p99 ms", "server CPU",
                        "others' CPU", "errors"], per_run),
        "",
        "texts/s: texts the model computed per second in the measured window (the server's "
        "`rnn_sentiment_batch_size` sum); h2load's count misses the streams still open when its window ends. "
        "p50/p99 are per h2load request: one call for unary, one whole stream of "
        f"{document['messages_per_stream']} messages for StreamPredict. Others' CPU: the machine's busy time "
        "that was neither the server nor h2load.",
        "",
    ])


if __name__ == "__main__":
    raise SystemExit(main())
