"""The source interface: what every ingest source (Kaggle files, Yahoo) provides.

A source lists its *units* (one file, or one Yahoo request) cheaply, then reads
one unit at a time into a bronze table: every value exactly as it arrived, as
text, so that nothing is lost before validation. The pipeline adds
``ingest_run_id`` and ``bucket`` and writes the rows to the bronze layer.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal, TypeAlias

import pyarrow as pa

from stockbatch.schema import BRONZE_BARS

SourceName = Literal["kaggle-huge", "kaggle-sp500", "kaggle-nasdaq", "yahoo"]
SOURCE_NAMES: tuple[SourceName, ...] = ("kaggle-huge", "kaggle-sp500", "kaggle-nasdaq", "yahoo")

PIPELINE_FIELDS = ("ingest_run_id", "bucket")
"""Bronze fields the pipeline adds; a source never fills them."""

BRONZE_SOURCE_SCHEMA = pa.schema([f for f in BRONZE_BARS if f.name not in PIPELINE_FIELDS])
"""What ``Source.read`` returns: ``schema.BRONZE_BARS`` minus the pipeline's fields."""


@dataclass(frozen=True)
class SourceUnit:
    """One unit of ingest work: one file, or one Yahoo request.

    ``ref`` is stable across runs (the file's path relative to the input root with
    ``/`` separators, or ``yahoo/<SYMBOL>/<start>..<end>``) and becomes the bronze
    ``source_file``. For files, ``sha256`` and ``size`` describe the bytes, so the
    pipeline can skip a file it already ingested unchanged; they are None for Yahoo.
    """

    source: str
    ref: str
    path: Path | None
    sha256: str | None
    size: int | None


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
    def units(self) -> Iterator[SourceUnit]:
        """List the units to ingest, in a stable order (cheap: no parsing)."""

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
            try:
                yield unit, self.read(unit)
            except SourceError as exc:
                yield unit, exc


def empty_bronze() -> pa.Table:
    """A 0-row table of ``BRONZE_SOURCE_SCHEMA``."""
    # Not Schema.empty_table(): that imports pandas (seconds) on first use.
    columns = [pa.nulls(0, f.type) for f in BRONZE_SOURCE_SCHEMA]
    return pa.Table.from_arrays(columns, schema=BRONZE_SOURCE_SCHEMA)
