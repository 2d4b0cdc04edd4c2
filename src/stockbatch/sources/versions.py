"""Reading a file unit against its landed version: skip it, read only its appended
bytes, or read it whole (issue 15: a daily ingest's cost follows the new bytes).

A landed file version is remembered by a cheap :class:`Fingerprint`: its size,
``mtime_ns``, its number of ``\\n`` bytes, and a digest of *sampled* blocks (the
first ``SAMPLE_HEAD`` and last ``SAMPLE_TAIL`` bytes plus at most
``SAMPLE_BLOCKS`` blocks of ``SAMPLE_BLOCK`` bytes spread over the rest on a
power-of-two grid, see :func:`sample_ranges`; a file no longer than all of
these is sampled whole). Reading a sample costs at most ``SAMPLE_BYTES`` per
file, whatever its size. On the next ingest (:func:`read_version`):

- same size, same ``mtime_ns``, same sample digest: **unchanged**, skipped;
- larger, and the sample digest of its first ``Fingerprint.size`` bytes is the
  stored one: the old version plus appended lines: only the bytes after the old
  size are read and parsed (**tail**), line numbers continuing from the stored
  line count (the old last byte must be ``\\n``, or the appended bytes must
  start by ending that line; otherwise it is read whole);
- anything else (shrunk, a sample that differs, no fingerprint, ``verify``):
  read **whole**; its bytes are then checked against the landed version's
  *content ids* (below), so a file that is the same, or the same plus appended
  lines, is still recognised exactly, and any other file is a new version.

What sampling can miss: an edit that keeps the length of what it replaces and
falls entirely outside the sampled blocks (e.g. one digit of a price in the
middle of a large file changed in place), when the file also grew, or kept its
size and ``mtime_ns`` (restored by a copy tool, or a rewrite within the file
system's timestamp resolution of the previous read). Any other edit is seen:
a new ``mtime_ns`` at the same size means a whole read, and an edit that
inserts or deletes bytes shifts everything after it, so it changes the last
sampled block of the old region. ``verify=True`` (``stockbatch ingest
--verify``) reads and hashes every file in full and catches any change.

Content ids (the catalog's ``sha256``): a version read whole has the SHA-256 of
the file's bytes; a version that appends to the previous one has
``chain_id(previous id, appended bytes)``, a hash chain, since SHA-256 cannot
be resumed from a digest without re-reading the prefix. A file's id therefore
names its bytes *and* how they were landed: the same bytes read whole get the
plain SHA-256. :func:`extends_chain` checks bytes against a chain of versions
(base first) in one pass.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import pyarrow as pa

SAMPLE_HEAD = 4 << 10
SAMPLE_TAIL = 4 << 10
SAMPLE_BLOCK = 1 << 10
SAMPLE_BLOCKS = 8
SAMPLE_BYTES = SAMPLE_HEAD + SAMPLE_TAIL + SAMPLE_BLOCK * SAMPLE_BLOCKS
"""At most this many bytes are read to sample a file (16 KiB). Kept small on
purpose: Kaggle price files are ~85 KB (median), so 64 KiB head and tail blocks
would read most of them whole, while a length-changing edit anywhere is caught
by the tail block alone; more or larger blocks would only raise the odds of
seeing a same-size edit, which ``verify`` is for."""

CHAIN_PREFIX = b"stockbatch.append.v1\0"

ReadAt = Callable[[int, int], bytes]
"""``read_at(offset, length)``: the bytes at ``offset`` (fewer at the end of the file)."""


@dataclass(frozen=True)
class Fingerprint:
    """How a landed file version looked on disk (cheap to compare, see the module)."""

    size: int
    mtime_ns: int
    lines: int
    """``\\n`` bytes in the version (its lines continue from ``lines + 1``)."""
    sample: str
    has_header: bool
    """False for a version holding only blank lines: appended lines then start a header."""


@dataclass(frozen=True)
class Prior:
    """What the lake knows of a file unit: the active version and how to check it."""

    sha256: str
    chain: tuple[tuple[str, int | None], ...]
    """(content id, size) of the landed parts, the base (read whole) first, the
    active version last; size is None when unknown (then only equality is checked)."""
    fingerprint: Fingerprint | None = None


Kind = Literal["unchanged", "tail", "whole"]


@dataclass(frozen=True)
class UnitVersion:
    """One read unit: what to land, and what to remember about it."""

    kind: Kind
    """``unchanged`` (nothing to land), ``tail`` (``table`` holds only the appended
    lines) or ``whole`` (every line)."""
    table: pa.Table | None
    sha256: str | None
    """The content id (None for an API answer: the ingest hashes its table)."""
    fingerprint: Fingerprint | None = None
    extends: str | None = None
    """The id of the landed version this one is known to extend (or equal)."""
    first_new_line: int | None = None
    bytes_read: int = 0
    changed_history: bool = False
    """True when a landed version existed and this file no longer starts with it."""


def sample_ranges(size: int) -> list[tuple[int, int]]:
    """(offset, length) of the sampled blocks of a file of ``size`` bytes.

    The spaced blocks sit on a grid (multiples of the smallest power-of-two stride
    that gives at most ``SAMPLE_BLOCKS`` of them between the head and the tail), so
    a file that grows a little keeps its blocks: the new version's sample is then
    made of bytes already read to check the old one, plus the appended bytes.
    """
    if size <= SAMPLE_BYTES:
        return [(0, size)] if size else []
    lo, hi = SAMPLE_HEAD, size - SAMPLE_TAIL - SAMPLE_BLOCK  # a block starts in [lo, hi]
    stride = SAMPLE_BLOCK
    while hi // stride - (lo - 1) // stride > SAMPLE_BLOCKS:
        stride *= 2
    first = -(-lo // stride)
    blocks = [(j * stride, SAMPLE_BLOCK) for j in range(first, hi // stride + 1)]
    return [(0, SAMPLE_HEAD), *blocks, (size - SAMPLE_TAIL, SAMPLE_TAIL)]


class _Reads:
    """``read_at`` that serves ranges already read from memory, counting what it read."""

    def __init__(self, read_at: ReadAt) -> None:
        self.read_at = read_at
        self.pieces: list[tuple[int, bytes]] = []
        self.spent = 0

    def __call__(self, offset: int, length: int) -> bytes:
        cached = self._cached(offset, offset + length)
        if cached is not None:
            return cached
        data = self.read_at(offset, length)
        self.spent += len(data)
        if data:
            self.pieces.append((offset, data))
        return data

    def _cached(self, pos: int, end: int) -> bytes | None:
        parts: list[bytes] = []
        while pos < end:
            hit = next(((o, d) for o, d in self.pieces if o <= pos < o + len(d)), None)
            if hit is None:
                return None
            o, d = hit
            parts.append(d[pos - o : end - o])
            pos += len(parts[-1])
        return b"".join(parts)


def sample_digest(read_at: ReadAt, size: int) -> tuple[str, int]:
    """(digest of the sampled blocks of the first ``size`` bytes, bytes read)."""
    h = hashlib.blake2b(size.to_bytes(8, "little"), digest_size=16)
    read = 0
    for offset, length in sample_ranges(size):
        block = read_at(offset, length)
        read += len(block)
        h.update(block)
        if len(block) < length:
            h.update(b"\0short")  # the file is no longer this long: never a match
            break
    return h.hexdigest(), read


def memory_reader(data: bytes | memoryview) -> ReadAt:
    """``read_at`` over bytes already in memory."""
    view = memoryview(data)
    return lambda offset, length: bytes(view[offset : offset + length])


def chain_id(previous: str, appended: bytes | memoryview) -> str:
    """Content id of a version that is version ``previous`` plus ``appended`` bytes."""
    h = hashlib.sha256(CHAIN_PREFIX)
    h.update(previous.encode())
    h.update(b"\0")
    h.update(appended)
    return h.hexdigest()


def extends_chain(data: bytes, chain: tuple[tuple[str, int | None], ...]) -> int | None:
    """The size of the chain's last version when ``data`` starts with it, else None.

    Hashes each part of ``data`` once. A last part of unknown size must equal
    ``data``. Also accepts a last part whose id is the plain SHA-256 of its bytes
    (catalogs written before content ids were chained).
    """
    if not chain:
        return None
    view = memoryview(data)
    prev, prev_size = chain[0]
    base = len(data) if prev_size is None else prev_size
    if base > len(data) or hashlib.sha256(view[:base]).hexdigest() != prev:
        return _plain(view, chain[-1]) if len(chain) > 1 else None
    for cid, size in chain[1:]:
        if size is None or size > len(data) or size < base:
            return _plain(view, chain[-1])
        if chain_id(prev, view[base:size]) != cid:
            return _plain(view, chain[-1])
        prev, base = cid, size
    return base


def _plain(view: memoryview, last: tuple[str, int | None]) -> int | None:
    cid, size = last
    if size is None or size > len(view):
        return None
    return size if hashlib.sha256(view[:size]).hexdigest() == cid else None


def appended_start(old_last: bytes, new_head: bytes, lines: int) -> tuple[int, int] | None:
    """(bytes of the appended region to skip, first new line number) or None.

    ``old_last`` is the old version's last byte, ``new_head`` the first two
    appended bytes. The old last line must have been complete: it ended with
    ``\n``, or the appended bytes start with the ``\n`` (or ``\r\n``) that ends
    it (then it is the same line, unchanged, and is skipped). A lone ``\r`` before
    that would turn into a CRLF line end, so it is not a clean append. Line
    numbers are 1-based and count ``\n`` like the Kaggle parser.
    """
    if old_last in (b"", b"\n"):
        return 0, lines + 1
    if old_last == b"\r":
        return None
    if new_head.startswith(b"\n"):
        return 1, lines + 2
    if new_head.startswith(b"\r\n"):
        return 2, lines + 2
    return None


def fingerprint_of(data: bytes, mtime_ns: int, has_header: bool) -> Fingerprint:
    """The fingerprint of bytes read whole (no further I/O)."""
    digest, _ = sample_digest(memory_reader(data), len(data))
    return Fingerprint(len(data), mtime_ns, data.count(b"\n"), digest, has_header)


Parse = Callable[[bytes], pa.Table]
"""Parse a whole file."""
ParseTail = Callable[[bytes, int], pa.Table]
"""Parse appended lines (no header), the first one numbered as given."""


def read_version(
    read_at: ReadAt,
    size: int,
    mtime_ns: int,
    prior: Prior | None,
    parse: Parse,
    parse_tail: ParseTail,
    *,
    tail: bool = True,
    verify: bool = False,
    force: bool = False,
) -> UnitVersion:
    """Read a file of ``size`` bytes against its landed version ``prior`` (see the module).

    ``tail=False`` never lands a tail (the Kafka transport publishes whole files);
    ``verify`` reads whole and checks every byte against the content ids;
    ``force`` reads and lands every file whole.
    """
    fp = prior.fingerprint if prior is not None else None
    reads = _Reads(read_at)
    if prior is not None and fp is not None and not (verify or force):
        if size == fp.size and mtime_ns == fp.mtime_ns:
            if sample_digest(reads, size)[0] == fp.sample:
                return UnitVersion("unchanged", None, prior.sha256, fp, bytes_read=reads.spent)
        elif (
            size > fp.size
            and tail
            and fp.has_header
            and sample_digest(reads, fp.size)[0] == fp.sample
        ):
            got = _read_tail(reads, size, mtime_ns, prior, fp, parse_tail)
            if got is not None:
                return got
    data = read_at(0, size)
    spent = reads.spent + len(data)
    if len(data) != size:
        raise OSError("the file is shorter than listed")
    return _read_whole(data, mtime_ns, prior, parse, parse_tail, tail and not force, force, spent)


def _read_tail(
    reads: _Reads, size: int, mtime_ns: int, prior: Prior, fp: Fingerprint, parse_tail: ParseTail
) -> UnitVersion | None:
    """The appended lines of a file whose first ``fp.size`` bytes sample like ``fp``."""
    old_last = reads(fp.size - 1, 1) if fp.size else b""
    appended = reads(fp.size, size - fp.size)
    if len(appended) != size - fp.size:
        return None
    start = appended_start(old_last, appended[:2], fp.lines)
    if start is None:
        return None
    skip, first_line = start
    digest, _ = sample_digest(reads, size)  # mostly bytes already read (the grid)
    new_fp = Fingerprint(size, mtime_ns, fp.lines + appended.count(b"\n"), digest, True)
    return UnitVersion(
        "tail",
        parse_tail(appended[skip:], first_line),
        chain_id(prior.sha256, appended),
        new_fp,
        extends=prior.sha256,
        first_new_line=first_line,
        bytes_read=reads.spent,
    )


def _read_whole(
    data: bytes,
    mtime_ns: int,
    prior: Prior | None,
    parse: Parse,
    parse_tail: ParseTail,
    tail: bool,
    force: bool,
    spent: int,
) -> UnitVersion:
    """A file read whole: unchanged, the landed version plus appended lines, or new."""
    base = extends_chain(data, prior.chain) if prior is not None else None
    sha = hashlib.sha256(data).hexdigest()
    if prior is None or base is None:
        fp = fingerprint_of(data, mtime_ns, _has_text(data))
        return UnitVersion(
            "whole", parse(data), sha, fp, bytes_read=spent, changed_history=prior is not None
        )
    lines = data.count(b"\n", 0, base)
    old_last = data[base - 1 : base]
    if base == len(data):  # the same bytes: the next line would be the first new one
        start: tuple[int, int] | None = (0, lines + (1 if old_last in (b"", b"\n") else 2))
    else:
        start = appended_start(old_last, data[base : base + 2], lines)
    has_header = _has_text(data[:base])
    fp = fingerprint_of(data, mtime_ns, has_header or _has_text(data))
    if base == len(data) and not force:
        return UnitVersion("unchanged", None, prior.sha256, fp, bytes_read=spent)
    if tail and start is not None and has_header and base < len(data):
        skip, first_line = start
        return UnitVersion(
            "tail",
            parse_tail(data[base + skip :], first_line),
            chain_id(prior.sha256, memoryview(data)[base:]),
            fp,
            extends=prior.sha256,
            first_new_line=first_line,
            bytes_read=spent,
        )
    # Landed whole although it extends (or equals) the landed version: `process`
    # still treats only the lines from first_new_line as new.
    return UnitVersion(
        "whole",
        parse(data),
        sha,
        fp,
        extends=prior.sha256 if start is not None else None,
        first_new_line=start[1] if start is not None else None,
        bytes_read=spent,
    )


_BLANK = b" \t\r\n\x0b\x0c"


def _has_text(data: bytes) -> bool:
    """True when ``data`` holds more than blank lines (a BOM aside): a header."""
    return bool(data.removeprefix(b"\xef\xbb\xbf").strip(_BLANK))
