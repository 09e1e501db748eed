"""One rank of the chaos training read: ``python -m chaos.reader SPEC.json`` (with
``tests`` and the repo on ``PYTHONPATH``).

For each epoch and each dataset of the spec it runs a shuffled ``ShardedDataset``
(``rank``/``world_size`` explicit, so ``version=`` the runner resolved for every rank)
through a ``DataLoader`` with ``workers`` processes and records which samples it got,
whether each one's bytes were right for the generation its manifest names, how long the
epoch took and any error (one line).
Results go to ``out`` as JSON after every epoch, so a killed rank leaves what it did.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import torch.utils.data

from chaos.data import expected, fingerprint
from dcstore import ShardedDataset, open_store


def read_epoch(ds: Any, workers: int, want: dict[str, str]) -> dict[str, Any]:
    keys, bad = [], []
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=workers)
    for key, got in loader:
        keys.append(key)
        if want.get(key) != got:
            bad.append(key)
    return {"keys": keys, "bad": bad}


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    results: list[dict[str, Any]] = []
    datasets = {}
    stores = []
    for d in spec["datasets"]:  # one ShardedDataset per dataset and run: its manifest is pinned
        started = time.monotonic()
        try:
            store = open_store(d["url"], cache=d["cache"], keys=spec["keys"],
                               retries=spec["retries"])  # fmt: skip
            stores.append(store)
            ds = ShardedDataset(store, version=d.get("version"), shuffle=True,
                                seed=spec["seed"], rank=spec["rank"],
                                world_size=spec["world"])  # fmt: skip
            generation = int(ds.manifest.metadata["generation"])
            datasets[d["name"]] = (ds.map(fingerprint), generation, expected(generation))
        except Exception as exc:
            results.append({"dataset": d["name"], "epoch": -1, "error": _line(exc),
                            "seconds": time.monotonic() - started})  # fmt: skip
    for epoch in range(spec["epochs"]):
        for name, (ds, generation, want) in datasets.items():
            ds.set_epoch(epoch)
            started = time.monotonic()
            record: dict[str, Any] = {"dataset": name, "epoch": epoch, "generation": generation}
            try:
                record.update(read_epoch(ds, spec["workers"], want))
            except Exception as exc:
                record["error"] = _line(exc)
            record["seconds"] = round(time.monotonic() - started, 2)
            results.append(record)
            with open(spec["out"], "w") as f:
                json.dump(results, f)
    with open(spec["out"], "w") as f:
        json.dump(results, f)
    for store in stores:  # drivers' threads stop before the interpreter does
        store.close()


def _line(exc: BaseException) -> str:
    """The error as a user sees it: a DataLoader worker's exception comes back wrapped with
    its traceback, whose last line is the original ``module.Class: message``."""
    text = str(exc)
    if "Original Traceback" in text:
        return text.strip().splitlines()[-1]
    return f"{type(exc).__name__}: {text}"


if __name__ == "__main__":
    main(sys.argv[1])
