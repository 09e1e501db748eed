"""Run the coverage-guided fuzzer (atheris, libFuzzer) on one target or all of them.

    python fuzz/run.py tar --seconds 300        # one target, 5 minutes
    python fuzz/run.py --all --seconds 60       # every target in turn, a summary table
    python fuzz/run.py --all --runs 3000        # a fixed number of inputs from seed 1
                                                # (repeatable: what tests/test_fuzz.py runs)

Seeds come from fuzz/corpus/<target>/ (read only); new inputs go to a scratch
directory, removed when the run ends. A crash, a hang (-timeout) or an input that
grows the process past -rss_limit_mb writes the input to fuzz/crashes/<target>/ and
fails the run: commit it there once fixed, so tests/test_fuzz.py replays it forever.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

TIMEOUT_S = 10
"""A single input may take at most this long (the no-hang property)."""
RSS_LIMIT_MB = 2048
"""The process may not grow past this (no allocation sized by an untrusted length)."""
MAX_LEN = 64 * 1024


def budget_flags(seconds: int, runs: int | None) -> list[str]:
    """libFuzzer's stopping rule: ``runs`` inputs from a fixed seed, or ``seconds``."""
    if runs is not None:
        return [f"-runs={runs}", "-seed=1"]
    return [f"-max_total_time={seconds}"]


def fuzz_one(name: str, seconds: int, runs: int | None, scratch: str) -> None:
    """Fuzz ``name`` in this process, new inputs into ``scratch`` (atheris exits the
    process when done, so whoever made ``scratch`` removes it: ``run_child``)."""
    import atheris

    with atheris.instrument_imports(include=["dcstore"]):
        from fuzz.targets import TARGETS, check

    if name not in TARGETS:
        raise SystemExit(f"unknown target {name!r}; targets: {', '.join(TARGETS)}")
    crashes = HERE / "crashes" / name
    crashes.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.argv[0],
        *budget_flags(seconds, runs),
        f"-timeout={TIMEOUT_S}",
        f"-rss_limit_mb={RSS_LIMIT_MB}",
        f"-max_len={MAX_LEN}",
        f"-artifact_prefix={crashes}/",
        "-print_final_stats=1",
        scratch,
        str(HERE / "corpus" / name),
    ]
    atheris.Setup(argv, lambda data: check(name, data))
    atheris.Fuzz()


def run_child(
    name: str, seconds: int, runs: int | None, capture: bool
) -> subprocess.CompletedProcess[str]:
    """Fuzz ``name`` in a child process with a scratch directory removed afterwards."""
    with tempfile.TemporaryDirectory(prefix=f"dcstore-fuzz-{name}-") as scratch:
        return subprocess.run(
            [sys.executable, __file__, name, "--seconds", str(seconds), "--scratch", scratch]
            + ([] if runs is None else ["--runs", str(runs)]),
            capture_output=capture,
            text=True,
            check=False,
        )


def fuzz_all(names: list[str], seconds: int, runs: int | None = None) -> int:
    """Fuzz each target in a child process; print executions and crashes; 1 if any crashed."""
    failed = 0
    print(f"{'target':<10} {'executions':>11} {'exec/s':>8} {'coverage':>9} {'result':>8}")
    for name in names:
        started = time.monotonic()
        done = run_child(name, seconds, runs, capture=True)
        elapsed = time.monotonic() - started
        log = done.stdout + done.stderr
        executed = re.findall(r"stat::number_of_executed_units: (\d+)", log)
        cov = re.findall(r"cov: (\d+)", log)
        executions = int(executed[-1]) if executed else 0
        result = "ok" if done.returncode == 0 else f"CRASH {done.returncode}"
        failed |= done.returncode != 0
        print(
            f"{name:<10} {executions:>11} {executions / max(elapsed, 1e-9):>8.0f}"
            f" {cov[-1] if cov else '-':>9} {result:>8}"
        )
        if done.returncode != 0:
            print(log[-3000:], file=sys.stderr)
    return int(failed)


TARGET_NAMES = ["tar", "header", "decrypt", "manifest", "tokens", "keyfile", "url", "resp"]
"""fuzz.targets.TARGETS, named here: importing it would import dcstore uninstrumented."""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", nargs="?", help=f"one of: {', '.join(TARGET_NAMES)}")
    parser.add_argument("--all", action="store_true", help="every target in turn")
    parser.add_argument("--seconds", type=int, default=60, help="per target (default 60)")
    parser.add_argument("--runs", type=int, help="this many inputs from seed 1 instead")
    parser.add_argument("--scratch", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.all:
        return fuzz_all(TARGET_NAMES, args.seconds, args.runs)
    if not args.target:
        parser.error("name a target or pass --all")
    if args.scratch is None:
        return run_child(args.target, args.seconds, args.runs, capture=False).returncode
    fuzz_one(args.target, args.seconds, args.runs, args.scratch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
