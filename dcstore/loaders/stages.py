"""webdataset-style pipeline stages: plain generator functions over samples.

Each stage is ``stage(iterator) -> iterator``; :class:`ShardedDataset` applies
them in the worker, in order. They keep webdataset's semantics:

* ``decode(*handlers)``: each handler is ``handler(field, data) -> value | None``
  (webdataset's protocol, so ``webdataset.imagehandler("rgb8")`` works);
  the first non-None result wins; fields no handler takes are left as is;
  ``"basic"`` is always tried last, as in webdataset.
  Strings name built-ins: ``"basic"`` (txt/cls/json/npy/...), ``"pil"``,
  ``"rgb8"``, ``"torchrgb8"``. User handlers receive ``bytes``.
* ``to_tuple("jpg;png", "cls")``: ``;`` separates alternatives; a missing
  field raises ``KeyError`` naming the sample.
* ``batched(n, collate_fn)``: in-worker batching (one inter-process transfer
  per batch, the fast path); the last partial batch is kept unless
  ``partial=False``.
* ``map`` (a ``None`` result drops the item; a dict result keeps the
  sample's ``__key__``), ``map_dict``, ``map_tuple(f, None, ...)``,
  ``rename(new="old;alt")`` and ``select`` as in webdataset.
* Error handlers: ``decode``, ``to_tuple``, ``map``, ``map_dict``,
  ``map_tuple`` and ``rename`` take webdataset's ``handler=`` (see
  :mod:`dcstore.loaders.handlers`): by default an error is raised; with
  ``warn_and_continue`` / ``ignore_and_continue`` the failing item is dropped.

Stages never buffer samples across yields except ``batched``, whose buffer
is empty whenever it yields, so the loader's resumption state stays exact.
"""

from __future__ import annotations

import functools
import io
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from dcstore.errors import ConfigError
from dcstore.loaders.handlers import ErrorHandler, reraise_exception
from dcstore.units import whole_number

Sample = dict[str, Any]
Stage = Callable[[Iterator[Any]], Iterator[Any]]
Handler = Callable[[str, Any], Any]


def _basic(field: str, data: Any) -> Any:
    ext = field.rsplit(".", 1)[-1]
    if ext in ("txt", "text", "transcript"):
        return str(data, "utf-8")
    if ext in ("cls", "cls2", "class", "count", "index", "inx", "id"):
        return int(str(data, "ascii"))
    if ext in ("json", "jsn"):
        return json.loads(bytes(data))
    if ext in ("npy", "npz"):
        import numpy as np

        loaded = np.load(io.BytesIO(data), allow_pickle=False)
        return loaded if ext == "npy" else dict(loaded)  # npz: its arrays by name
    if ext == "pth":
        import torch

        return torch.load(io.BytesIO(data), weights_only=True)
    return None


_IMAGE_EXTS = ("jpg", "jpeg", "png", "ppm", "pgm", "pbm", "pnm", "webp", "bmp", "tif", "tiff")


def _decode_image(mode: str, field: str, data: Any) -> Any:
    if field.rsplit(".", 1)[-1] not in _IMAGE_EXTS:
        return None
    import numpy as np
    from PIL import Image

    rgb = Image.open(io.BytesIO(data)).convert("RGB")  # any mode, as webdataset's decoders
    if mode == "pil":
        return rgb
    arr = np.array(rgb)  # writable, so torch can wrap it without a warning
    if mode == "torchrgb8":
        import torch

        return torch.from_numpy(arr).permute(2, 0, 1)
    return arr


_NAMED: dict[str, Handler] = {
    "basic": _basic,
    "pil": functools.partial(_decode_image, "pil"),
    "rgb8": functools.partial(_decode_image, "rgb8"),
    "torchrgb8": functools.partial(_decode_image, "torchrgb8"),
}


def _call_with_bytes(handler: Handler, field: str, data: Any) -> Any:
    return handler(field, bytes(data) if isinstance(data, memoryview) else data)


def _function(name: str, fn: Any) -> Any:
    """``fn`` if it can be called; else a :class:`ConfigError` naming the argument (``map(5)``
    was taken, and failed at the first sample as "'int' object is not callable")."""
    if not callable(fn):
        raise ConfigError(f"{name} must be a function (a callable), got {fn!r}")
    return fn


def _error_handler(name: str, handler: ErrorHandler | None) -> ErrorHandler:
    """``handler``, or :func:`reraise_exception` (the default) for None; else what
    :func:`_function` refuses."""
    return reraise_exception if handler is None else _function(name, handler)


def _handler(spec: str | Handler) -> Handler:
    if isinstance(spec, str):
        if spec not in _NAMED:
            raise ValueError(f"unknown decoder {spec!r}; built-ins: {', '.join(_NAMED)}")
        return _NAMED[spec]
    _function("a decode() handler (or the name of a built-in)", spec)
    return functools.partial(_call_with_bytes, spec)


# Stages are functools.partial objects over module-level generators, so a dataset
# with stages pickles (DataLoader workers started with spawn or forkserver).


def _guarded(
    fn: Callable[[Any], Any], handler: ErrorHandler, items: Iterator[Any]
) -> Iterator[Any]:
    """``fn(item)`` for each item; an exception goes to ``handler`` (webdataset's convention)."""
    for item in items:
        try:
            result = fn(item)
        except Exception as exc:
            if handler(exc):
                continue
            break
        yield result


def _decode_sample(chain: Sequence[Handler], sample: Sample) -> Sample:
    out = {}
    for field, value in sample.items():
        if not field.startswith("__"):
            try:
                value = _decode_field(chain, field, value)
            except Exception as exc:
                add_note(exc, f"decoding field {field!r} of {_sample_where(sample)}")
                raise
        out[field] = value
    return out


def _sample_where(sample: Sample) -> str:
    """``sample 'key' in URL`` (the shard, where the sample has one)."""
    where = f"sample {sample.get('__key__')!r}"
    url = sample.get("__url__")
    return f"{where} in {url}" if url else where


def _decode_field(chain: Sequence[Handler], field: str, value: Any) -> Any:
    for handler in chain:
        decoded = handler(field, value)
        if decoded is not None:
            return decoded
    return value


def add_note(exc: BaseException, note: str) -> None:
    """Say where ``exc`` happened without changing its type (a note, shown with the
    traceback and by :func:`~dcstore.loaders.handlers.warn_and_continue`; Python >= 3.11)."""
    if hasattr(exc, "add_note"):
        exc.add_note(note)


def decode(*handlers: str | Handler, handler: ErrorHandler | None = reraise_exception) -> Stage:
    """Decode fields with the first handler that accepts them.

    As in webdataset, the ``"basic"`` handlers (txt, cls, json, npy, ...) always
    come last, so ``decode("rgb8")`` also turns ``cls`` into an ``int``.
    """
    specs = list(handlers)
    if "basic" not in specs:
        specs.append("basic")
    chain = [_handler(h) for h in specs]
    handler = _error_handler("decode(handler=)", handler)
    return functools.partial(_guarded, functools.partial(_decode_sample, chain), handler)


def _pick(sample: Sample, names: Sequence[str]) -> Any:
    for name in names:
        if name in sample:
            return sample[name]
    fields = sorted(f for f in sample if not f.startswith("__"))
    raise KeyError(f"{_sample_where(sample)} has none of the fields {names}; it has {fields}")


def _tuple_of(choices: Sequence[Sequence[str]], sample: Sample) -> tuple[Any, ...]:
    return tuple(_pick(sample, names) for names in choices)


def to_tuple(*fields: str, handler: ErrorHandler | None = reraise_exception) -> Stage:
    """Turn samples into tuples of the named fields (``"a;b"``: the first present)."""
    choices = [f.split(";") for f in fields]
    handler = _error_handler("to_tuple(handler=)", handler)
    return functools.partial(_guarded, functools.partial(_tuple_of, choices), handler)


def _mapped(fn: Callable[[Any], Any], item: Any) -> Any:
    result = fn(item)
    if isinstance(item, dict) and isinstance(result, dict):
        result["__key__"] = item.get("__key__")
    return result


def _dropping_none(items: Iterator[Any]) -> Iterator[Any]:
    return (item for item in items if item is not None)


def map_stage(fn: Callable[[Any], Any], handler: ErrorHandler | None = reraise_exception) -> Stage:
    """Apply ``fn`` to every item; a ``None`` result drops the item (as in webdataset)."""
    _function("map(fn)", fn)
    handler = _error_handler("map(handler=)", handler)
    return functools.partial(_map_then_drop, functools.partial(_mapped, fn), handler)


def _map_then_drop(
    fn: Callable[[Any], Any], handler: ErrorHandler, items: Iterator[Any]
) -> Iterator[Any]:
    return _dropping_none(_guarded(fn, handler, items))


def _map_fields(fns: dict[str, Callable[[Any], Any]], sample: Sample) -> Sample:
    out = dict(sample)
    for field, fn in fns.items():
        if field not in out:  # was a bare KeyError: 'jpg', naming no sample or shard
            fields = sorted(f for f in sample if not f.startswith("__"))
            raise KeyError(
                f"{_sample_where(sample)} has no field {field!r} for map_dict({field}=); "
                f"it has {fields}"
            )
        out[field] = fn(out[field])
    return out


def map_dict(
    handler: ErrorHandler | None = reraise_exception, **fns: Callable[[Any], Any]
) -> Stage:
    """Apply ``fns[field]`` to that field of every sample."""
    for field, fn in fns.items():
        _function(f"map_dict({field}=)", fn)
    handler = _error_handler("map_dict(handler=)", handler)
    return functools.partial(_guarded, functools.partial(_map_fields, fns), handler)


def _map_elements(
    fns: Sequence[Callable[[Any], Any] | None], item: Sequence[Any]
) -> tuple[Any, ...]:
    if len(item) < len(fns):
        raise ValueError(f"map_tuple got {len(fns)} functions for a tuple of {len(item)}")
    head = tuple(v if fn is None else fn(v) for fn, v in zip(fns, item, strict=False))
    return head + tuple(item[len(fns) :])


def map_tuple(
    *fns: Callable[[Any], Any] | None, handler: ErrorHandler | None = reraise_exception
) -> Stage:
    """Apply ``fns[i]`` to element ``i`` of every tuple (``None``: unchanged)."""
    for number, fn in enumerate(fns, 1):
        if fn is not None:
            _function(f"map_tuple() function {number} of {len(fns)} (or None)", fn)
    handler = _error_handler("map_tuple(handler=)", handler)
    return functools.partial(_guarded, functools.partial(_map_elements, fns), handler)


def _renamed(names: dict[str, list[str]], keep: bool, sample: Sample) -> Sample:
    picked = {new: _pick(sample, olds) for new, olds in names.items()}
    if not keep:
        return picked
    replaced = {old for olds in names.values() for old in olds}
    out = {k: v for k, v in sample.items() if k not in replaced}
    out.update(picked)
    return out


def rename(
    *, keep: bool = True, handler: ErrorHandler | None = reraise_exception, **names: str
) -> Stage:
    """Rename fields, webdataset style: ``rename(image="jpg;png", label="cls")``.

    Each new name takes the first present of its ``;``-separated old names;
    ``keep=False`` drops every other field.
    """
    choices = {new: old.split(";") for new, old in names.items()}
    handler = _error_handler("rename(handler=)", handler)
    return functools.partial(_guarded, functools.partial(_renamed, choices, keep), handler)


def _select(predicate: Callable[[Any], bool], items: Iterator[Any]) -> Iterator[Any]:
    return filter(predicate, items)


def select(predicate: Callable[[Any], bool]) -> Stage:
    """Keep the items for which ``predicate`` is true (dropped ones count as consumed)."""
    _function("select(predicate)", predicate)
    return functools.partial(_select, predicate)


def _batched(
    batch_size: int,
    collate_fn: Callable[[list[Any]], Any],
    keep_partial: bool,
    items: Iterator[Any],
) -> Iterator[Any]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == batch_size:
            out, batch = collate_fn(batch), []
            yield out
    if batch and keep_partial:
        yield collate_fn(batch)


def batched(
    batch_size: int,
    collate_fn: Callable[[list[Any]], Any] | None = None,
    *,
    partial: bool = True,
) -> Stage:
    """Group items into lists of ``batch_size`` and collate them (torch's default)."""
    batch_size = whole_number("batch_size", batch_size, 1)  # 16 / 3 made one batch of all
    if collate_fn is not None:
        _function("batched(collate_fn)", collate_fn)
    return functools.partial(_batched, batch_size, collate_fn or _default_collate, partial)


def _default_collate(batch: list[Any]) -> Any:
    """torch's ``default_collate``; samples of different shapes raise a :class:`ValueError`
    that names the field and says what to do (stacking them cannot work), in a
    ``DataLoader`` worker too (where torch fails earlier, resizing shared memory)."""
    from torch.utils.data import default_collate

    if isinstance(batch[0], Mapping) and (error := different_fields("batched()", batch)):
        raise error
    try:
        return default_collate(batch)
    except RuntimeError as exc:
        differ = _differing_shapes(batch)
        if differ is None:
            raise
        raise different_shapes("batched()", differ) from exc


def different_shapes(who: str, differ: str) -> ValueError:
    """The error for a batch whose samples cannot be stacked: what differs, what to do."""
    return ValueError(
        f"{who}: the samples of a batch have different shapes ({differ}); resize them in a "
        ".map()/.map_tuple() stage before batching, or collate them as lists (.batched("
        "n, collate_fn=list) with DataLoader(batch_size=None))"
    )


def different_fields(
    who: str, batch: Sequence[Mapping[str, Any]], where: str = ""
) -> ValueError | None:
    """The error for a batch of samples whose fields differ, or ``None``. Collated as
    they are, a field the first sample lacks vanished from the whole batch, and one a
    later sample lacks was a bare ``KeyError`` (webdataset refuses such a batch too).
    The samples are named by their place in the batch (and ``__key__``, if they have
    one); ``where``: the dicts' place in a sample (``['meta']``), if nested."""
    first = batch[0]
    index = next((i for i, item in enumerate(batch) if item.keys() != first.keys()), None)
    if index is None:
        return None
    other = batch[index]
    only_first = sorted(map(str, first.keys() - other.keys()))
    only_other = sorted(map(str, other.keys() - first.keys()))

    def name(i: int, item: Mapping[str, Any]) -> str:
        return f"{i} ({item['__key__']!r})" if "__key__" in item else str(i)

    return ValueError(
        f"{who}: samples {name(0, first)} and {name(index, other)} of a batch have different "
        f"fields{f' in {where}' if where else ''} (only in the first: {only_first}; only in the "
        f"second: {only_other}); give every sample the same fields in a .map() stage, or "
        "collate them as lists (.batched(n, collate_fn=list) with DataLoader(batch_size=None))"
    )


def _differing_shapes(batch: list[Any], field: str = "") -> str | None:
    """Where two items of ``batch`` (arrays, or tuples/dicts of them) differ in shape."""
    first = batch[0]
    if isinstance(first, tuple | list) and all(
        isinstance(x, tuple | list) and len(x) == len(first) for x in batch
    ):
        fields: list[tuple[Any, list[Any]]] = [
            (i, [x[i] for x in batch]) for i in range(len(first))
        ]
    elif isinstance(first, dict) and all(
        isinstance(x, dict) and x.keys() == first.keys() for x in batch
    ):
        fields = [(k, [x[k] for x in batch]) for k in first]
    else:
        shapes = [tuple(getattr(x, "shape", ())) for x in batch]
        other = next((s for s in shapes if s != shapes[0]), None)
        if other is None:
            return None
        return f"{field or 'the samples'}: {shapes[0]} and {other}"
    for name, items in fields:
        found = _differing_shapes(items, f"{field}[{name!r}]")
        if found is not None:
            return found
    return None


def compose(source: Iterable[Any], stages: Sequence[Stage]) -> Iterator[Any]:
    """Apply ``stages`` to ``source`` in order."""
    items: Iterator[Any] = iter(source)
    for stage in stages:
        items = stage(items)
    return items


def is_batching(stage: Stage) -> bool:
    """Whether ``stage`` is a :func:`batched` stage."""
    return isinstance(stage, functools.partial) and stage.func is _batched


def batch_shape(stage: Stage) -> tuple[int, bool]:
    """(batch size, whether a last partial batch is kept) of a :func:`batched` stage."""
    assert isinstance(stage, functools.partial) and stage.func is _batched
    return int(stage.args[0]), bool(stage.args[2])
