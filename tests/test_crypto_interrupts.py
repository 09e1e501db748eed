"""An interrupt during a threaded decrypt never lets a pool thread write into freed memory.

Regression for a use-after-free: ``KeyboardInterrupt`` while the main thread waited for
decrypt tasks discarded the output ``bytes`` that pool threads were still filling through
a ctypes view (heap corruption, SIGSEGV). The worker runs under glibc's heap checks
(``MALLOC_CHECK_``, ``MALLOC_PERTURB_``) and CPython's debug allocator.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("crypto_interrupt_worker.py")
HANG_S = 150


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_interrupts_of_threaded_reads_under_a_memory_checker(seed: int) -> None:
    env = {
        **os.environ,
        "MALLOC_CHECK_": "3",
        "MALLOC_PERTURB_": "165",
        "PYTHONMALLOC": "malloc_debug",
        "PYTHONFAULTHANDLER": "1",
    }
    proc = subprocess.Popen(
        [sys.executable, str(WORKER), str(seed), "150"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        out, err = proc.communicate(timeout=HANG_S)
    except subprocess.TimeoutExpired:  # hung: faulthandler dumps every thread on SIGABRT
        proc.send_signal(signal.SIGABRT)
        out, err = proc.communicate()
        pytest.fail(f"the worker hung for {HANG_S} s (8 s usually); its threads:\n{err[-8000:]}")
    assert proc.returncode == 0, out + err[-3000:]
    assert out.startswith("ok "), out
    counts = dict(part.split("=") for part in out.split()[1:])
    assert int(counts["interrupted"]) > 0
