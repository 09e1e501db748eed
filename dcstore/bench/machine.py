"""Facts about the machine a benchmark ran on, stored with every result."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = (
    "dcstore",
    "numpy",
    "pyarrow",
    "cryptography",
    "hdrhistogram",
    "redis",
    "hiredis",
    "hdfs-native",
    "cassandra-driver",
    "pymongo",
    "torch",
    "webdataset",
)
_CPU_FLAGS = ("aes", "vaes", "avx2", "avx512f", "sha_ni", "pclmulqdq", "vpclmulqdq")


def _cpuinfo() -> tuple[str | None, list[str]]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or None, []
    model: str | None = None
    flags: set[str] = set()
    for line in text.splitlines():
        name, _, value = line.partition(":")
        name = name.strip()
        if name == "model name" and model is None:
            model = value.strip()
        elif name == "flags" and not flags:
            flags = set(value.split())
    return model, [f for f in _CPU_FLAGS if f in flags]


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` says."""
    return _cpuinfo()[0] or platform.machine() or "unknown"


def _git_commit() -> str | None:
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def machine_facts() -> dict[str, Any]:
    """Cores, memory, CPU model and flags, OS, Python and package versions."""
    import psutil

    model, flags = _cpuinfo()
    mem = psutil.virtual_memory()
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    usable: int | None
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "kernel": platform.release(),
        "cpu_model": model,
        "cpu_flags": flags,
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "physical_cores": psutil.cpu_count(logical=False),
        "memory_bytes": mem.total,
        "memory_available_bytes": mem.available,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "packages": versions,
        "dcstore_git_commit": _git_commit(),
    }
