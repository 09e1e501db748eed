"""The ``dcstore`` command line: argument parsing, global flags, one-line errors.

Subcommands live in sibling modules that expose ``register(subparsers)``;
each parser sets ``func(args) -> int``. Modules listed in
:data:`SUBCOMMAND_MODULES` that are not present are skipped, so commands
appear as their components land. Every failure is printed as one line,
``dcstore: error: ...``, and exits with the code of its class
(:mod:`dcstore.cli.exits`); ``--debug`` shows the traceback too, with the same exit code.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys
import traceback
from collections.abc import Sequence
from typing import NoReturn, cast

from dcstore import __version__, errors
from dcstore.cli.arenas import limit_arenas
from dcstore.cli.exits import (
    EXIT_ACCESS,
    EXIT_CONFIG,
    EXIT_FAILURE,
    EXIT_INTEGRITY,
    EXIT_INTERRUPTED,
    EXIT_NO_SPACE,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    describe,
    exit_code_for,
    missing_extra,
)

__all__ = [
    "EXIT_ACCESS",
    "EXIT_CONFIG",
    "EXIT_FAILURE",
    "EXIT_INTEGRITY",
    "EXIT_INTERRUPTED",
    "EXIT_NOT_FOUND",
    "EXIT_NO_SPACE",
    "EXIT_OK",
    "EXIT_UNAVAILABLE",
    "build_parser",
    "entry",
    "main",
]

SUBCOMMAND_MODULES = (
    "dcstore.cli.objects",
    "dcstore.cli.copy",
    "dcstore.cli.demo",
    "dcstore.cli.pack",
    "dcstore.cli.bench",
    "dcstore.cli.keys",
    "dcstore.cli.verify",
    "dcstore.cli.cache",
    "dcstore.cli.maintenance",
)

NOISY_DRIVER_LOGGERS = ("cassandra", "pymongo", "hdfs_native", "redis")
"""Drivers that log tracebacks for conditions dcstore reports in one line."""


class Parser(argparse.ArgumentParser):
    """Usage errors as one line too (subcommand parsers inherit this class)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_CONFIG, f"dcstore: error: {message} (see: {self.prog} --help)\n")


def _add_global_flags(parser: argparse.ArgumentParser, *, default: object) -> None:
    parser.add_argument(
        "--debug", action="store_true", default=default, help="show tracebacks and debug logs"
    )
    parser.add_argument("--version", action="version", version=f"dcstore {__version__}")


def _subparsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):  # aliases share a parser
                found += [child, *_subparsers(child)]
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="dcstore",
        description="Storage and caching for AI training data: HDFS, Cassandra, "
        "MongoDB and local disk, encrypted, behind a Redis hot tier.",
    )
    _add_global_flags(parser, default=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in SUBCOMMAND_MODULES:
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name).register(sub)
    for child in _subparsers(parser):
        # SUPPRESS: a flag given before the subcommand is not reset by the subparser.
        _add_global_flags(child, default=argparse.SUPPRESS)
    return parser


def _deepest_parser(parser: argparse.ArgumentParser, argv: Sequence[str]) -> Parser:
    """The (sub)command parser the words of ``argv`` select, e.g. ``keys rotate``'s."""
    for word in argv:
        children = {
            name: child
            for action in parser._actions
            if isinstance(action, argparse._SubParsersAction)
            for name, child in action.choices.items()
        }
        if word in children:
            parser = children[word]
    return cast("Parser", parser)


def all_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """``parser`` and every (nested) subcommand parser below it."""
    return [parser, *_subparsers(parser)]


def _configure_logging(debug: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not debug:
        for noisy in NOISY_DRIVER_LOGGERS:
            logging.getLogger(noisy).setLevel(logging.CRITICAL + 1)


def _fail(exc: BaseException) -> int:
    print(f"dcstore: error: {describe(exc)}", file=sys.stderr)
    return exit_code_for(exc)


def main(argv: Sequence[str] | None = None, *, own_process: bool = False) -> int:
    """Run one command; ``own_process``: this process is the command's alone (the console
    script), so a streaming command may tune its allocator (:mod:`dcstore.cli.arenas`)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # said by the subcommand's parser, so the hint names its --help
        _deepest_parser(parser, sys.argv[1:] if argv is None else argv).error(
            f"unrecognized arguments: {' '.join(extra)}"
        )
    _configure_logging(args.debug)
    if own_process and getattr(args, "streams", False):
        limit_arenas()
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("dcstore: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_OK
    except (errors.DcstoreError, OSError) as exc:
        if args.debug:
            traceback.print_exc()  # then the same line and exit code as without --debug
        return _fail(exc)
    except ImportError as exc:
        hint = missing_extra(exc)
        if hint is None:
            raise
        if args.debug:
            traceback.print_exc()
        return _fail(hint)


def entry() -> None:
    """Console-script entry point."""
    sys.exit(main(own_process=True))
