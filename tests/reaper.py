"""Private test servers are stopped even when pytest itself is killed.

A fixture that starts a server daemon calls :func:`stop_when_gone` with the command
that stops it: a small detached process waits for this pytest process to be gone
(``kill -9``, a CI timeout, a closed terminal) and then runs that command, so an
interrupted run leaves no server behind. On a normal teardown the fixture stops the
server itself and :func:`dismiss` ends the watcher.
"""

from __future__ import annotations

import os
import subprocess
import sys

_WATCH = """
import os, subprocess, sys, time
owner = int(sys.argv[1])
while True:
    try:
        os.kill(owner, 0)
    except ProcessLookupError:
        break
    time.sleep(0.5)
subprocess.run(sys.argv[2:], timeout=60)
"""


def stop_when_gone(command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    """A watcher that runs ``command`` (with ``env``) once this process has exited."""
    return subprocess.Popen(
        [sys.executable, "-c", _WATCH, str(os.getpid()), *command],
        env=env, start_new_session=True,
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def dismiss(watcher: subprocess.Popen[bytes]) -> None:
    """End a watcher whose server was stopped normally."""
    watcher.kill()
    watcher.wait()
