"""Tar writing/parsing: webdataset/tarfile compatibility, zero copy, corruption."""

from __future__ import annotations

import io
import random
import tarfile

import pytest

from dcstore.errors import IntegrityError
from dcstore.loaders.tario import (
    END_OF_ARCHIVE,
    TarFormatError,
    group_samples,
    header_checksum,
    iter_samples,
    member_bytes,
    parse_members,
    parse_record,
    record_sample,
    sample_dict,
    split_name,
)


def build(members: list[tuple[str, bytes]]) -> bytes:
    return b"".join(b"".join(bytes(p) for p in member_bytes(n, d)) for n, d in members) + (
        END_OF_ARCHIVE
    )


def test_tarfile_reads_what_we_write() -> None:
    long = "d/" + "x" * 150 + "/sample.jpg"
    uni = "dïr/ünïcode.txt"
    data = build([("a/s1.jpg", b"jpeg"), ("a/s1.cls", b"3"), (long, b"L" * 700), (uni, b"")])
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        names = [(m.name, tf.extractfile(m).read()) for m in tf.getmembers()]
    assert names == [("a/s1.jpg", b"jpeg"), ("a/s1.cls", b"3"), (long, b"L" * 700), (uni, b"")]


def test_we_read_what_tarfile_writes() -> None:
    sink = io.BytesIO()
    with tarfile.open(fileobj=sink, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for name, payload in [("k1.png", b"p" * 10), ("k1.json", b"{}"), ("z" * 120 + ".a", b"1")]:
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tf.addfile(info, io.BytesIO(payload))
        directory = tarfile.TarInfo("adir")
        directory.type = tarfile.DIRTYPE
        tf.addfile(directory)  # directories are skipped
    members = parse_members(sink.getvalue())
    assert [m.name for m in members] == ["k1.png", "k1.json", "z" * 120 + ".a"]
    samples = list(iter_samples(sink.getvalue()))
    assert samples[0]["__key__"] == "k1" and bytes(samples[0]["json"]) == b"{}"


def test_header_checksum_is_the_byte_sum_tar_defines() -> None:
    """Adler-32's pieces sum exactly, even for the largest byte values (no modulo wrap)."""
    rng = random.Random(7)
    headers = [bytes(512), b"\xff" * 512, bytes(range(256)) * 2]
    headers += [rng.randbytes(512) for _ in range(500)]
    headers += [bytes(rng.choice((0, 255)) for _ in range(512)) for _ in range(100)]
    for hdr in headers:
        expected = sum(hdr[:148]) + 8 * ord(" ") + sum(hdr[156:])
        assert header_checksum(hdr) == expected
        assert tarfile.calc_chksums(hdr)[0] == expected  # the stdlib's definition agrees


def test_payloads_are_zero_copy_views() -> None:
    data = bytearray(build([("s.bin", b"abc")]))
    sample = next(iter_samples(data))
    data[512] = ord("X")
    assert isinstance(sample["bin"], memoryview) and bytes(sample["bin"]) == b"Xbc"


def test_grouping_and_split_name() -> None:
    assert split_name("a.b/c.D.Gz") == ("a.b/c", "d.gz")
    assert split_name("noext") == ("noext", "")
    data = build([("x/1.a", b"1"), ("x/1.b", b"2"), ("x/2.a", b"3")])
    spans = group_samples(parse_members(data))
    assert [s.key for s in spans] == ["x/1", "x/2"]
    assert spans[0].start == 0 and spans[1].start == spans[0].end


@pytest.mark.parametrize("where", [0, 100, 148, 600])
def test_corruption_is_detected(where: int) -> None:
    data = bytearray(build([("s.bin", b"abc" * 300)]))
    if where == 600:  # truncate mid-payload
        data = data[:700]
    else:
        data[where] ^= 0x55
    with pytest.raises(IntegrityError):
        parse_members(data)


def test_truncated_header_is_an_error() -> None:
    data = build([("s.bin", b"abc")])[: -1024 - 300]
    with pytest.raises(TarFormatError):
        parse_members(data)


def test_range_without_end_blocks_parses_with_base() -> None:
    data = build([("a.x", b"1" * 10), ("b.x", b"2" * 10)])
    members = parse_members(data[1024:2048], base=1024)
    assert members[0].name == "b.x" and members[0].data == 1536


@pytest.mark.parametrize(
    "members",
    [
        [("s/0001.bin", b"x" * 1000)],
        [("s/0001.jpg", b"j" * 513), ("s/0001.cls", b"7"), ("s/0001.json", b"")],
        [("d" * 120 + "/0001.bin", b"long path: a ustar prefix")],
        [("ü/0001.bin", b"non-ASCII: a pax header")],
    ],
)
def test_parse_record_matches_parse_members(members) -> None:
    record = build(members)[: -len(END_OF_ARCHIVE)]
    assert parse_record(record, base=4096) == parse_members(record, base=4096)


def damaged_record(where: int, flip: int) -> bytearray:
    """One sample's record, damaged at byte ``where`` (XOR ``flip``), truncated mid-payload
    (600) or followed by a partial block (-1)."""
    data = bytearray(build([("s.bin", b"abc" * 300)])[: -len(END_OF_ARCHIVE)])
    if where == 600:  # truncated mid-payload
        return data[:700]
    if where == -1:  # a trailing partial block
        return data + b"\0" * 100
    data[where] ^= flip
    return data


@pytest.mark.parametrize("where", [0, 100, 124, 148, 156, 600, -1])
def test_parse_record_detects_what_parse_members_does(where: int) -> None:
    data = damaged_record(where, flip=0x55)
    with pytest.raises(IntegrityError):
        parse_members(data)
    with pytest.raises(IntegrityError):
        parse_record(data)


@pytest.mark.parametrize("zero_copy", [False, True])
@pytest.mark.parametrize(
    "members",
    [
        [("s/0001.bin", b"x" * 1000)],
        [("s/0001.jpg", b"j" * 513), ("s/0001.cls", b"7"), ("s/0001.json", b"")],
        [("noext", b"a field named by an empty extension")],
    ],
)
def test_record_sample_matches_the_general_parser(members, zero_copy: bool) -> None:
    record = memoryview(build(members)[: -len(END_OF_ARCHIVE)])
    (span,) = group_samples(parse_record(record))
    expected = sample_dict(record, span, zero_copy=zero_copy)
    for checked in (False, True):
        got = record_sample(record, zero_copy=zero_copy, checked=checked)
        assert got == expected
        assert all(type(got[k]) is type(expected[k]) for k in expected)


@pytest.mark.parametrize(
    "members",
    [
        [("d" * 120 + "/0001.bin", b"a ustar prefix")],
        [("ü/0001.bin", b"a pax header")],
        [("a/0001.bin", b"two"), ("a/0002.bin", b"samples")],
    ],
)
def test_record_sample_leaves_other_records_to_the_general_parser(members) -> None:
    record = memoryview(build(members)[: -len(END_OF_ARCHIVE)])
    assert record_sample(record, zero_copy=False, checked=True) is None


@pytest.mark.parametrize("where", [0, 100, 124, 148, 600, -1])
def test_record_sample_refuses_a_damaged_record_it_was_not_told_is_checked(where: int) -> None:
    data = damaged_record(where, flip=0x01)
    assert record_sample(memoryview(data), zero_copy=False, checked=False) is None
