"""``dcstore cache stats URL`` and ``dcstore cache clear URL``: the shared hot tier.

``URL`` is the cache tier's URL (``redis://host:6379/0?namespace=...`` or
``memcached://h1:11211,h2:11211?namespace=...``); the
statistics are those every process using that namespace has reported.
``--password-file`` (or ``DCSTORE_CACHE_PASSWORD_FILE``, when the URL has no
password) supplies a Redis password without putting it on the command line.
"""

from __future__ import annotations

import argparse
import os
from urllib.parse import quote, urlsplit

from dcstore.cache import CacheTier, LruTier, open_cache_tier, with_ratio
from dcstore.cli.common import print_json
from dcstore.errors import ConfigError

_LABELS = {
    "hits": "hits",
    "misses": "misses (origin reads)",
    "hit_ratio": "hit ratio",
    "bytes_from_cache": "bytes from cache",
    "bytes_from_origin": "bytes from origin",
    "single_flight_waits": "single-flight waits",
    "errors": "errors",
    "not_admitted": "not admitted (too large)",
}


def _with_password_file(url: str, given: str | None) -> str:
    """``url`` with ``password_file`` set from ``--password-file`` (``given``), else from
    ``DCSTORE_CACHE_PASSWORD_FILE`` unless the URL has a password of its own (what the
    command line says wins over the environment); the path quoted, so ``#``, ``%`` or
    ``+`` in it stay part of it."""
    path = given or os.environ.get("DCSTORE_CACHE_PASSWORD_FILE")
    if not path or "password_file=" in url or (given is None and urlsplit(url).password):
        return url
    return url + ("&" if "?" in url else "?") + "password_file=" + quote(path, safe="/")


def _open(args: argparse.Namespace) -> CacheTier:
    tier = open_cache_tier(_with_password_file(args.url, args.password_file))
    if isinstance(tier, LruTier):
        raise ConfigError(
            "the in-process cache has no shared state; give a redis:// or memcached:// URL"
        )
    return tier


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def cmd_stats(args: argparse.Namespace) -> int:
    tier = _open(args)
    try:
        stats: dict[str, float] = dict(with_ratio(tier.read_stats()))
        info = getattr(tier, "server_info", None)  # shared tiers (their clients are optional)
        server = info() if info is not None else None
    finally:
        tier.close()
    if args.json:
        print_json({**stats, "server": server})
        print()
        return 0
    print(f"cache {tier}")
    for name, label in _LABELS.items():
        value = stats[name]
        if name == "hit_ratio":
            text = f"{100 * value:.1f}%"
        elif name.startswith("bytes"):
            text = f"{_human_bytes(value)} ({int(value)})"
        else:
            text = str(int(value))
        print(f"  {label:<26} {text}")
    if server is not None:
        limit = _human_bytes(server["maxmemory"]) if server["maxmemory"] else "no limit"
        print(
            f"server ({server['nodes']} node(s)): {_human_bytes(server['used_memory'])} used "
            f"of maxmemory {limit}, policy {server['maxmemory_policy']}, "
            f"{server['evicted_keys']} keys evicted"
        )
        evicts = str(server["maxmemory_policy"]).startswith(("allkeys-", "memcached-"))
        if not server["maxmemory"] or not evicts:
            print(
                "  warning: set maxmemory and an allkeys-lru/allkeys-lfu policy "
                "(docs/cache.md, Redis server settings)"
            )
    return 0


def cmd_clear(args: argparse.Namespace) -> int:
    tier = _open(args)
    try:
        removed = tier.clear()
    finally:
        tier.close()
    print(f"removed {removed} keys of namespace {tier.namespace!r} from {tier}")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cache = sub.add_parser("cache", help="statistics and clearing of the shared hot tier")
    cmds = cache.add_subparsers(dest="cache_command", metavar="ACTION")
    cmds.required = True
    for name, func, text in (
        ("stats", cmd_stats, "hits, misses, bytes, hit ratio, single-flight waits, errors"),
        ("clear", cmd_clear, "remove every key of the tier's namespace (chunks, leases, stats)"),
    ):
        p = cmds.add_parser(name, help=text)
        p.add_argument(
            "url", help="cache URL, e.g. redis://host:6379/0 or memcached://h1:11211,h2:11211"
        )
        p.add_argument("--password-file", help="file holding the Redis password")
        if name == "stats":
            p.add_argument("--json", action="store_true")
        p.set_defaults(func=func)
