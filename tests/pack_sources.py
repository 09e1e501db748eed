"""Source folders for the ``dcstore pack`` tests: real image files written with PIL."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

Image = pytest.importorskip("PIL.Image")


def image_bytes(seed: int, fmt: str = "JPEG", size: int = 8) -> bytes:
    """A small real image whose pixels depend on ``seed``."""
    img = Image.new("RGB", (size, size), ((seed * 37) % 256, (seed * 91) % 256, seed % 256))
    out = io.BytesIO()
    img.save(out, format=fmt)
    return out.getvalue()


def write_image(path: Path, seed: int, fmt: str = "JPEG") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(image_bytes(seed, fmt))
    return path


def make_imagefolder(root: Path, classes: list[str], per_class: int) -> Path:
    """``root/<class>/<class>_<i>.jpg``, like torchvision's ImageFolder expects."""
    for c, name in enumerate(classes):
        for i in range(per_class):
            write_image(root / name / f"{name}_{i:03d}.jpg", c * 1000 + i)
    return root


def make_tar(path: Path, members: dict[str, bytes]) -> Path:
    """A webdataset shard holding ``members`` in order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tf:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tf.addfile(info, io.BytesIO(payload))
    return path


def decode(payload: bytes | memoryview) -> tuple[int, int, int]:
    """The first pixel of an encoded image (proves the bytes are a readable image)."""
    with Image.open(io.BytesIO(bytes(payload))) as img:
        return img.convert("RGB").getpixel((0, 0))
