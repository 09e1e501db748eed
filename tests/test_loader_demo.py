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


def test_demo_keeps_a_key_file_in_its_workdir(tmp_path, capsys, monkeypatch) -> None:
    """--workdir replaced DIR/kek.json with a new key (whatever it encrypted was lost), and
    a relative DIR failed (file://dataset) after replacing it."""
    from dcstore.crypto import Keyring, write_key_file

    monkeypatch.chdir(tmp_path)
    write_key_file(tmp_path / "kek.json", Keyring.generate())
    before = (tmp_path / "kek.json").read_bytes()
    argv = ["demo", "--samples", "200", "--image-size", "8", "--batch-size", "50", "--workdir", "."]
    assert main(argv) == 0
    assert main(argv) == 0  # again: a second version of the same dataset, same key
    out = capsys.readouterr().out
    assert (tmp_path / "kek.json").read_bytes() == before
    assert out.count("using the key file already at") == 2 and out.count("packed 200") == 2


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--samples", "0"), ("--batch-size", "0"), ("--workers", "-1"), ("--image-size", "2")],
)
def test_demo_refuses_impossible_arguments_before_packing(tmp_path, capsys, flag, value) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["demo", "--workdir", str(tmp_path), flag, value])
    assert exit_.value.code == 2
    assert f"argument {flag}: expected a whole number" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
