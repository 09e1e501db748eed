"""Command-line options shared by the ``dcstore bench`` subcommands, and the storage
suite's configuration built from them."""

from __future__ import annotations

import argparse
from typing import Any


def add_output_options(parser: argparse.ArgumentParser, progress: bool = True) -> None:
    out = parser.add_argument_group("output")
    out.add_argument("--json", metavar="FILE", help="write the full result as JSON ('-': stdout)")
    out.add_argument("--parquet", metavar="FILE", help="write one row per case as Parquet")
    out.add_argument(
        "--plot",
        metavar="FILE.png",
        help="figure: latency CDFs and throughput bars (loader: samples/s, data-wait %%)",
    )
    if progress:
        out.add_argument(
            "--no-progress", action="store_true", help="no live display (one line per case)"
        )


def add_load_options(
    parser: argparse.ArgumentParser,
    *,
    duration: str = "5s",
    warmup: str = "1s",
    rate: bool = True,
    processes: bool = True,
) -> None:
    """Workers, loop, duration, warm-up, errors."""
    load = parser.add_argument_group("load")
    load.add_argument("--threads", default="1", help="worker threads, list (default 1)")
    if processes:
        load.add_argument("--processes", default="1", help="worker processes, list (default 1)")
    if rate:
        load.add_argument(
            "--rate", type=float, help="open loop: total ops/s (latency from intended start)"
        )
    end = load.add_mutually_exclusive_group()
    end.add_argument("--duration", default=duration, help=f"measured time per case ({duration})")
    end.add_argument("--ops", type=int, help="operations per case instead of a duration")
    load.add_argument("--warmup", default=warmup, help=f"unrecorded warm-up per case ({warmup})")
    load.add_argument("--seed", type=int, default=0, help="seed of data and access order")
    load.add_argument(
        "--max-errors", type=int, default=0, help="errors tolerated before stopping (default 0)"
    )


def add_stack_options(parser: argparse.ArgumentParser, cache_and_keys: bool = True) -> None:
    stack = parser.add_argument_group("stack (as open_store)")
    if cache_and_keys:
        stack.add_argument("--cache", help="hot tier: 'memory' or redis://host:6379/0")
        stack.add_argument("--keys", help="key source URL: encrypt with EncryptedBackend")
    stack.add_argument(
        "-o", "--option", action="append", default=[], metavar="NAME=VALUE",
        help="backend option (repeatable)",
    )  # fmt: skip
    stack.add_argument("--retries", type=int, default=4, help="attempts for transient errors")


def add_storage_options(parser: argparse.ArgumentParser) -> None:
    work = parser.add_argument_group("workload")
    work.add_argument("--op", default="put,get", help="put,get,get_range (default put,get)")
    work.add_argument("--size", default="1MiB", help="object sizes, e.g. 64KiB,1MiB,4MiB,64MiB")
    work.add_argument("--range-size", default="64KiB", help="bytes per get_range (default 64KiB)")
    work.add_argument("--objects", type=int, help="objects per size (default: fit 512 MiB, <= 64)")
    work.add_argument("--no-verify", action="store_true", help="do not check the bytes read")
    work.add_argument("--prefix", help="key prefix (default dcstore-bench/<time>-<pid>)")
    work.add_argument("--keep", action="store_true", help="keep the objects written")
    add_stack_options(parser)
    add_load_options(parser)
    add_output_options(parser)


def workload_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The config fields the storage and cache suites both take from the shared options."""
    from dcstore.bench.units import parse_list
    from dcstore.units import parse_duration, parse_size

    return {
        "ops": tuple(parse_list(args.op, str)),
        "sizes": tuple(parse_list(args.size, parse_size)),
        "range_size": parse_size(args.range_size),
        "threads": tuple(parse_list(args.threads, int)),
        "duration": None if args.ops is not None else parse_duration(args.duration),
        "op_count": args.ops,
        "warmup": parse_duration(args.warmup),
        "objects": args.objects,
        "seed": args.seed,
        "verify": not args.no_verify,
        "max_errors": args.max_errors,
        "prefix": args.prefix,
    }


def storage_config(args: argparse.Namespace, repetitions: int = 1) -> Any:
    from dcstore.bench.storage import StorageConfig
    from dcstore.bench.units import parse_list

    return StorageConfig(
        **workload_fields(args),
        processes=tuple(parse_list(args.processes, int)),
        rate=args.rate,
        repetitions=repetitions,
        keep=args.keep,
    )
