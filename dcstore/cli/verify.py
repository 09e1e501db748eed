"""``dcstore verify URL``: authenticate every segment of every object, report all failures."""

from __future__ import annotations

import argparse
import sys

from dcstore.cli.common import add_store_options, human_size, print_json
from dcstore.cli.keys import _encrypted_store
from dcstore.cli.main import EXIT_ACCESS, EXIT_FAILURE, EXIT_INTEGRITY
from dcstore.crypto.verify import verify


def cmd_verify(args: argparse.Namespace) -> int:
    checked = total = 0
    failures = []
    with _encrypted_store(args.store, args) as store:
        for check in verify(store, args.prefix):
            checked += 1
            total += check.size
            if check.ok:
                if args.verbose:
                    print(f"ok      {check.key}")
                continue
            failures.append(check)
            if not args.json:
                print(f"FAILED  {check.key}: [{check.kind}] {check.problem}", flush=True)
    if args.json:
        print_json(
            {
                "checked": checked,
                "bytes": total,
                "failed": [
                    {"key": f.key, "kind": f.kind, "problem": f.problem, "segments": f.bad_segments}
                    for f in failures
                ],
            }
        )
    else:
        print(
            f"checked {checked} object(s), {human_size(total)}: {len(failures)} failed",
            file=sys.stderr,
        )
    kinds = {f.kind for f in failures}
    if "integrity" in kinds:
        return EXIT_INTEGRITY
    if "key" in kinds:
        return EXIT_ACCESS
    return EXIT_FAILURE if failures else 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "verify", help="check every segment of every encrypted object; report all failures"
    )
    p.add_argument("store", metavar="URL", help="storage URL of encrypted objects")
    p.add_argument("--prefix", default="", help="only objects under this prefix")
    p.add_argument("--json", action="store_true", help="machine-readable report")
    p.add_argument("-v", "--verbose", action="store_true", help="also list intact objects")
    add_store_options(p)
    p.set_defaults(func=cmd_verify)
