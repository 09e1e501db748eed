"""Suite-wide settings: hypothesis profiles, an exit watchdog; server URLs live in serverenv.py."""

from __future__ import annotations

import faulthandler
import os
import signal
import sys

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=25, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


# scripts/test.sh stops a run that outlives its limit with SIGTERM: show where it was.
faulthandler.register(signal.SIGTERM, file=sys.__stderr__, all_threads=True, chain=True)

#: Seconds the interpreter may take to exit after the last test (threads, children, atexit).
EXIT_GRACE_S = 120


def pytest_unconfigure(config) -> None:
    """If the process has not exited ``EXIT_GRACE_S`` after the session (a thread or child
    that never ends), print every thread's stack and exit with status 1: a hang fails the
    run in minutes, with the place it hangs, instead of at CI's time limit."""
    faulthandler.dump_traceback_later(EXIT_GRACE_S, exit=True, file=sys.__stderr__)
