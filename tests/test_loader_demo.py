"""``dcstore demo`` runs end to end (small size) and reports its figures."""

from __future__ import annotations

import pytest

from dcstore.cli.main import main


@pytest.mark.parametrize("loader", ["ring", "dataloader"])
def test_demo_small(tmp_path, capsys, loader) -> None:
    argv = [
        "demo",
        "--samples",
        "1200",
        "--image-size",
        "16",
        "--batch-size",
        "100",
        "--workdir",
        str(tmp_path),
        "--loader",
        loader,
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "packed 1200 encrypted samples" in out
    assert "samples/s" in out and "MB/s" in out and "data-wait" in out
    assert f"through {'RingLoader' if loader == 'ring' else 'DataLoader'}" in out
    assert (tmp_path / "kek.json").exists()
