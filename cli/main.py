"""`rnn-sentiment`: one command for serving, calling, training and evaluating.

Client commands (predict, trace, info, health, stream) import only the SDK; serve/train/eval import
the server and model layers lazily, so a client-only install (no torch) runs the client ones.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from dataclasses import asdict
from typing import TYPE_CHECKING, Callable, Sequence

from .predict_command import EXAMPLES as PREDICT_EXAMPLES, add_predict_arguments

if TYPE_CHECKING:  # the client is imported lazily: `serve` and `train` never need it
    from rnn_sentiment.client import SentimentClient
    from rnn_sentiment.client.results import TraceResult

DEFAULT_TARGET = "127.0.0.1:50051"
ENV_TARGET = "RNN_SENTIMENT_TARGET"  # every client command's default --target
ENV_TIMEOUT = "RNN_SENTIMENT_TIMEOUT"  # every client command's default --timeout


def _default_target() -> str:
    return os.environ.get(ENV_TARGET) or DEFAULT_TARGET


def _default_timeout(fallback: float) -> float:
    raw = os.environ.get(ENV_TIMEOUT, "").strip()
    try:
        return float(raw) if raw else fallback
    except ValueError:
        print(f"error: {ENV_TIMEOUT}={raw!r}: expected seconds, e.g. 10", file=sys.stderr)
        raise SystemExit(2) from None


def _add_target(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", default=_default_target(),
                        help=f"server host:port or dns:///name:port (env {ENV_TARGET}; default {DEFAULT_TARGET})")
    parser.add_argument("--timeout", type=float, default=_default_timeout(10.0),
                        help=f"per-call deadline in seconds (env {ENV_TIMEOUT}; default 10)")
    parser.add_argument("--model", default="", help="model name (default: the server's default)")
    _add_connection_security(parser)


def _add_connection_security(parser: argparse.ArgumentParser) -> None:
    """TLS, token and retry flags; each unset one falls back to the SDK's RNN_SENTIMENT_* variable."""
    group = parser.add_argument_group("connection security (flags override the RNN_SENTIMENT_* variables)")
    group.add_argument("--tls", action=argparse.BooleanOptionalAction, default=None,
                       help="TLS with the system's root CAs (env RNN_SENTIMENT_TLS)")
    group.add_argument("--tls-ca", default=None, metavar="PEM",
                       help="CA certificate that signed the server's: TLS on (env RNN_SENTIMENT_TLS_CA)")
    group.add_argument("--tls-client-cert", default=None, metavar="PEM",
                       help="client certificate for mutual TLS (env RNN_SENTIMENT_TLS_CLIENT_CERT)")
    group.add_argument("--tls-client-key", default=None, metavar="PEM",
                       help="its private key (env RNN_SENTIMENT_TLS_CLIENT_KEY)")
    group.add_argument("--tls-server-name", default=None, metavar="NAME",
                       help="verify the server's certificate for NAME instead of the target's host "
                            "(env RNN_SENTIMENT_TLS_SERVER_NAME)")
    # No --token: a flag's value shows in `ps` and shell history.
    group.add_argument("--token-file", default=None, metavar="FILE",
                       help="file whose first line is the bearer token (env RNN_SENTIMENT_TOKEN holds the token itself)")
    group.add_argument("--retry", action=argparse.BooleanOptionalAction, default=None,
                       help="retry calls answered UNAVAILABLE with backoff (default on; env RNN_SENTIMENT_RETRY)")


class ClientSetupError(Exception):
    """The client's own settings are unusable (a file that cannot be read, half a key pair)."""


def _token_from_file(path: str | None) -> str | None:
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.readline().strip()
    except OSError as error:
        raise ClientSetupError(f"--token-file {path!r}: {error.strerror or error}") from None


def _client(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from rnn_sentiment.client import SentimentClient

    try:
        return SentimentClient(
            args.target, timeout=args.timeout, tls=args.tls, root_ca=args.tls_ca, client_cert=args.tls_client_cert,
            client_key=args.tls_client_key, server_name=args.tls_server_name,
            token=_token_from_file(args.token_file), retry=args.retry,
        )
    except ValueError as error:
        raise ClientSetupError(str(error)) from None


def _run_client_command(action: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    from rnn_sentiment.client import SentimentError

    try:
        return action(args)
    except ClientSetupError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except SentimentError as error:
        print(f"error: {error}", file=sys.stderr)
        for field, description in error.field_violations.items():
            if f"{field}: {description}" not in error.message:
                print(f"  {field}: {description}", file=sys.stderr)
        return 1


def cmd_predict(args: argparse.Namespace) -> int:
    from .predict_command import run_predict

    with _client(args) as client:
        return run_predict(client, args)


def cmd_trace(args: argparse.Namespace) -> int:
    import os

    from rnn_sentiment.client.render import trace_json, traces_table

    attributions = [] if args.attributions.strip() in ("", "none") else args.attributions.split(",")
    pictures = args.format in ("png", "html")
    if args.format == "png" and not args.output and sys.stdout.isatty():
        print("error: --format png writes binary: give --output FILE.png (or redirect stdout)", file=sys.stderr)
        return 2
    try:
        from rnn_sentiment.client.requests import attribution_enums

        attribution_enums(attributions)
    except ValueError as error:
        print(f"error: --attributions: {error}", file=sys.stderr)
        return 2
    models = [args.model] + ([args.compare] if args.compare else [])
    with _client(args) as client:
        traces = [_trace_with_memory_if_it_fits(client, args, model, attributions, pictures) for model in models]
        if args.format == "table":
            from functools import partial

            from .truncation_notice import print_truncation_notes

            for trace in traces:
                print_truncation_notes([trace.prediction], partial(client.model_info, trace.model), ["the text"])
    if args.format == "png":
        try:
            from rnn_sentiment.client.render_png import trace_png

            output: str | bytes = trace_png(traces)
        except ImportError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    elif args.format == "html":
        from rnn_sentiment.client.render_html import trace_html

        output = trace_html(traces)
    elif args.format == "json":
        output = trace_json(traces[0] if len(traces) == 1 else traces) + "\n"
    else:
        color = args.color == "always" or (
            args.color == "auto" and not args.output and sys.stdout.isatty() and "NO_COLOR" not in os.environ)
        output = traces_table(traces, color=color) + "\n"
    if args.output:
        mode = "wb" if isinstance(output, bytes) else "w"
        with open(args.output, mode, **({} if mode == "wb" else {"encoding": "utf-8"})) as handle:
            handle.write(output)
        print(f"wrote {args.output}", file=sys.stderr)
    elif isinstance(output, bytes):
        sys.stdout.buffer.write(output)
    else:
        sys.stdout.write(output)
    return 0


def _trace_with_memory_if_it_fits(client: "SentimentClient", args: argparse.Namespace, model: str,
                                  attributions: list[str], pictures: bool) -> "TraceResult":
    """One model's trace. The memory profile is on by default but covers a bounded number of
    tokens (the server's limit): past it, say so and trace without it rather than fail."""
    from rnn_sentiment.client import SentimentError

    def trace(memory: bool) -> "TraceResult":
        return client.trace(
            args.text, model=model, include_hidden_states=args.format == "json" or pictures,
            attributions=attributions, integrated_gradients_steps=args.ig_steps,
            all_layers=args.all_layers, top_k_units=args.top_k_units, include_memory_profile=memory,
        )

    if args.no_memory:
        return trace(False)
    try:
        return trace(True)
    except SentimentError as error:
        reason = error.field_violations.get("include_memory_profile")
        if error.code != "INVALID_ARGUMENT" or reason is None:
            raise
        print(f"note: no memory profile for {model or 'the default model'}: {reason}", file=sys.stderr)
        return trace(False)


def cmd_info(args: argparse.Namespace) -> int:
    with _client(args) as client:
        models = client.list_models() if args.all else [client.model_info(args.model)]
    if args.json:
        print(json.dumps([asdict(m) for m in models], indent=2))
        return 0
    for m in models:
        a = m.architecture
        print(
            f"{m.name}@{m.version}{' (default)' if m.is_default else ''}: "
            f"{'bi' if a.bidirectional else ''}{a.cell_type} {a.num_layers}x{a.hidden_size}, "
            f"embedding {a.embedding_dim}, pooling {a.pooling}, "
            f"{f'{a.subword_buckets:,} n-gram buckets, ' if a.subword_buckets else ''}{a.parameter_count:,} parameters; "
            f"dev accuracy {m.dev_accuracy:.1%}; vocabulary {m.vocabulary_size:,}; max tokens {m.max_tokens} ({m.truncation}); "
            f"device {m.device}; sha256 {m.checkpoint_sha256[:12]}"
        )
    return 0


def cmd_health(args: argparse.Namespace) -> int:
    """Exit 0 only when SERVING, for scripts and container probes."""
    from rnn_sentiment.client import SentimentError

    with _client(args) as client:
        try:
            status = client.health(args.service)
        except SentimentError as error:
            print(f"{error.code}: {error.message}", file=sys.stderr)
            return 1
    print(status)
    return 0 if status == "SERVING" else 1


def cmd_stream(args: argparse.Namespace) -> int:
    from .stream_command import run_stream

    with _client(args) as client:
        return run_stream(client, args)


def cmd_serve(args: argparse.Namespace) -> int:
    # Importing torch takes seconds before serve() installs its signal handlers; SIGHUP's default
    # action is death, so ignore it until then (the server's state machine takes over from there).
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    from rnn_sentiment.server.config import config_from, config_table_markdown

    if args.print_config_table:
        print(config_table_markdown())
        return 0
    try:
        config = config_from(args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from rnn_sentiment.server.logging_setup import configure_logging

    configure_logging(config.log_format, config.log_level)
    from rnn_sentiment.server.event_loop import run

    try:
        if config.resolved_workers > 1:
            from rnn_sentiment.server.supervisor import supervise

            return run(supervise(config), config.event_loop)
        from rnn_sentiment.server.app import serve

        return run(serve(config), config.event_loop)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def cmd_train(args: argparse.Namespace) -> int:
    from rnn_sentiment.model.training import train

    from .train_command import train_config_from_args

    record = train(train_config_from_args(args), progress=not args.quiet)
    print(json.dumps(asdict(record), indent=2))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .eval_command import run_eval_from_args

    return run_eval_from_args(args)


def build_parser(selected: str | None = None) -> argparse.ArgumentParser:
    """The CLI parser. Heavy layers' flags are added only for the `selected` command, so
    `rnn-sentiment predict` never imports torch."""
    parser = argparse.ArgumentParser(prog="rnn-sentiment", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    predict = commands.add_parser("predict", help="score texts (arguments or stdin) on a running server",
                                  epilog=PREDICT_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_target(predict)
    add_predict_arguments(predict)
    predict.set_defaults(action=cmd_predict, client_command=True)

    trace = commands.add_parser("trace", help="show, word by word, what the network did with a text")
    _add_target(trace)
    trace.add_argument("text", help="the text to trace")
    trace.add_argument("--format", choices=("table", "json", "png", "html"), default="table",
                       help="table (terminal), json, png (needs the `render` extra) or html (self-contained)")
    trace.add_argument("--output", default="", help="write to this file instead of stdout")
    trace.add_argument("--compare", default="", metavar="MODEL2",
                       help="also trace the text with MODEL2 and show both side by side")
    trace.add_argument("--attributions", default="prefix,gradient_x_input,integrated_gradients,occlusion",
                       help="comma-separated methods, or none (default: all four)")
    trace.add_argument("--ig-steps", type=int, default=0, help="integrated-gradients steps (default: server's, 32)")
    trace.add_argument("--all-layers", action="store_true", help="gates and norms of every layer, not just the top")
    trace.add_argument("--top-k-units", type=int, default=0,
                       help="keep only the k most active hidden units in hidden states (0: all)")
    trace.add_argument("--no-memory", action="store_true", help="skip the memory profile (one backward pass per unit)")
    trace.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                       help="colour the table (auto: when stdout is a terminal and NO_COLOR is unset)")
    trace.set_defaults(action=cmd_trace, client_command=True)

    info = commands.add_parser("info", help="describe the served model(s)")
    _add_target(info)
    info.add_argument("--all", action="store_true", help="list every served model")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(action=cmd_info, client_command=True)

    health = commands.add_parser("health", help="exit 0 when the server is SERVING")
    health.add_argument("target", nargs="?", default=_default_target(),
                        help=f"server host:port (env {ENV_TARGET}; default {DEFAULT_TARGET})")
    health.add_argument("--timeout", type=float, default=_default_timeout(5.0))
    health.add_argument("--service", default="", help="a service name; empty = the whole server")
    _add_connection_security(health)
    health.set_defaults(action=cmd_health, client_command=True)

    stream = commands.add_parser("stream", help="the running sentiment of stdin, redrawn as the text arrives")
    _add_target(stream)
    stream.add_argument("--json", action="store_true", help="one JSON object per update")
    stream.add_argument("--steps", action="store_true",
                        help="also print each token read and how it moved the positive probability")
    stream.set_defaults(action=cmd_stream, client_command=True)

    serve = commands.add_parser("serve", help="serve models over gRPC")
    serve.add_argument("--print-config-table", action="store_true", help="print the configuration table (docs/configuration.md)")
    if selected == "serve":
        _lazy_arguments("rnn_sentiment.server.config", "add_server_arguments")(serve)
    serve.set_defaults(action=cmd_serve)

    train = commands.add_parser("train", help="train a model on SST-2 and write a checkpoint")
    if selected == "train":
        _lazy_arguments("rnn_sentiment.cli.train_command", "add_train_arguments")(train)
    train.set_defaults(action=cmd_train)

    evaluate = commands.add_parser("eval", help="evaluate a checkpoint on SST-2 dev")
    if selected == "eval":
        _lazy_arguments("rnn_sentiment.cli.eval_command", "add_eval_arguments")(evaluate)
    evaluate.set_defaults(action=cmd_eval)
    return parser


def _lazy_arguments(module: str, function: str) -> Callable[[argparse.ArgumentParser], None]:
    """Flags from a layer that may be missing (client-only install): then the command says so."""

    def add(parser: argparse.ArgumentParser) -> None:
        import importlib

        try:
            getattr(importlib.import_module(module), function)(parser)
        except ImportError as error:
            parser.set_defaults(missing_dependency=str(error))

    return add


# The extra each heavy command needs (pyproject.toml), named in the message of a client-only install.
COMMAND_EXTRAS = {"serve": "server", "train": "train", "eval": "server"}


def _missing_layer_message(command: str, missing: str) -> str:
    """One line: the command, what to install from a clone and once published, and the import that failed."""
    extra = COMMAND_EXTRAS.get(command, "server")
    return (f"error: `rnn-sentiment {command}` needs the {extra} extra (this install lacks it): from a clone "
            f"of the repository run pip install '.[{extra}]' (once published: pip install 'rnn-sentiment[{extra}]') "
            f"[{missing}]")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    selected = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(selected)
    # Known arguments first: a command whose layer is missing has no flags to parse, and must say
    # what to install rather than call its own flags unrecognized.
    args, unknown = parser.parse_known_args(argv)
    missing = getattr(args, "missing_dependency", None)
    if missing:
        print(_missing_layer_message(args.command, missing), file=sys.stderr)
        return 2
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if getattr(args, "client_command", False):
        return _run_client_command(args.action, args)
    return args.action(args)


if __name__ == "__main__":
    sys.exit(main())
