"""The source interface: what every ingest source (Kaggle files, Yahoo) provides.

A source lists its *units* (one file, or one Yahoo request) cheaply, then reads
one unit at a time into a bronze table: every value exactly as it arrived, as
text, so that nothing is lost before validation. The pipeline adds
``ingest_run_id`` and ``bucket`` and writes the rows to the bronze layer.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal, TypeAlias

import pyarrow as pa

from stockbatch.schema import BRONZE_BARS
from stockbatch.sources.versions import Prior, UnitVersion

SourceName = Literal["kaggle-huge", "kaggle-sp500", "kaggle-nasdaq", "yahoo"]
SOURCE_NAMES: tuple[SourceName, ...] = ("kaggle-huge", "kaggle-sp500", "kaggle-nasdaq", "yahoo")

PIPELINE_FIELDS = ("ingest_run_id", "bucket")
"""Bronze fields the pipeline adds; a source never fills them."""

BRONZE_SOURCE_SCHEMA = pa.schema([f for f in BRONZE_BARS if f.name not in PIPELINE_FIELDS])
"""What ``Source.read`` returns: ``schema.BRONZE_BARS`` minus the pipeline's fields."""

ECHO_LIMIT = 100
"""At most this many characters of any input are quoted in a message (``echo``)."""

ScanProgress: TypeAlias = Callable[[int, int], None]
"""``on_scan(entries_looked_at, units_found)``: called by ``Source.units`` while it lists.

Called every ``SCAN_REPORT_EVERY`` entries and once when the listing is complete, so a
long folder scan can show that it is moving and how much it has found.
"""

SCAN_REPORT_EVERY = 1000


def echo(text: str | bytes, limit: int = ECHO_LIMIT, *, quote: bool = True) -> str:
    """Input text made safe to quote in a message, a log line or the run manifest.

    Repr-like: control characters, invalid bytes and other non-printable characters
    are escaped (``\\x1b``, ``\\n``, ``\\u202e``; an undecodable byte of a file name
    or of bytes as ``\\xff``), so nothing reaches a terminal raw; at most ``limit``
    characters are shown (escapes included), and a cut text says how long it was:
    ``'abc...' (10,485,760 chars)``. ``quote=False`` leaves out the quotes (for
    provider messages that read as prose).
    """
    unit = "chars"
    if isinstance(text, bytes):
        total = len(text)
        text = text[: 4 * limit + 4].decode("utf-8", errors="surrogateescape")
        unit = "bytes"
    else:
        total = len(text)
    shown: list[str] = []
    used = 0
    cut = False
    for ch in text:
        if ch.isprintable() and ch not in "'\\":
            piece = ch
        elif ch in "'\\":
            piece = "\\" + ch if quote else ch
        elif "\udc80" <= ch <= "\udcff":  # an undecodable byte (surrogateescape)
            piece = f"\\x{ord(ch) - 0xDC00:02x}"
        else:
            piece = repr(ch)[1:-1]
        if used + len(piece) > limit:
            cut = True
            break
        shown.append(piece)
        used += len(piece)
    body = "".join(shown)
    if not quote:
        return f"{body}... ({total:,} {unit})" if cut else body
    return f"'{body}'... ({total:,} {unit})" if cut else f"'{body}'"


@dataclass(frozen=True)
class SourceUnit:
    """One unit of ingest work: one file, or one Yahoo request.

    ``ref`` is stable across runs (the file's path relative to the input root with
    ``/`` separators, or ``yahoo/<SYMBOL>/<start>..<end>``) and becomes the bronze
    ``source_file``. For files, ``size`` and ``mtime_ns`` are what listing saw (a
    ``stat``, no read: the ingest compares them with the landed version's
    fingerprint, see ``versions.py``); ``sha256`` is None unless a source knows
    its unit's content id without reading it. All three are None for Yahoo.

    ``error`` is set when listing already found that the unit cannot be read (an
    unreadable file or folder, a FIFO, a broken link...): such a unit is listed so
    that it is rejected by name, and ``read`` raises ``SourceError(error)`` for it.
    It is never taken for an unchanged unit.
    """

    source: str
    ref: str
    path: Path | None
    sha256: str | None
    size: int | None
    error: str | None = None
    mtime_ns: int | None = None


class SourceError(Exception):
    """A unit could not be read; the message says what to do about it.

    The pipeline records the error against ``ref`` and carries on with the other
    units, so one bad file or symbol never stops a run.
    """

    def __init__(self, message: str, *, ref: str | None = None) -> None:
        self.message = message
        self.ref = ref
        super().__init__(f"{ref}: {message}" if ref else message)


class UnknownLayoutError(SourceError):
    """A file whose header (or name) matches no known layout."""


class SymbolNotFoundError(SourceError):
    """The provider does not know the symbol (unknown, or delisted)."""

    def __init__(self, symbol: str, message: str, *, ref: str | None = None) -> None:
        self.symbol = symbol
        super().__init__(message, ref=ref)


class RateLimitedError(SourceError):
    """The provider kept refusing with HTTP 429 after every retry."""

    def __init__(self, message: str, *, attempts: int, ref: str | None = None) -> None:
        self.attempts = attempts
        super().__init__(message, ref=ref)


ReadOutcome: TypeAlias = "pa.Table | SourceError"
"""What ``Source.read_many`` yields per unit: its table, or why it could not be read."""


class Source(ABC):
    """One ingest source. Implementations: ``KaggleSource``, ``YahooSource``."""

    name: ClassVar[str]
    #: True when "nothing to read" is a normal outcome (e.g. every Yahoo symbol is
    #: already up to date) rather than a mistake in the path or arguments.
    allows_no_units: ClassVar[bool] = False

    @abstractmethod
    def units(self, on_scan: ScanProgress | None = None) -> Iterator[SourceUnit]:
        """List the units to ingest, in a stable order (cheap: no parsing of units).

        A unit that listing found unreadable is listed too, with ``error`` set.
        ``on_scan`` (optional) is told how far a long listing has got (``ScanProgress``).
        """

    @abstractmethod
    def read(self, unit: SourceUnit) -> pa.Table:
        """Read one unit into a table of ``BRONZE_SOURCE_SCHEMA``.

        Raises ``SourceError`` (or a subclass) when this unit cannot be read; an
        empty unit is a table with 0 rows, not an error.
        """

    def instruments(self) -> pa.Table | None:
        """Instrument metadata (``schema.INSTRUMENTS``) when the source has some, else None."""
        return None

    def describe(self) -> str:
        """What this source reads, for messages (``folder /data/kaggle``)."""
        return self.name

    def read_many(self, units: list[SourceUnit]) -> Iterator[tuple[SourceUnit, ReadOutcome]]:
        """``read`` every unit, in order; a unit-level failure is yielded, not raised.

        Sequential here; a source whose reads are independent (files) may read
        ahead in parallel, keeping the order and a bounded number in memory.
        """
        for unit in units:
            if unit.error is not None:
                yield unit, SourceError(unit.error, ref=unit.ref)
                continue
            try:
                yield unit, self.read(unit)
            except SourceError as exc:
                yield unit, exc

    def read_versions(
        self,
        jobs: list[tuple[SourceUnit, Prior | None]],
        *,
        tail: bool = True,
        verify: bool = False,
        force: bool = False,
    ) -> Iterator[tuple[SourceUnit, UnitVersion | SourceError]]:
        """Read every unit against its landed version (``Prior``), in order.

        Here (API sources): every unit is read whole, ``read_many``'s way; a file
        source overrides this to skip unchanged files and read only appended
        bytes (``versions.read_version``; ``tail``, ``verify``, ``force`` as there).
        """
        for unit, outcome in self.read_many([unit for unit, _ in jobs]):
            if isinstance(outcome, SourceError):
                yield unit, outcome
            else:
                yield unit, UnitVersion("whole", outcome, unit.sha256)


def empty_bronze() -> pa.Table:
    """A 0-row table of ``BRONZE_SOURCE_SCHEMA``."""
    # Not Schema.empty_table(): that imports pandas (seconds) on first use.
    columns = [pa.nulls(0, f.type) for f in BRONZE_SOURCE_SCHEMA]
    return pa.Table.from_arrays(columns, schema=BRONZE_SOURCE_SCHEMA)
