"""A process that loads a manifest starts no Arrow thread and exits cleanly.

pyarrow's Parquet reader, left to its thread pools, makes about one short process in
fifteen abort at interpreter exit ("terminate called without an active exception",
apache/arrow#34314); CI once failed on it in ``dcstore verify``. Manifests (and Parquet
pack indexes) are read in the calling thread.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dcstore.loaders.writer import ShardWriter

LOAD = """
import os, sys
from dcstore.backends.local import LocalBackend
from dcstore.loaders import shardindex
from dcstore.loaders.manifest import load_manifest
if sys.argv[2:] == ["ranges"]:
    shardindex.WHOLE_BELOW = 0  # read as a large manifest is
before = len(os.listdir("/proc/self/task"))
m = load_manifest(LocalBackend(sys.argv[1]))
assert m.num_samples == 3 and len(m.shards[0].offsets) == 3, m.num_samples
print(len(os.listdir("/proc/self/task")) - before)
"""


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("exit") / "ds"
    with ShardWriter(f"file://{root}") as writer:
        for i in range(3):
            writer.write({"__key__": f"s{i}", "txt": b"x" * i})
    return root


def _run(root: Path, *how: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", LOAD, str(root), *how],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


@pytest.mark.parametrize("how", [(), ("ranges",)], ids=["whole", "ranges"])
def test_loading_a_manifest_starts_no_thread(dataset: Path, how: tuple[str, ...]) -> None:
    """Read whole or by ranges (Arrow's pre-buffering of ranges would start an I/O thread)."""
    out, err = _run(dataset, *how).communicate(timeout=120)
    assert out.decode().strip() == "0", err.decode()


def test_processes_loading_a_manifest_exit_zero(dataset: Path) -> None:
    failed = []
    for _ in range(8):
        procs = [_run(dataset) for _ in range(4)]
        for proc in procs:
            _, err = proc.communicate(timeout=120)
            if proc.returncode != 0:
                failed.append((proc.returncode, err.decode(errors="replace").strip()[-300:]))
    assert not failed, f"{len(failed)} of 32 runs failed: {failed[:3]}"
