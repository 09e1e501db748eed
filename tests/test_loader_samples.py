"""Samples behave as in webdataset: bytes fields, default_collate, webdataset-style user code,
``map_tuple``/``rename``/error handlers, and a resize step before batching real JPEGs."""

from __future__ import annotations

import io
import json
import re
import warnings

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image
from torch.utils.data import DataLoader

from dcstore.loaders import ShardedDataset, ShardedMapDataset, ShardWriter, stages
from dcstore.loaders.handlers import ignore_and_continue, warn_and_continue

N = 24
SIZES = [(40, 30), (64, 48), (33, 77), (120, 90)]


def jpeg(size: tuple[int, int], shade: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (shade, 255 - shade, 7)).save(out, format="JPEG")
    return out.getvalue()


@pytest.fixture(scope="module")
def image_url(tmp_path_factory) -> str:
    url = f"file://{tmp_path_factory.mktemp('images')}"
    with ShardWriter(url, shard_size=64 * 1024) as writer:
        for i in range(N):
            writer.write(
                {
                    "__key__": f"img/{i:04d}",
                    "jpg": jpeg(SIZES[i % len(SIZES)], i * 10),
                    "cls": i % 3,
                    "json": json.dumps({"id": i}),
                }
            )
    return url


def test_raw_fields_are_bytes_and_webdataset_code_runs_unchanged(image_url) -> None:
    samples = list(ShardedDataset(image_url))
    assert len(samples) == N
    for i, s in enumerate(samples):
        assert all(type(s[f]) is bytes for f in ("jpg", "cls", "json"))
        assert json.loads(s["json"]) == {"id": i}
        assert int(s["cls"].decode()) == i % 3
        assert Image.open(io.BytesIO(s["jpg"])).size == SIZES[i % len(SIZES)]
    one = ShardedMapDataset(image_url)[5]
    assert type(one["jpg"]) is bytes and json.loads(one["json"]) == {"id": 5}


def test_zero_copy_opt_in_hands_out_memoryviews(image_url) -> None:
    views = list(ShardedDataset(image_url, zero_copy=True))
    plain = list(ShardedDataset(image_url))
    assert all(isinstance(s["jpg"], memoryview) for s in views)
    assert [bytes(s["jpg"]) for s in views] == [s["jpg"] for s in plain]


@pytest.mark.parametrize("workers", [0, 2])
def test_default_collate_batches_raw_samples(image_url, workers) -> None:
    loader = DataLoader(ShardedDataset(image_url), batch_size=8, num_workers=workers)
    batches = list(loader)  # each worker ends with its own partial batch
    keys = [k for b in batches for k in b["__key__"]]
    assert sorted(keys) == [f"img/{i:04d}" for i in range(N)]
    assert all(type(b["jpg"]) is list and type(b["jpg"][0]) is bytes for b in batches)
    assert isinstance(batches[0]["__index__"], torch.Tensor)


def resize_32(image: np.ndarray) -> np.ndarray:
    return np.array(Image.fromarray(image).resize((32, 32)))


def test_decode_resize_to_tuple_batched_on_images_of_different_sizes(image_url) -> None:
    ds = (
        ShardedDataset(image_url, shuffle=True, seed=1)
        .decode("rgb8")
        .to_tuple("jpg", "cls")
        .map_tuple(resize_32, None)
        .batched(4)
    )
    batches = list(DataLoader(ds, batch_size=None, num_workers=2))
    assert len(batches) == N // 4  # 12 samples per worker: 3 full batches each
    for images, labels in batches:
        assert images.shape == (4, 32, 32, 3) and images.dtype == torch.uint8
        assert labels.shape == (4,)
    assert sorted(int(c) for _, labels in batches for c in labels) == sorted(
        i % 3 for i in range(N)
    )


def test_batching_images_of_different_sizes_says_what_to_do(image_url) -> None:
    """Forgetting the resize step names the problem and the fix, not only torch's stack
    error; ``collate_fn=list`` keeps the samples as they are."""

    def images() -> ShardedDataset:
        return ShardedDataset(image_url).decode("rgb8").to_tuple("jpg", "cls")

    with pytest.raises(ValueError, match=r"different shapes \(\[0\]: \(.*resize them.*=list"):
        list(images().batched(N))
    # in a worker torch fails earlier (resizing the batch's shared memory): the same advice
    with pytest.raises(ValueError, match=r"different shapes \(\[0\]: \(.*resize them"):
        list(DataLoader(images().batched(N), batch_size=None, num_workers=1))
    (batch,) = list(images().batched(N, list))
    assert len(batch) == N and len({image.shape for image, _ in batch}) > 1


def label_unless_zero(sample: dict) -> dict | None:
    return {"n": int(sample["cls"])} if sample["cls"] != b"0" else None


def test_rename_map_and_map_tuple_match_webdataset(image_url) -> None:
    raw = list(ShardedDataset(image_url))
    for keep in (True, False):
        ours = list(stages.rename(keep=keep, image="png;jpg", label="cls")(iter(raw)))
        theirs = list(wds.filters.rename(keep=keep, image="png;jpg", label="cls")(iter(raw)))
        assert ours == theirs
    ours = list(stages.map_stage(label_unless_zero)(iter(raw)))
    assert ours == list(wds.filters.map(label_unless_zero)(iter(raw)))
    pairs = [(s["cls"], s["json"]) for s in raw]
    ours = list(stages.map_tuple(int, None)(iter(pairs)))
    assert ours == list(wds.filters.map_tuple(int, None)(iter(pairs)))
    assert ours[4] == (1, b'{"id": 4}')


def fails_on_odd(sample: dict) -> dict:
    if int(sample["cls"]) % 3 == 1:
        raise ValueError(f"bad {sample['__key__']}")
    return sample


def test_error_handlers_per_stage(image_url) -> None:
    with pytest.raises(ValueError, match="bad img/0001"):
        list(ShardedDataset(image_url).map(fails_on_odd))
    kept = list(ShardedDataset(image_url).map(fails_on_odd, handler=ignore_and_continue))
    assert [s["__index__"] for s in kept] == [i for i in range(N) if i % 3 != 1]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tuples = list(ShardedDataset(image_url).to_tuple("png", handler=warn_and_continue))
    assert tuples == [] and len(caught) == N and "png" in str(caught[0].message)
    decoded = list(
        ShardedDataset(image_url)
        .map_dict(jpg=lambda b: b[:2] + b"broken")
        .decode("rgb8", handler=ignore_and_continue)
    )
    assert decoded == []  # every image fails to decode and is dropped
    renamed = list(ShardedDataset(image_url).rename(image="png", handler=ignore_and_continue))
    assert renamed == []


def test_map_drops_none_and_keeps_the_key(image_url) -> None:
    out = list(ShardedDataset(image_url).map(label_unless_zero))
    assert len(out) == N - N // 3
    assert all(set(s) == {"n", "__key__"} for s in out)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK"])
def test_decoders_give_what_webdatasets_give_for_any_image_mode(tmp_path, mode) -> None:
    """decode("pil") kept a grayscale or RGBA image as it was stored, where webdataset's
    "pil" (and every dcstore decoder but that one) converts to RGB; .npz stayed bytes."""
    image = io.BytesIO()
    Image.new(mode, (5, 4), 7).save(image, "JPEG" if mode == "CMYK" else "PNG")
    arrays = io.BytesIO()
    np.savez(arrays, a=np.arange(3), b=np.ones((2, 2)))
    sample = {"__key__": "x", "img.png": image.getvalue(), "arrays.npz": arrays.getvalue()}
    with ShardWriter(str(tmp_path)) as writer:
        writer.write(sample)
    for name in ("pil", "rgb8", "torchrgb8"):
        (ours,) = ShardedDataset(str(tmp_path)).decode(name)
        theirs = wds.autodecode.Decoder([wds.autodecode.imagehandler(name)])(dict(sample))
        if name == "pil":
            assert ours["img.png"].mode == theirs["img.png"].mode == "RGB"
            assert ours["img.png"].tobytes() == theirs["img.png"].tobytes()
        else:
            assert np.array_equal(np.asarray(ours["img.png"]), np.asarray(theirs["img.png"]))
        assert ours["arrays.npz"].keys() == theirs["arrays.npz"].keys() == {"a", "b"}
        assert np.array_equal(ours["arrays.npz"]["b"], theirs["arrays.npz"]["b"])


def test_a_decode_error_says_which_sample_and_field(tmp_path) -> None:
    """PIL's bare "Truncated File Read" named no sample, field or shard."""
    good = io.BytesIO()
    Image.new("RGB", (64, 64), 9).save(good, "JPEG")
    with ShardWriter(str(tmp_path)) as writer:
        writer.write({"__key__": "good", "jpg": good.getvalue()})
        writer.write({"__key__": "cut", "jpg": good.getvalue()[:200]})
    where = r"decoding field 'jpg' of sample 'cut' in file://.*\.tar"
    with pytest.raises(OSError) as info:
        list(ShardedDataset(str(tmp_path)).decode("rgb8"))
    assert any(re.fullmatch(where, note) for note in info.value.__notes__)
    with pytest.warns(UserWarning, match=rf"OSError\(.*\); {where}"):
        kept = list(ShardedDataset(str(tmp_path)).decode("rgb8", handler=warn_and_continue))
    assert [s["__key__"] for s in kept] == ["good"]


def test_to_tuple_of_a_missing_field_names_the_fields_the_sample_has(tmp_path) -> None:
    """Newcomer: "sample 'Triangle/img_13' has none of the fields ['jpg']" left them to
    guess which fields there were (the sample had ``png``) and which shard it came from."""
    with ShardWriter(str(tmp_path)) as writer:
        writer.write({"__key__": "a", "png": b"x", "cls": b"1"})
    with pytest.raises(KeyError) as info:
        list(ShardedDataset(str(tmp_path)).to_tuple("jpg", "cls"))
    assert re.fullmatch(
        r"sample 'a' in file://.*\.tar has none of the fields \['jpg'\]; it has \['cls', 'png'\]",
        info.value.args[0],
    )


def test_map_dict_of_a_missing_field_names_the_sample_and_its_fields(tmp_path) -> None:
    """Newcomer: map_dict(jpg=len) on samples without jpg was a bare KeyError: 'jpg',
    naming no sample or shard (to_tuple and rename name both)."""
    with ShardWriter(str(tmp_path)) as writer:
        writer.write({"__key__": "a", "png": b"x", "cls": b"1"})
    with pytest.raises(KeyError) as info:
        next(iter(ShardedDataset(str(tmp_path)).map_dict(cls=int, jpg=len)))
    assert re.fullmatch(
        r"sample 'a' in file://.*\.tar has no field 'jpg' for map_dict\(jpg=\); "
        r"it has \['cls', 'png'\]",
        info.value.args[0],
    )


@pytest.mark.parametrize(
    ("stage", "message"),
    [(lambda ds: ds.map(5), r"map\(fn\) must be a function \(a callable\), got 5"),
     (lambda ds: ds.map(len, handler="skip"), r"map\(handler=\) must be a function"),
     (lambda ds: ds.map_dict(jpg=len, cls="int"), r"map_dict\(cls=\) must be a function"),
     (lambda ds: ds.map_tuple(None, 3), r"map_tuple\(\) function 2 of 2 \(or None\) must be"),
     (lambda ds: ds.select(True), r"select\(predicate\) must be a function .*got True"),
     (lambda ds: ds.batched(4, collate_fn="stack"), r"batched\(collate_fn\) must be a function"),
     (lambda ds: ds.decode(b"rgb8"), r"a decode\(\) handler .* must be a function")],
)  # fmt: skip
def test_a_stage_function_that_cannot_be_called_is_refused_at_once(
    image_url, stage, message: str
) -> None:
    """Newcomer: ds.map(5) was taken, and failed at the first sample ("'int' object is not
    callable"), far from the line that added it."""
    from dcstore.errors import ConfigError

    with pytest.raises(ConfigError, match=f"^{message}"):
        stage(ShardedDataset(image_url))


def test_handler_none_is_the_default_handler() -> None:
    """Review: handler=None (wrapper code passing its own default through) was refused
    when the stage was added; it means the default, which raises a sample's error."""
    from dcstore.loaders import stages

    assert list(stages.map_stage(lambda x: x + 1, None)(iter([1, 2]))) == [2, 3]
    with pytest.raises(ZeroDivisionError):
        list(stages.map_stage(lambda x: 1 // x, None)(iter([0])))
