"""The tamper campaign (bench/tamper_campaign.py), small: every case is caught by the real
``dcstore get`` and ``dcstore verify`` (exit 4 or 6, one line, no output file)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "tamper_campaign.py"


def test_every_tamper_case_is_caught_by_get_and_verify() -> None:
    spec = importlib.util.spec_from_file_location("tamper_campaign", SCRIPT)
    assert spec and spec.loader
    campaign = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(campaign)
    tally = campaign.run(segment=64, flips=1, seed=1, header_stride=9)
    missed = {kind: n for (kind, caught), n in tally.items() if not caught}
    assert not missed, missed
    kinds = {kind for kind, _ in tally}
    assert {"16 bytes appended", "truncated at a segment boundary", "renamed"} <= kinds
    assert sum(tally.values()) > 100
