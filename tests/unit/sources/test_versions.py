"""Reading a file against its landed version (sources/versions.py): sampling, content
ids, where appended lines start. Real bytes of a shared-sample file, no mocks."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow as pa
import pytest

from stockbatch.sources.kaggle_parse import SMALL_LINES, parse_lines_fast, parse_lines_small
from stockbatch.sources.versions import (
    SAMPLE_BYTES,
    Prior,
    UnitVersion,
    appended_start,
    chain_id,
    extends_chain,
    fingerprint_of,
    memory_reader,
    read_version,
    sample_digest,
    sample_ranges,
)


@pytest.fixture(scope="module")
def big(huge_sample: Path) -> bytes:
    """The largest file of the shared Huge sample (hundreds of KB)."""
    path = max(huge_sample.rglob("*.us.txt"), key=lambda p: p.stat().st_size)
    data = path.read_bytes()
    assert len(data) > 4 * SAMPLE_BYTES
    return data


def test_sample_reads_a_bounded_number_of_bytes(big: bytes) -> None:
    for size in (0, 10, SAMPLE_BYTES, SAMPLE_BYTES + 1, len(big), 10**9):
        ranges = sample_ranges(size)
        total = sum(n for _, n in ranges)
        assert total == size if size <= SAMPLE_BYTES else SAMPLE_BYTES // 2 < total <= SAMPLE_BYTES
        ends = [o + n for o, n in ranges]
        assert all(o >= 0 for o, _ in ranges) and ends == sorted(ends) and ends[-1:] in ([], [size])
        assert all(e <= o for e, (o, _) in zip(ends, ranges[1:], strict=False)), "no overlap"
    digest, read = sample_digest(memory_reader(big), len(big))
    assert read <= SAMPLE_BYTES
    assert digest == sample_digest(memory_reader(big), len(big))[0]


def test_sample_sees_a_shift_but_not_every_same_size_edit(big: bytes) -> None:
    size = len(big)
    base, _ = sample_digest(memory_reader(big), size)
    # An inserted byte in the middle shifts the tail block: caught.
    mid = size // 2
    shifted = big[:mid] + b"0" + big[mid:]
    assert sample_digest(memory_reader(shifted), size)[0] != base
    # A same-size edit outside the sampled blocks: missed (documented; --verify catches it).
    covered = {i for o, n in sample_ranges(size) for i in range(o, o + n)}
    at = next(i for i in range(mid, size) if i not in covered and big[i : i + 1].isdigit())
    edited = big[:at] + (b"1" if big[at : at + 1] != b"1" else b"2") + big[at + 1 :]
    assert sample_digest(memory_reader(edited), size)[0] == base
    assert hashlib.sha256(edited).hexdigest() != hashlib.sha256(big).hexdigest()


def test_extends_chain_checks_every_part(big: bytes) -> None:
    cut1, cut2 = len(big) // 2, len(big) - 100
    cut1 = big.index(b"\n", cut1) + 1
    base = hashlib.sha256(big[:cut1]).hexdigest()
    second = chain_id(base, big[cut1:cut2])
    chain = ((base, cut1), (second, cut2))
    assert extends_chain(big, chain) == cut2
    assert extends_chain(big[:cut2], chain) == cut2
    assert extends_chain(big[: cut2 - 1], chain) is None
    tampered = big[:10] + b"X" + big[11:]
    assert extends_chain(tampered, chain) is None
    # A catalog written before chained ids: the last part's id is its plain SHA-256.
    legacy = ((base, cut1), (hashlib.sha256(big[:cut2]).hexdigest(), cut2))
    assert extends_chain(big, legacy) == cut2
    # Unknown size (a Kafka-published version): only equality is recognised.
    assert extends_chain(big, ((hashlib.sha256(big).hexdigest(), None),)) == len(big)


def test_where_appended_lines_start() -> None:
    assert appended_start(b"\n", b"2", 10) == (0, 11)
    assert appended_start(b"", b"D", 0) == (0, 1)
    assert appended_start(b"0", b"\n2", 10) == (1, 12)  # ends the old unterminated line
    assert appended_start(b"0", b"\r\n", 10) == (2, 12)
    assert appended_start(b"0", b"2", 10) is None  # the old last line goes on: changed
    assert appended_start(b"\r", b"\n2", 10) is None  # would become a CRLF line end


def _tables(data: bytes) -> pa.Table:
    return pa.table({"n": [len(data)]})


def test_read_version_paths(big: bytes) -> None:
    old = big[: big.index(b"\n", len(big) // 2) + 1]
    sha = hashlib.sha256(old).hexdigest()
    fp = fingerprint_of(old, 1, True)
    prior = Prior(sha, ((sha, len(old)),), fp)
    tails: list[tuple[int, int]] = []

    def parse_tail(data: bytes, first: int) -> pa.Table:
        tails.append((len(data), first))
        return _tables(data)

    def run(data: bytes, mtime: int, **kw: bool) -> UnitVersion:
        return read_version(memory_reader(data), len(data), mtime, prior, _tables, parse_tail, **kw)

    same = run(old, 1)
    assert same.kind == "unchanged" and same.bytes_read <= SAMPLE_BYTES
    grown = run(big, 2)
    assert grown.kind == "tail"
    assert tails[-1] == (len(big) - len(old), old.count(b"\n") + 1)
    assert grown.sha256 == chain_id(sha, big[len(old) :])
    # Bytes read: the old sample and the new bytes; the new sample's grid blocks are
    # those of the old one (the file grew by less than doubles the stride).
    assert grown.bytes_read <= SAMPLE_BYTES + len(big) - len(old)
    touched = run(old, 5)  # a new mtime: read whole, recognised as the same bytes
    assert touched.kind == "unchanged" and touched.fingerprint is not None
    assert touched.fingerprint.mtime_ns == 5
    verified = run(big, 2, verify=True)  # whole read, still lands only the tail
    assert verified.kind == "tail" and verified.sha256 == grown.sha256
    forced = run(big, 2, force=True)
    assert forced.kind == "whole" and forced.extends == sha
    kafka = run(big, 2, tail=False)
    assert kafka.kind == "whole" and kafka.first_new_line == old.count(b"\n") + 1
    changed = run(b"X" + big[1:], 2)
    assert changed.kind == "whole" and changed.changed_history
    assert changed.extends is None


def test_short_appends_parse_like_arrow(huge_sample: Path) -> None:
    """The small-body parser (a day's appended lines) gives Arrow's CSV reader's result."""
    checked = 0
    for path in sorted(huge_sample.rglob("*.us.txt"))[:40]:
        text = path.read_bytes().decode("utf-8").replace("\r\n", "\n")
        lines = text.split("\n")[1:]
        for start in range(0, len(lines), 97):
            body = "\n".join(lines[start : start + SMALL_LINES]) + "\n"
            body = body.replace("\n\n", "\n").lstrip("\n")
            small = parse_lines_small(body, start + 2, 7)
            fast = parse_lines_fast(body, start + 2, 7)
            assert (small is None) == (fast is None)
            if small is None or fast is None:
                continue
            assert all(a.equals(b) for a, b in zip(small[0], fast[0], strict=True))
            assert all(a.equals(b) for a, b in zip(small[1:], fast[1:], strict=True))
            checked += 1
    assert checked > 100
    # An empty field is null, as Arrow makes it.
    small = parse_lines_small("2017-11-10,,1,1,1,5,0\n", 9, 7)
    assert small is not None and small[0][1].null_count == 1
    assert parse_lines_small("a,b\n", 9, 7) is None  # a wrong field count: the generic path
