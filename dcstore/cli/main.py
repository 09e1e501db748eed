"""The ``dcstore`` command line: argument parsing, exit codes, one-line errors.

Subcommands live in sibling modules that expose ``register(subparsers)``;
each parser sets ``func(args) -> int``. Modules listed in
:data:`SUBCOMMAND_MODULES` that are not present are skipped, so commands
appear as their components land.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import importlib.util
import logging
import sys
from collections.abc import Sequence

from dcstore import errors

SUBCOMMAND_MODULES = (
    "dcstore.cli.objects",
    "dcstore.cli.demo",
    "dcstore.cli.pack",
    "dcstore.cli.bench",
    "dcstore.cli.keys",
    "dcstore.cli.verify",
    "dcstore.cli.cache",
    "dcstore.cli.maintenance",
)

NOISY_DRIVER_LOGGERS = ("cassandra", "pymongo", "hdfs_native")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2
EXIT_NOT_FOUND = 3
EXIT_ACCESS = 4
EXIT_UNAVAILABLE = 5
EXIT_INTEGRITY = 6
EXIT_NO_SPACE = 7
EXIT_INTERRUPTED = 130

_EXIT_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (errors.ConfigError, EXIT_CONFIG),
    (errors.NotFoundError, EXIT_NOT_FOUND),
    (errors.KeyAccessError, EXIT_ACCESS),
    (errors.BackendUnavailableError, EXIT_UNAVAILABLE),
    (errors.IntegrityError, EXIT_INTEGRITY),
    (errors.StorageFullError, EXIT_NO_SPACE),
    (FileNotFoundError, EXIT_NOT_FOUND),
    (PermissionError, EXIT_ACCESS),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dcstore",
        description="Storage and caching for AI training data: HDFS, Cassandra, "
        "MongoDB and local disk, encrypted, behind a Redis hot tier.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in SUBCOMMAND_MODULES:
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name).register(sub)
    return parser


def exit_code_for(exc: BaseException) -> int:
    """The exit code the CLI uses for an exception."""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return EXIT_NO_SPACE
    for cls, code in _EXIT_CODES:
        if isinstance(exc, cls):
            return code
    return EXIT_FAILURE


def describe(exc: BaseException) -> str:
    """One line naming what went wrong."""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        where = f" ({exc.filename})" if exc.filename else ""
        return f"no space left on device{where}"
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not args.debug:
        # Drivers log whole tracebacks at WARNING for conditions dcstore reports in one line.
        for noisy in NOISY_DRIVER_LOGGERS:
            logging.getLogger(noisy).setLevel(logging.ERROR)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("dcstore: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_OK
    except (errors.DcstoreError, OSError) as exc:
        if args.debug:
            raise
        print(f"dcstore: error: {describe(exc)}", file=sys.stderr)
        return exit_code_for(exc)


def entry() -> None:
    """Console-script entry point."""
    sys.exit(main())
