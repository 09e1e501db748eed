"""``dcstore maintenance``: storage housekeeping that no read or write path does by itself.

``dcstore maintenance sweep URL [--older-than SECONDS]`` reclaims the chunks of puts
whose writer died before committing (Cassandra: intent rows older than the limit;
MongoDB: orphaned GridFS chunks and superseded revisions). Backends that never leave
such garbage (local, memory, HDFS) report that there is nothing to sweep.
"""

from __future__ import annotations

import argparse
import json
import sys

from dcstore.backends.registry import open_backend
from dcstore.cli.common import add_opt_flag, parse_options


def cmd_sweep(args: argparse.Namespace) -> int:
    with open_backend(args.url, **parse_options(args.option)) as backend:
        if hasattr(backend, "sweep"):
            reclaimed = backend.sweep(older_than=args.older_than)
        elif hasattr(backend, "remove_orphans"):
            reclaimed = backend.remove_orphans(
                3600.0 if args.older_than is None else args.older_than
            )
        else:
            reclaimed = None
    if args.json:
        json.dump({"url": str(backend), "reclaimed": reclaimed}, sys.stdout)
        sys.stdout.write("\n")
    elif reclaimed is None:
        print(f"{backend}: nothing to sweep (puts on this backend leave no partial data)")
    else:
        print(f"{backend}: reclaimed {reclaimed} abandoned version(s)")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("maintenance", help="storage housekeeping (sweep abandoned puts)")
    sub = p.add_subparsers(dest="maintenance_command", metavar="ACTION")
    sub.required = True
    s = sub.add_parser(
        "sweep",
        help="delete chunks of puts whose writer died before committing",
        description="Delete the chunks of puts abandoned more than --older-than seconds ago "
        "(default: the backend's abandon_after, 1 hour). Puts still in flight are younger "
        "than that and are left alone.",
    )
    s.add_argument("url", metavar="URL", help="storage URL, e.g. cassandra://host:9042/ks")
    s.add_argument("--older-than", type=float, default=None, metavar="SECONDS")
    add_opt_flag(s)
    s.add_argument("--json", action="store_true", help="machine-readable result")
    s.set_defaults(func=cmd_sweep)
