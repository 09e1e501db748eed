"""Every benchmark script under bench/ imports and parses its arguments against this
checkout (``--help``), so an API change cannot leave one broken unnoticed. What they
measure is recorded in bench/results/ with the command that made each figure;
tests/test_crypto_tamper_campaign.py runs the tamper campaign for real."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p.name for p in (REPO / "bench").glob("*.py"))


def test_every_script_is_listed() -> None:
    assert len(SCRIPTS) >= 15, SCRIPTS


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_imports_and_parses_arguments(script: str) -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / script), "--help"],
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage:" in done.stdout
