"""``dcstore bench``: measure what a storage stack delivers.

Subcommands: ``backend URL`` (put / get / get_range), ``compare URL URL ...``
(interleaved repetitions, ratios), ``show RESULT.json`` (re-render),
``diff A.json B.json``, and the component suites ``crypto`` (our format vs
raw AES-GCM), ``cache`` (hit / miss paths through the hot tier) and ``loader``
(ShardedDataset + DataLoader throughput, data-wait, memory).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from dcstore.cli.bench_options import (
    add_load_options,
    add_output_options,
    add_stack_options,
    add_storage_options,
    storage_config,
    workload_fields,
)
from dcstore.cli.common import parse_options
from dcstore.errors import ConfigError, DcstoreError


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

    crypto = sub.add_parser(
        "crypto",
        help="EncryptedBackend vs raw AES-GCM on the same buffers",
        description="Encrypt / decrypt MB/s and latency of dcstore's encrypted format "
        "(EncryptedBackend over an in-process store) next to one-shot cryptography AESGCM, "
        "on the same buffers, interleaved; the ratio is per repetition.",
    )
    crypto.add_argument("--size", default="64KiB,1MiB,4MiB", help="buffer sizes")
    crypto.add_argument("--direction", default="encrypt,decrypt", help="encrypt,decrypt")
    crypto.add_argument("--buffers", type=int, default=4, help="distinct buffers per size")
    crypto.add_argument("--segment-size", help="dcstore segment size (default: the format's)")
    crypto.add_argument(
        "--segment-threads", type=int, default=1, help="EncryptedBackend threads per object"
    )
    crypto.add_argument("--reps", type=int, default=3, help="repetitions (default 3)")
    crypto.add_argument("--no-verify", action="store_true", help="do not check decryptions")
    add_load_options(crypto, duration="3s", warmup="0.5s", rate=False)
    add_output_options(crypto)
    crypto.set_defaults(func=_crypto)

    cache = sub.add_parser(
        "cache",
        help="origin / miss / hit read paths through the hot tier",
        description="Reads of the same objects from the origin, through the cache when "
        "every read misses, and when every read hits; hit ratio and bytes from cache "
        "and origin as CachedBackend counted them. Worker threads only.",
    )
    cache.add_argument("url", help="origin storage URL or path")
    cache.add_argument("--cache", default="memory", help="tier: 'memory' or redis://host:port/db")
    cache.add_argument("--keys", help="key source URL: stack EncryptedBackend on top")
    cache.add_argument("--op", default="get", help="get,get_range (default get)")
    cache.add_argument("--path", default="origin,miss,hit", help="origin,miss,hit")
    cache.add_argument("--size", default="1MiB", help="object sizes")
    cache.add_argument("--range-size", default="64KiB", help="bytes per get_range")
    cache.add_argument("--objects", type=int, default=16, help="objects per size")
    cache.add_argument("--reps", type=int, default=1, help="repetitions (default 1)")
    cache.add_argument("--no-verify", action="store_true", help="do not check the bytes read")
    cache.add_argument("--prefix", help="key prefix (default dcstore-bench/<time>-<pid>)")
    add_stack_options(cache, cache_and_keys=False)
    add_load_options(cache, duration="3s", warmup="0.5s", rate=False, processes=False)
    add_output_options(cache)
    cache.set_defaults(func=_cache)

    loader = sub.add_parser(
        "loader",
        help="ShardedDataset + DataLoader: samples/s, data-wait, memory",
        description="Iterate a packed dataset as a training loop does (batched in the "
        "workers) and report samples/s, MB/s, time to first batch, data-wait % at a "
        "simulated step time, and peak RSS of the main process and the workers. "
        "--synthetic N packs N random samples first (at a location without a dataset).",
    )
    loader.add_argument("url", help="dataset location (URL or path)")
    loader.add_argument("--synthetic", type=int, metavar="N", help="pack N samples first")
    loader.add_argument("--sample-size", default="100KiB", help="synthetic sample size")
    loader.add_argument("--shard-size", default="64MiB", help="synthetic shard size")
    loader.add_argument("--workers", default="2", help="DataLoader workers, list (default 2)")
    loader.add_argument("--batch-size", type=int, default=64, help="samples per batch")
    loader.add_argument("--step", default="0", help="simulated step times, list (e.g. 0,20ms)")
    end = loader.add_mutually_exclusive_group()
    end.add_argument("--duration", default="10s", help="time per case ('0': whole epoch)")
    end.add_argument("--batches", type=int, help="batches per case instead of a duration")
    loader.add_argument(
        "--prefetch-threads", type=int, default=None,
        help="per worker (default: the dataset's choice, auto_prefetch_threads)",
    )  # fmt: skip
    loader.add_argument("--prefetch-bytes", default="128MiB", help="read-ahead per worker")
    loader.add_argument("--no-shuffle", action="store_true", help="read in stored order")
    loader.add_argument("--seed", type=int, default=0, help="shuffle and data seed")
    loader.add_argument("--keep", action="store_true", help="keep the synthetic dataset")
    loader.add_argument("--no-verify", action="store_true", help="do not check samples")
    loader.add_argument(
        "--device", help="feed batches through DeviceLoader to this device (cuda, cpu)"
    )
    add_stack_options(loader)
    add_output_options(loader)
    loader.set_defaults(func=_loader)


def _run_storage(args: argparse.Namespace, urls: list[str], suite: str, reps: int) -> int:
    label = {"label": args.label} if getattr(args, "label", None) else {}
    return run_stacks([_stack(args, url, **label) for url in urls], args, suite, reps)


def run_stacks(stacks: list[Any], args: argparse.Namespace, suite: str, reps: int) -> int:
    """Run the storage workloads of ``args`` on ``stacks``; save and print; exit code.

    Used by ``bench backend`` / ``bench compare`` and by the raw-client comparison
    scripts in ``bench/`` (which add stacks of their own).
    """
    from dcstore.bench.compare import summarize
    from dcstore.bench.render import LiveReporter
    from dcstore.bench.storage import StorageBench

    config = storage_config(args, reps)
    with LiveReporter(live=not args.no_progress) as reporter:
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
    # the last one is raised (and printed once) unless the run's own error is
    for text in write_errors if error is not None else write_errors[:-1]:
        console.print(f"[red]error[/red]: {text}", highlight=False)
    if error is not None:
        if isinstance(error, DcstoreError | OSError | KeyboardInterrupt):
            raise error
        raise DcstoreError(f"benchmark failed: {type(error).__name__}: {error}") from error
    if write_errors:
        raise DcstoreError(write_errors[-1])
    return 0


def _backend(args: argparse.Namespace) -> int:
    return _run_storage(args, [args.url], "backend", 1)


def _compare(args: argparse.Namespace) -> int:
    if args.reps < 1:
        raise ConfigError("--reps must be at least 1")
    return _run_storage(args, args.urls, "compare", args.reps)


def _stack(args: argparse.Namespace, url: str, **overrides: Any) -> Any:
    from dcstore.bench.stacks import StackSpec

    defaults = {
        "cache": getattr(args, "cache", None),
        "keys": getattr(args, "keys", None),
        "options": parse_options(args.option),
        "retries": args.retries,
        **overrides,
    }
    return StackSpec.parse(url, **defaults)


def _crypto(args: argparse.Namespace) -> int:
    from dcstore.bench.crypto_suite import CryptoConfig, run_crypto
    from dcstore.bench.render import LiveReporter
    from dcstore.bench.units import parse_list
    from dcstore.units import parse_duration, parse_size

    config = CryptoConfig(
        sizes=tuple(parse_list(args.size, parse_size)),
        directions=tuple(parse_list(args.direction, str)),
        threads=tuple(parse_list(args.threads, int)),
        processes=tuple(parse_list(args.processes, int)),
        duration=None if args.ops is not None else parse_duration(args.duration),
        op_count=args.ops,
        warmup=parse_duration(args.warmup),
        buffers=args.buffers,
        seed=args.seed,
        repetitions=args.reps,
        segment_size=parse_size(args.segment_size) if args.segment_size else None,
        segment_threads=args.segment_threads,
        verify=not args.no_verify,
        max_errors=args.max_errors,
    )
    with LiveReporter(live=not args.no_progress) as reporter:
        result, error = run_crypto(config, sys.argv, reporter)
    return finish(result, error, args)


def _cache(args: argparse.Namespace) -> int:
    from dcstore.bench.cache_suite import CacheBench, CacheConfig
    from dcstore.bench.render import LiveReporter
    from dcstore.bench.units import parse_list

    config = CacheConfig(
        **workload_fields(args),
        cache=args.cache,
        paths=tuple(parse_list(args.path, str)),
        repetitions=args.reps,
    )
    stack = _stack(args, args.url, cache=None)
    with LiveReporter(live=not args.no_progress) as reporter:
        result, error = CacheBench(stack, config, sys.argv, reporter).run()
    return finish(result, error, args)


def _loader(args: argparse.Namespace) -> int:
    from dcstore.bench.loader_suite import LoaderBench, LoaderConfig
    from dcstore.bench.render import LiveReporter
    from dcstore.bench.units import parse_list
    from dcstore.units import parse_duration, parse_size

    duration = None if args.batches is not None else parse_duration(args.duration)
    config = LoaderConfig(
        workers=tuple(parse_list(args.workers, int)),
        batch_size=args.batch_size,
        step_times=tuple(parse_list(args.step, parse_duration)),
        duration=duration or None,
        batches=args.batches,
        prefetch_threads=args.prefetch_threads,
        prefetch_bytes=parse_size(args.prefetch_bytes),
        shuffle=not args.no_shuffle,
        seed=args.seed,
        synthetic=args.synthetic,
        sample_size=parse_size(args.sample_size),
        shard_size=parse_size(args.shard_size),
        keep=args.keep,
        verify=not args.no_verify,
        device=args.device,
    )
    with LiveReporter(live=not args.no_progress) as reporter:
        result, error = LoaderBench(_stack(args, args.url), config, sys.argv, reporter).run()
    return finish(result, error, args)


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
