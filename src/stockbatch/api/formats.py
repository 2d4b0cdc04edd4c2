"""How data leaves the API: JSON pages with an opaque cursor, or a streamed CSV /
Parquet file written exactly like ``stockbatch export`` writes it (same writer, same
columns, lineage in the Parquet metadata or an ``X-Stockbatch-Lineage`` header)."""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from fastapi.responses import Response, StreamingResponse

from stockbatch.api.errors import ApiError

FORMATS = ("json", "csv", "parquet")
MEDIA = {"csv": "text/csv; charset=utf-8", "parquet": "application/vnd.apache.parquet"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SYMBOL = re.compile(r"^[A-Z0-9][A-Z0-9.\-_=^]{0,63}$|^\^[A-Z0-9.\-_=]{1,63}$")


def encode_cursor(*values: Any) -> str:
    """An opaque cursor for the key of a page's last row."""
    raw = json.dumps([v.isoformat() if isinstance(v, dt.date) else v for v in values])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, n: int) -> list[Any]:
    """The ``n`` key values of a cursor this API made; 400 for anything else."""
    try:
        pad = "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(cursor + pad))
    except (ValueError, UnicodeDecodeError):
        values = None
    if not isinstance(values, list) or len(values) != n:
        raise ApiError(400, "invalid cursor: pass the next_cursor of the previous page unchanged")
    if not all(isinstance(v, str | int) and not isinstance(v, bool) for v in values):
        raise ApiError(400, "invalid cursor: pass the next_cursor of the previous page unchanged")
    # No key this API pages by holds a control character; PostgreSQL refuses a NUL in text.
    if any(isinstance(v, str) and _CONTROL.search(v) for v in values):
        raise ApiError(400, "invalid cursor: pass the next_cursor of the previous page unchanged")
    return values


def cursor_date(value: Any) -> dt.date:
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise ApiError(400, "invalid cursor: pass the next_cursor unchanged") from None


def check_symbol(text: str) -> str:
    """One symbol, upper-cased; 400 when it cannot be a ticker."""
    sym = text.strip().upper()
    if not _SYMBOL.match(sym):
        shown = sym[:20].encode("unicode_escape").decode()
        raise ApiError(
            400,
            f"invalid symbol {shown!r}: tickers are 1-64 letters, digits and . - _ = ^ "
            "(e.g. AAPL, BRK-B)",
        )
    return sym


def parse_symbols(text: str | None, most: int) -> list[str] | None:
    """``A,B,C`` -> sorted unique symbols (None when not given); 400 past ``most``."""
    if text is None:
        return None
    parts = [p for p in text.split(",") if p.strip()]
    if not parts:
        raise ApiError(400, "symbols is empty: give symbols as A,B,C or leave it out")
    if len(parts) > most:
        raise ApiError(
            400,
            f"{len(parts):,} symbols asked, at most {most} per request: split the request, "
            "or leave symbols out to get every symbol (analyst role)",
        )
    return sorted({check_symbol(p) for p in parts})


def parse_columns(text: str | None, arrow: pa.Schema, key: tuple[str, ...]) -> list[str]:
    """The columns to return: the key plus those asked, in schema order."""
    if text is None:
        return list(arrow.names)
    asked = {c.strip() for c in text.split(",") if c.strip()}
    unknown = sorted(asked - set(arrow.names))
    if unknown:
        shown = ", ".join(u[:40] for u in unknown[:5])
        raise ApiError(400, f"unknown columns: {shown}; the columns are {', '.join(arrow.names)}")
    return [n for n in arrow.names if n in asked or n in key]


def json_rows(table: pa.Table) -> str:
    """Rows as a JSON array of objects (Polars writes it, far faster than per-value Python)."""
    if table.num_rows == 0:
        return "[]"
    return pl.from_arrow(table).write_json()  # type: ignore[union-attr]


def json_page(table: pa.Table, next_cursor: str | None, **extra: Any) -> Response:
    """``{"items": [...], "next_cursor": ..., **extra}``."""
    head = "".join(f"{json.dumps(k)}:{json.dumps(v)}," for k, v in extra.items())
    body = f'{{{head}"items":{json_rows(table)},"next_cursor":{json.dumps(next_cursor)}}}'
    return Response(body, media_type="application/json")


class _Sink(io.RawIOBase):
    """A write-only file whose bytes are taken out after each row group (streaming)."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        data = bytes(b)
        self.chunks.append(data)
        return len(data)

    def take(self) -> bytes:
        out, self.chunks = b"".join(self.chunks), []
        return out


def _csv_stream(batches: Iterable[pa.Table], count: Callable[[int], None]) -> Iterator[bytes]:
    first = True
    for table in batches:
        sink = pa.BufferOutputStream()
        pacsv.write_csv(table, sink, pacsv.WriteOptions(include_header=first))
        first = False
        count(table.num_rows)
        yield sink.getvalue().to_pybytes()


def _parquet_stream(
    batches: Iterable[pa.Table], arrow: pa.Schema, count: Callable[[int], None]
) -> Iterator[bytes]:
    sink = _Sink()
    with pq.ParquetWriter(sink, arrow, compression="zstd") as writer:
        for table in batches:
            writer.write_table(table.replace_schema_metadata(arrow.metadata))
            count(table.num_rows)
            yield sink.take()
    yield sink.take()


def download(
    batches: Iterable[pa.Table],
    arrow: pa.Schema,
    fmt: str,
    filename: str,
    lineage: dict[str, str],
    count: Callable[[int], None],
) -> StreamingResponse:
    """Stream ``batches`` as a CSV or Parquet file named ``filename``.

    Parquet carries ``lineage`` in its metadata (as ``stockbatch export`` does); both
    formats also get it as the ``X-Stockbatch-Lineage`` header (JSON).
    """
    if fmt == "parquet":
        md = {**(arrow.metadata or {}), **{k.encode(): v.encode() for k, v in lineage.items()}}
        body = _parquet_stream(batches, arrow.with_metadata(md), count)
    else:
        body = _csv_stream(batches, count)
    headers = {
        "Content-Disposition": f'attachment; filename="{filename}.{fmt}"',
        "X-Stockbatch-Lineage": json.dumps(lineage, separators=(",", ":")),
    }
    return StreamingResponse(body, media_type=MEDIA[fmt], headers=headers)
