"""The tamper campaign (bench/tamper_campaign.py), small: every case is caught by the real
``dcstore get`` and ``dcstore verify`` (exit 4 or 6, one line, no output file)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from dcstore.crypto.kek import KEY_TYPES

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "tamper_campaign.py"


# Every 9th header byte flipped; rsa headers (417 bytes) every 41st, for about as
# many header cases as the others (each case runs the CLI twice, with RSA unwraps).
HEADER_STRIDE = {"aes": 9, "rsa": 41, "x25519": 9}


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_every_tamper_case_is_caught_by_get_and_verify(key_type: str) -> None:
    spec = importlib.util.spec_from_file_location("tamper_campaign", SCRIPT)
    assert spec and spec.loader
    campaign = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(campaign)
    tally = campaign.run(
        segment=64, flips=1, seed=1, header_stride=HEADER_STRIDE[key_type], key_type=key_type
    )
    missed = {kind: n for (kind, caught), n in tally.items() if not caught}
    assert not missed, missed
    kinds = {kind for kind, _ in tally}
    assert {"16 bytes appended", "truncated at a segment boundary", "renamed"} <= kinds
    assert sum(tally.values()) > 100


def test_every_tamper_case_is_caught_when_get_streams_ranges(monkeypatch) -> None:
    """The same campaign with ``dcstore get`` reading 64-byte ranges (one segment each):
    every object of more than one segment is streamed range by range."""
    from dcstore.cli import objects

    monkeypatch.setattr(objects, "GET_CHUNK_BYTES", 64)
    spec = importlib.util.spec_from_file_location("tamper_campaign", SCRIPT)
    assert spec and spec.loader
    campaign = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(campaign)
    tally = campaign.run(segment=64, flips=1, seed=2, header_stride=9, key_type="aes")
    missed = {kind: n for (kind, caught), n in tally.items() if not caught}
    assert not missed, missed
    assert sum(tally.values()) > 100
