"""The versioned format of stockbatch's Kafka messages.

Format ``bars.v1`` (topic ``stockbatch.bars.raw.v1``)
-----------------------------------------------------

One message is a *columnar batch of one symbol's bronze rows from one ingest
unit* (one Kaggle file, one Yahoo request):

- **key**: the symbol, UTF-8. Kafka hashes the key to the partition, so every
  message of a symbol lands in the same partition, in produce order.
- **value**: an Apache Arrow IPC *stream* (schema message + one or more record
  batches) with exactly the fields of ``sources.base.BRONZE_SOURCE_SCHEMA``
  (``schema.BRONZE_BARS`` minus ``ingest_run_id`` and ``bucket``, which the
  collector adds), in that order and with those types. Every value stays the
  text that arrived, so bronze is byte-for-byte what the direct transport would
  have landed. The Arrow body may itself be compressed (Arrow IPC buffer
  compression, self-described); by default it is not, and Kafka compresses
  whole producer batches instead (``kafka.compression``).
- **headers** (UTF-8 values), all required:

  ================== =========================================================
  stockbatch-schema  ``bars.v1`` (this format; a reader refuses others)
  content-type       ``application/vnd.apache.arrow.stream``
  ingest-run-id      the producing ingest run; becomes bronze ``ingest_run_id``
  source             ``kaggle-huge`` | ``kaggle-sp500`` | ``kaggle-nasdaq`` | ``yahoo``
  source-file        the unit's ref (bronze ``source_file``, catalog ``ref``)
  unit-sha256        the unit's fingerprint (file bytes; catalog ``sha256``)
  unit-part          ``<i>/<n>``: part i (0-based) of the n messages of this unit
  row-count          rows in the value
  checksum           ``crc32:<8 hex digits>`` of the value bytes
  ================== =========================================================

  A unit counts as arrived only when all its ``n`` parts have been collected,
  so a producer that died halfway through a unit never activates half a file.

Format ``instruments.v1`` (same topic): instrument metadata a source ships
(``Source.instruments()``), key ``_instruments``, value an Arrow IPC stream of
``schema.INSTRUMENTS``; headers ``stockbatch-schema``, ``content-type``,
``ingest-run-id``, ``source``, ``row-count``, ``checksum``.

Why a columnar batch and not one message per bar: ``benchmarks/bench_kafka.py``
measures both on the 1.88 M-row Huge sample. One JSON record per bar costs a
Python serialisation and a ``produce`` call per row plus ~70 bytes of record
framing each: about 46,000 rows/s. Arrow batches of up to ``kafka.batch_rows``
rows (940 records of ~240 kB for the sample) move about 850,000 rows/s through
the same producer (20x), and the collector reads them zero-copy, with no
parsing at all.

Compatibility rule: a reader accepts exactly the versions in
``SUPPORTED_VERSIONS``. A new field or meaning is a new version (``bars.v2``);
producers switch only after every collector reads it.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc

from stockbatch.schema import INSTRUMENTS
from stockbatch.sources.base import BRONZE_SOURCE_SCHEMA

SCHEMA_HEADER = "stockbatch-schema"
BARS_V1 = "bars.v1"
INSTRUMENTS_V1 = "instruments.v1"
SUPPORTED_VERSIONS = (BARS_V1, INSTRUMENTS_V1)
CONTENT_TYPE = "application/vnd.apache.arrow.stream"
INSTRUMENTS_KEY = b"_instruments"

H_CONTENT_TYPE = "content-type"
H_RUN_ID = "ingest-run-id"
H_SOURCE = "source"
H_SOURCE_FILE = "source-file"
H_UNIT_SHA = "unit-sha256"
H_UNIT_PART = "unit-part"
H_ROW_COUNT = "row-count"
H_CHECKSUM = "checksum"

DEFAULT_MAX_MESSAGE_BYTES = 900_000
"""Upper bound of one encoded value: below Kafka's default 1 MB record limit,
with room for the headers and the record framing."""

IpcCompression = Literal["none", "zstd", "lz4"]
Headers = list[tuple[str, bytes]]

REASONS = (
    "missing_header",
    "bad_header",
    "unsupported_version",
    "checksum_mismatch",
    "bad_payload",
    "schema_mismatch",
    "row_count_mismatch",
    "key_mismatch",
)
"""Every ``DecodeError.reason``; the collector writes it into the dead-letter header."""


class DecodeError(Exception):
    """A message that is not a valid stockbatch message; ``reason`` is one of ``REASONS``."""

    def __init__(self, reason: str, detail: str) -> None:
        assert reason in REASONS, reason
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


@dataclass(frozen=True)
class Envelope:
    """One Kafka record as produced: key, value and headers."""

    key: bytes
    value: bytes
    headers: Headers
    rows: int


@dataclass(frozen=True)
class BarsMessage:
    """A decoded ``bars.v1`` message."""

    symbol: str
    table: pa.Table  # BRONZE_SOURCE_SCHEMA
    ingest_run_id: str
    source: str
    source_file: str
    unit_sha256: str
    part: int
    parts: int


@dataclass(frozen=True)
class InstrumentsMessage:
    """A decoded ``instruments.v1`` message."""

    table: pa.Table  # schema.INSTRUMENTS
    ingest_run_id: str
    source: str


Message = BarsMessage | InstrumentsMessage


def checksum(value: bytes) -> str:
    """The ``checksum`` header of a value: CRC-32 (zlib) in hex.

    Kafka checks its own CRC per record batch on the wire; this one covers the
    payload end to end (producer's bytes to collector's bytes), cheaply.
    """
    return f"crc32:{zlib.crc32(value):08x}"


def _ipc_bytes(table: pa.Table, compression: IpcCompression) -> bytes:
    options = pa.ipc.IpcWriteOptions(compression=None if compression == "none" else compression)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema, options=options) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _bars_table(table: pa.Table) -> pa.Table:
    if table.schema.equals(BRONZE_SOURCE_SCHEMA, check_metadata=False):
        return table  # what every source returns: no copy
    return table.select(BRONZE_SOURCE_SCHEMA.names).cast(BRONZE_SOURCE_SCHEMA)


def _bars_envelope(
    table: pa.Table,
    value: bytes,
    *,
    symbol: str,
    ingest_run_id: str,
    source: str,
    source_file: str,
    unit_sha256: str,
    part: int,
    parts: int,
) -> Envelope:
    headers: Headers = [
        (SCHEMA_HEADER, BARS_V1.encode()),
        (H_CONTENT_TYPE, CONTENT_TYPE.encode()),
        (H_RUN_ID, ingest_run_id.encode()),
        (H_SOURCE, source.encode()),
        (H_SOURCE_FILE, source_file.encode()),
        (H_UNIT_SHA, unit_sha256.encode()),
        (H_UNIT_PART, f"{part}/{parts}".encode()),
        (H_ROW_COUNT, str(table.num_rows).encode()),
        (H_CHECKSUM, checksum(value).encode()),
    ]
    return Envelope(symbol.encode(), value, headers, table.num_rows)


def encode_bars(
    table: pa.Table,
    *,
    symbol: str,
    ingest_run_id: str,
    source: str,
    source_file: str,
    unit_sha256: str,
    part: int,
    parts: int,
    compression: IpcCompression = "none",
) -> Envelope:
    """Encode one batch of one symbol's rows as a ``bars.v1`` record."""
    if not 0 <= part < parts:
        raise ValueError(f"part {part} out of range for {parts} parts")
    table = _bars_table(table)
    return _bars_envelope(
        table,
        _ipc_bytes(table, compression),
        symbol=symbol,
        ingest_run_id=ingest_run_id,
        source=source,
        source_file=source_file,
        unit_sha256=unit_sha256,
        part=part,
        parts=parts,
    )


def encode_unit(
    table: pa.Table,
    *,
    ingest_run_id: str,
    source: str,
    source_file: str,
    unit_sha256: str,
    batch_rows: int,
    max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    compression: IpcCompression = "none",
) -> list[Envelope]:
    """Split one unit's rows into ``bars.v1`` records, numbered ``i/n`` across the unit.

    Rows are grouped by symbol (a unit normally holds one), cut into slices of at
    most ``batch_rows`` rows, and a slice whose encoding exceeds ``max_bytes`` is
    halved until it fits, so no record trips the broker's size limit. Each slice
    is encoded once. An empty unit yields no record.
    """
    slices: list[tuple[str, pa.Table, bytes]] = []
    for symbol, rows in _by_symbol(_bars_table(table)):
        for offset in range(0, rows.num_rows, batch_rows):
            slices.extend(_fit(symbol, rows.slice(offset, batch_rows), max_bytes, compression))
    return [
        _bars_envelope(
            chunk,
            value,
            symbol=symbol,
            ingest_run_id=ingest_run_id,
            source=source,
            source_file=source_file,
            unit_sha256=unit_sha256,
            part=i,
            parts=len(slices),
        )
        for i, (symbol, chunk, value) in enumerate(slices)
    ]


def _by_symbol(table: pa.Table) -> Iterator[tuple[str, pa.Table]]:
    if table.num_rows == 0:
        return
    symbols = table.column("symbol")
    if symbols.null_count:
        raise ValueError("a bronze row without a symbol cannot be keyed")
    distinct = symbols.unique().to_pylist()
    if len(distinct) == 1:
        yield distinct[0], table
        return
    for sym in sorted(distinct):
        yield sym, table.filter(pc.equal(symbols, sym))


def _fit(
    symbol: str, rows: pa.Table, max_bytes: int, compression: IpcCompression
) -> list[tuple[str, pa.Table, bytes]]:
    value = _ipc_bytes(rows, compression)
    if rows.num_rows <= 1 or len(value) <= max_bytes:
        return [(symbol, rows, value)]
    half = rows.num_rows // 2
    return [
        *_fit(symbol, rows.slice(0, half), max_bytes, compression),
        *_fit(symbol, rows.slice(half), max_bytes, compression),
    ]


def encode_instruments(
    table: pa.Table, *, ingest_run_id: str, source: str, compression: IpcCompression = "none"
) -> Envelope:
    """Encode a source's instrument metadata as one ``instruments.v1`` record."""
    table = table.select(INSTRUMENTS.names).cast(INSTRUMENTS)
    value = _ipc_bytes(table, compression)
    headers: Headers = [
        (SCHEMA_HEADER, INSTRUMENTS_V1.encode()),
        (H_CONTENT_TYPE, CONTENT_TYPE.encode()),
        (H_RUN_ID, ingest_run_id.encode()),
        (H_SOURCE, source.encode()),
        (H_ROW_COUNT, str(table.num_rows).encode()),
        (H_CHECKSUM, checksum(value).encode()),
    ]
    return Envelope(INSTRUMENTS_KEY, value, headers, table.num_rows)


# ----------------------------------------------------------------------------- decode


def decode(
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes | None]] | None,
) -> Message:
    """Decode one record; raise ``DecodeError`` for anything that is not a valid message.

    Checks, in order: the version header, the other required headers, the
    checksum, the Arrow stream, the exact schema, the row count, and (bars) that
    every row's symbol is the key.
    """
    h = _headers(headers)
    version = h.get(SCHEMA_HEADER)
    if version is None:
        raise DecodeError("missing_header", f"no {SCHEMA_HEADER} header")
    if version not in SUPPORTED_VERSIONS:
        raise DecodeError(
            "unsupported_version",
            f"{SCHEMA_HEADER}={version!r}; this reader knows {', '.join(SUPPORTED_VERSIONS)}",
        )
    if version == BARS_V1:
        required: tuple[str, ...] = (
            H_CONTENT_TYPE,
            H_RUN_ID,
            H_SOURCE,
            H_SOURCE_FILE,
            H_UNIT_SHA,
            H_UNIT_PART,
            H_ROW_COUNT,
            H_CHECKSUM,
        )
    else:
        required = (H_CONTENT_TYPE, H_RUN_ID, H_SOURCE, H_ROW_COUNT, H_CHECKSUM)
    missing = [name for name in required if not h.get(name)]
    if missing:
        raise DecodeError("missing_header", f"missing or empty: {', '.join(missing)}")
    if h[H_CONTENT_TYPE] != CONTENT_TYPE:
        raise DecodeError("bad_header", f"{H_CONTENT_TYPE}={h[H_CONTENT_TYPE]!r}")
    rows = _int_header(h, H_ROW_COUNT)
    if value is None:
        raise DecodeError("bad_payload", "the record has no value")
    actual = checksum(value)
    if h[H_CHECKSUM] != actual:
        raise DecodeError(
            "checksum_mismatch", f"header says {h[H_CHECKSUM]}, value hashes to {actual}"
        )
    expected_schema = BRONZE_SOURCE_SCHEMA if version == BARS_V1 else INSTRUMENTS
    table = _read_ipc(value)
    if not table.schema.equals(expected_schema, check_metadata=False):
        raise DecodeError(
            "schema_mismatch", f"value schema {_schema_text(table.schema)} is not {version}'s"
        )
    if table.num_rows != rows:
        raise DecodeError("row_count_mismatch", f"header says {rows}, value has {table.num_rows}")
    if version == INSTRUMENTS_V1:
        return InstrumentsMessage(table, h[H_RUN_ID], h[H_SOURCE])
    part, parts = _part_header(h[H_UNIT_PART])
    symbol = _key_text(key)
    symbols = table.column("symbol")
    if symbols.null_count or (rows and symbols.unique().to_pylist() != [symbol]):
        raise DecodeError("key_mismatch", f"rows are not all of the key's symbol {symbol!r}")
    return BarsMessage(
        symbol=symbol,
        table=table,
        ingest_run_id=h[H_RUN_ID],
        source=h[H_SOURCE],
        source_file=h[H_SOURCE_FILE],
        unit_sha256=h[H_UNIT_SHA],
        part=part,
        parts=parts,
    )


def _headers(headers: Sequence[tuple[str, bytes | None]] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, raw in headers or ():
        if name in out:
            raise DecodeError("bad_header", f"header {name!r} appears twice")
        try:
            out[name] = raw.decode("utf-8") if raw is not None else ""
        except UnicodeDecodeError:
            raise DecodeError("bad_header", f"header {name!r} is not UTF-8") from None
    return out


def _int_header(h: dict[str, str], name: str) -> int:
    text = h[name]
    if not text.isascii() or not text.isdigit():
        raise DecodeError("bad_header", f"{name}={text!r} is not a count")
    return int(text)


def _part_header(text: str) -> tuple[int, int]:
    i, sep, n = text.partition("/")
    if not sep or not (i.isascii() and i.isdigit() and n.isascii() and n.isdigit()):
        raise DecodeError("bad_header", f"{H_UNIT_PART}={text!r} is not <i>/<n>")
    part, parts = int(i), int(n)
    if not 0 <= part < parts:
        raise DecodeError("bad_header", f"{H_UNIT_PART}={text!r} is out of range")
    return part, parts


def _key_text(key: bytes | None) -> str:
    if not key:
        raise DecodeError("key_mismatch", "the record has no key (the symbol)")
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        raise DecodeError("key_mismatch", "the key is not UTF-8") from None


def _read_ipc(value: bytes) -> pa.Table:
    try:
        with pa.ipc.open_stream(pa.py_buffer(value)) as reader:
            return reader.read_all()
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DecodeError("bad_payload", f"not an Arrow IPC stream: {exc}") from None


def _schema_text(s: pa.Schema) -> str:
    text = ", ".join(f"{f.name}:{f.type}" for f in s)
    return f"({text[:200]}...)" if len(text) > 200 else f"({text})"
