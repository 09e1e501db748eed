"""``dcstore bench``: measure what a storage stack delivers.

Subcommands: ``backend URL`` (put / get / get_range), ``compare URL URL ...``
(interleaved repetitions, ratios), ``show RESULT.json`` (re-render),
``diff A.json B.json``, and the component suites ``crypto``, ``cache`` and
``loader`` when their modules are installed.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from typing import Any

from dcstore.errors import ConfigError, DcstoreError

_COMPONENT_SUITES = (
    "dcstore.bench.crypto_suite",
    "dcstore.bench.cache_suite",
    "dcstore.bench.loader_suite",
)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="benchmark storage throughput and latency",
        description="Benchmark the stacks users open (open_store): throughput, latency "
        "percentiles, errors, verified bytes. Results can be saved (--json, --parquet, --plot), "
        "re-rendered (show) and compared (diff, compare).",
    )
    sub = parser.add_subparsers(dest="bench_command", metavar="SUITE")
    sub.required = True

    backend = sub.add_parser(
        "backend",
        help="put / get / get_range on one stack",
        description="put / get / get_range workloads on URL over sizes and loads. "
        "Example: dcstore bench backend /tmp/bench --op put,get --size 64KiB,4MiB --threads 1,4",
    )
    backend.add_argument("url", help="storage URL or path (URL;cache=..;keys=..;label=.. allowed)")
    add_storage_options(backend)
    backend.add_argument("--label", help="name for this stack in tables and results")
    backend.set_defaults(func=_backend)

    compare = sub.add_parser(
        "compare",
        help="several stacks side by side, interleaved repetitions",
        description="Run the same workloads on several stacks, interleaved within each "
        "repetition; report min/median/max and the ratio to the first stack. A stack is "
        "URL[;cache=SPEC][;keys=SPEC][;label=NAME][;retries=N].",
    )
    compare.add_argument("urls", nargs="+", metavar="STACK", help="stacks; the first is baseline")
    add_storage_options(compare)
    compare.add_argument("--reps", type=int, default=3, help="repetitions (default 3)")
    compare.set_defaults(func=_compare)

    show = sub.add_parser("show", help="re-render a saved result")
    show.add_argument("result", help="a --json result file")
    add_output_options(show, progress=False)
    show.set_defaults(func=_show)

    diff_parser = sub.add_parser("diff", help="compare two saved results (B against A)")
    diff_parser.add_argument("a", help="result A (--json file)")
    diff_parser.add_argument("b", help="result B (--json file)")
    diff_parser.set_defaults(func=_diff)

    for name in _COMPONENT_SUITES:
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name).register(sub)


def add_output_options(parser: argparse.ArgumentParser, progress: bool = True) -> None:
    out = parser.add_argument_group("output")
    out.add_argument("--json", metavar="FILE", help="write the full result as JSON ('-': stdout)")
    out.add_argument("--parquet", metavar="FILE", help="write one row per case as Parquet")
    out.add_argument("--plot", metavar="FILE.png", help="latency CDF and throughput bars")
    if progress:
        out.add_argument(
            "--no-progress", action="store_true", help="no live display (one line per case)"
        )


def add_load_options(parser: argparse.ArgumentParser) -> None:
    """Workers, loop, duration, warm-up, errors: shared by every suite."""
    load = parser.add_argument_group("load")
    load.add_argument("--threads", default="1", help="worker threads, list (default 1)")
    load.add_argument("--processes", default="1", help="worker processes, list (default 1)")
    load.add_argument(
        "--rate", type=float, help="open loop: total intended ops/s (latency from intended start)"
    )
    end = load.add_mutually_exclusive_group()
    end.add_argument("--duration", default="5s", help="measured time per case (default 5s)")
    end.add_argument("--ops", type=int, help="measured operations per case instead of a duration")
    load.add_argument("--warmup", default="1s", help="unrecorded warm-up per case (default 1s)")
    load.add_argument("--seed", type=int, default=0, help="seed of data and access order")
    load.add_argument(
        "--max-errors", type=int, default=0, help="errors tolerated before stopping (default 0)"
    )


def add_storage_options(parser: argparse.ArgumentParser) -> None:
    work = parser.add_argument_group("workload")
    work.add_argument("--op", default="put,get", help="put,get,get_range (default put,get)")
    work.add_argument("--size", default="1MiB", help="object sizes, e.g. 64KiB,1MiB,4MiB,64MiB")
    work.add_argument("--range-size", default="64KiB", help="bytes per get_range (default 64KiB)")
    work.add_argument("--objects", type=int, help="objects per size (default: fit 512 MiB, <= 64)")
    work.add_argument("--no-verify", action="store_true", help="do not check the bytes read")
    work.add_argument("--prefix", help="key prefix (default dcstore-bench/<time>-<pid>)")
    work.add_argument("--keep", action="store_true", help="keep the objects written")
    stack = parser.add_argument_group("stack (as open_store)")
    stack.add_argument("--cache", help="hot tier: 'memory' or redis://host:6379/0")
    stack.add_argument("--keys", help="key source URL: encrypt with EncryptedBackend")
    stack.add_argument(
        "-o", "--option", action="append", default=[], metavar="NAME=VALUE",
        help="backend option (repeatable)",
    )  # fmt: skip
    stack.add_argument("--retries", type=int, default=4, help="attempts for transient errors")
    add_load_options(parser)
    add_output_options(parser)


def _options(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ConfigError(f"bad --option {pair!r}: expected NAME=VALUE")
        out[name] = value
    return out


def storage_config(args: argparse.Namespace, repetitions: int = 1) -> Any:
    from dcstore.bench.storage import StorageConfig
    from dcstore.bench.units import parse_duration, parse_list, parse_size

    return StorageConfig(
        ops=tuple(parse_list(args.op, str)),
        sizes=tuple(parse_list(args.size, parse_size)),
        range_size=parse_size(args.range_size),
        threads=tuple(parse_list(args.threads, int)),
        processes=tuple(parse_list(args.processes, int)),
        rate=args.rate,
        duration=None if args.ops is not None else parse_duration(args.duration),
        op_count=args.ops,
        warmup=parse_duration(args.warmup),
        objects=args.objects,
        seed=args.seed,
        verify=not args.no_verify,
        max_errors=args.max_errors,
        repetitions=repetitions,
        prefix=args.prefix,
        keep=args.keep,
    )


def _run_storage(args: argparse.Namespace, urls: list[str], suite: str, reps: int) -> int:
    from dcstore.bench.compare import summarize
    from dcstore.bench.render import LiveReporter
    from dcstore.bench.stacks import StackSpec
    from dcstore.bench.storage import StorageBench

    defaults = {
        "cache": args.cache,
        "keys": args.keys,
        "options": _options(args.option),
        "retries": args.retries,
    }
    if getattr(args, "label", None):
        defaults["label"] = args.label
    stacks = [StackSpec.parse(url, **defaults) for url in urls]
    config = storage_config(args, reps)
    with LiveReporter(enabled=not args.no_progress) as reporter:
        bench = StorageBench(stacks, config, suite=suite, command=sys.argv, reporter=reporter)
        result, error = bench.run()
    if suite == "compare":
        result.summary = summarize(result)
    return finish(result, error, args)


def finish(result: Any, error: BaseException | None, args: argparse.Namespace) -> int:
    """Save and print ``result`` (partial ones too), then report ``error`` if any."""
    from dcstore.bench import plot, render, results

    to_stdout = getattr(args, "json", None) == "-"
    console = render.make_console(stderr=to_stdout)
    render.print_result(result, console)
    write_errors = []
    outputs = (("json", results.write_json), ("parquet", results.write_parquet))
    for name, writer in (*outputs, ("plot", plot.plot_result)):
        path = getattr(args, name, None)
        if not path:
            continue
        if to_stdout and name == "json":
            import json

            print(json.dumps(result.to_dict(), indent=1))
            continue
        try:
            writer(result, path)
            console.print(f"[dim]wrote {path}[/dim]")
        except (OSError, ValueError, DcstoreError) as exc:
            write_errors.append(f"cannot write {path}: {exc}")
    for text in write_errors:
        console.print(f"[red]error[/red]: {text}", highlight=False)
    if error is not None:
        if isinstance(error, DcstoreError | OSError | KeyboardInterrupt):
            raise error
        raise DcstoreError(f"benchmark failed: {type(error).__name__}: {error}") from error
    if write_errors:
        raise DcstoreError(write_errors[0])
    return 0


def _backend(args: argparse.Namespace) -> int:
    return _run_storage(args, [args.url], "backend", 1)


def _compare(args: argparse.Namespace) -> int:
    if args.reps < 1:
        raise ConfigError("--reps must be at least 1")
    return _run_storage(args, args.urls, "compare", args.reps)


def _show(args: argparse.Namespace) -> int:
    from dcstore.bench.results import read_json

    return finish(read_json(args.result), None, args)


def _diff(args: argparse.Namespace) -> int:
    from dcstore.bench.compare import diff
    from dcstore.bench.render import make_console
    from dcstore.bench.results import read_json

    a, b = read_json(args.a), read_json(args.b)
    table, warnings = diff(a, b)
    console = make_console()
    console.print(f"A: {args.a} ({a.started_at})\nB: {args.b} ({b.started_at})", highlight=False)
    console.print(table)
    for warning in warnings:
        console.print(f"[yellow]warning[/yellow]: {warning}", highlight=False)
    return 0
