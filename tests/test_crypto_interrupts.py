"""An interrupt during a threaded decrypt never lets a pool thread write into freed memory.

Regression for a use-after-free: ``KeyboardInterrupt`` while the main thread waited for
decrypt tasks discarded the output ``bytes`` that pool threads were still filling through
a ctypes view (heap corruption, SIGSEGV). The worker runs under glibc's heap checks
(``MALLOC_CHECK_``, ``MALLOC_PERTURB_``) and CPython's debug allocator.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("crypto_interrupt_worker.py")


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_interrupts_of_threaded_reads_under_a_memory_checker(seed: int) -> None:
    env = {
        **os.environ,
        "MALLOC_CHECK_": "3",
        "MALLOC_PERTURB_": "165",
        "PYTHONMALLOC": "malloc_debug",
        "PYTHONFAULTHANDLER": "1",
    }
    proc = subprocess.run(
        [sys.executable, str(WORKER), str(seed), "150"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert proc.stdout.startswith("ok "), proc.stdout
    counts = dict(part.split("=") for part in proc.stdout.split()[1:])
    assert int(counts["interrupted"]) > 0
