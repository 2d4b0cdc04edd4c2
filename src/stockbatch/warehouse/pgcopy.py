"""Arrow record batches -> PostgreSQL's binary ``COPY`` format, column at a time in numpy.

Why binary: a double is 8 bytes instead of ~18 characters of text that the
client must format and the server must parse. Measured on the gold daily
features of the shared sample (1.88 M rows, 21 columns), on the same loaded
2-core machine: encoding 10 s here vs 27 s for Arrow's CSV writer, and the
server's ``COPY`` 11 s vs 39 s for the CSV text. psycopg's own binary
``write_row`` is per-value Python, slower than both.

Format (PostgreSQL docs, "COPY ... Binary Format"): a header, then per row an
int16 field count and per field an int32 length (-1 for NULL) followed by that
many bytes in network byte order; a trailer of int16 -1. The encoder computes
every row's size and every field's offset with numpy, then scatters each
column's bytes into one buffer: no Python loop over rows or values.

:func:`binary_kinds` says whether every column of a table has an encoding here
(double, integer, boolean, date, timestamp, text); otherwise callers fall back
to CSV ``COPY``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
"""Signature, flags (no OIDs), header extension length 0."""
TRAILER = b"\xff\xff"

_PG_EPOCH_DAYS = 10_957  # 2000-01-01, PostgreSQL's epoch, in days since 1970-01-01
_PG_EPOCH_US = _PG_EPOCH_DAYS * 86_400_000_000

# kind -> (Arrow type the column is cast to, numpy big-endian dtype of its bytes)
_FIXED: dict[str, tuple[pa.DataType, str]] = {
    "float8": (pa.float64(), ">f8"),
    "int2": (pa.int16(), ">i2"),
    "int4": (pa.int32(), ">i4"),
    "int8": (pa.int64(), ">i8"),
    "bool": (pa.bool_(), "u1"),
    "date": (pa.date32(), ">i4"),
    "timestamp": (pa.timestamp("us"), ">i8"),
    "timestamptz": (pa.timestamp("us", "UTC"), ">i8"),
}


def _kind(sql_type: sa.types.TypeEngine[Any]) -> str | None:
    """The binary encoding of a column of ``sql_type``, or None when there is none here."""
    if isinstance(sql_type, sa.Float):  # Double is a Float; PostgreSQL stores float8
        return "float8"
    if isinstance(sql_type, sa.SmallInteger):
        return "int2"
    if isinstance(sql_type, sa.BigInteger):
        return "int8"
    if isinstance(sql_type, sa.Integer):
        return "int4"
    if isinstance(sql_type, sa.Boolean):
        return "bool"
    if isinstance(sql_type, sa.DateTime):
        return "timestamptz" if sql_type.timezone else "timestamp"
    if isinstance(sql_type, sa.Date):
        return "date"
    if isinstance(sql_type, (sa.String, sa.Text)) and not isinstance(sql_type, sa.Enum):
        return "text"
    return None


def binary_kinds(table: sa.Table, columns: Sequence[str]) -> list[str] | None:
    """The encoding of each of ``columns``, or None if one of them has none."""
    kinds = [_kind(table.c[c].type) for c in columns]
    return None if any(k is None for k in kinds) else [k for k in kinds if k is not None]


def _valid_mask(arr: pa.Array) -> np.ndarray:
    if arr.null_count == 0:
        return np.ones(len(arr), dtype=bool)
    return np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), dtype=bool)


def _fixed_bytes(arr: pa.Array, kind: str) -> np.ndarray:
    """(rows, width) uint8 view of the column's big-endian values (nulls: any bytes)."""
    arrow_type, dtype = _FIXED[kind]
    if kind == "timestamptz" and pa.types.is_timestamp(arr.type) and arr.type.tz is None:
        arr = arr.cast(pa.timestamp(arr.type.unit, "UTC"))  # naive values are UTC (loader rule)
    arr = arr.cast(arrow_type)
    if kind in ("date", "timestamp", "timestamptz"):
        physical = pa.int32() if kind == "date" else pa.int64()
        raw = pc.fill_null(arr.cast(physical), 0).to_numpy()
        raw = raw - (_PG_EPOCH_DAYS if kind == "date" else _PG_EPOCH_US)
    elif kind == "bool":
        raw = pc.fill_null(arr, False).to_numpy(zero_copy_only=False)
    elif kind == "float8":
        raw = pc.fill_null(arr, 0.0).to_numpy()
    else:
        raw = pc.fill_null(arr, 0).to_numpy()
    values = np.ascontiguousarray(raw.astype(dtype, copy=False))
    return values.view(np.uint8).reshape(len(arr), values.dtype.itemsize)


def encode(batch: pa.RecordBatch, kinds: Sequence[str]) -> bytes:
    """The rows of ``batch`` in binary COPY format (no header or trailer).

    ``kinds`` come from :func:`binary_kinds`. Arrow nulls become NULL; callers
    turn NaN into null first if NaN must not be stored.
    """
    n = batch.num_rows
    if n == 0:
        return b""
    sizes = np.full(n, 2, dtype=np.int64)  # the int16 field count
    fields: list[tuple[np.ndarray, np.ndarray, Any]] = []  # (valid, width, payload)
    for arr, kind in zip(batch.columns, kinds, strict=True):
        valid = _valid_mask(arr)
        if kind == "text":
            if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
                arr = arr.cast(pa.string())
            arr = pc.fill_null(arr.cast(pa.large_string()), "")  # 64-bit offsets, no nulls
            offsets_buf, data_buf = arr.buffers()[1], arr.buffers()[2]
            offsets = np.frombuffer(offsets_buf, dtype=np.int64, count=n + 1, offset=arr.offset * 8)
            data = (
                np.frombuffer(data_buf, dtype=np.uint8)
                if data_buf is not None
                else np.zeros(0, np.uint8)
            )
            width = np.diff(offsets)
            fields.append((valid, width, (offsets[:-1], data)))
        else:
            payload = _fixed_bytes(arr, kind)
            width = np.where(valid, payload.shape[1], 0)
            fields.append((valid, width, payload))
        sizes += 4 + width

    starts = np.zeros(n, dtype=np.int64)
    np.cumsum(sizes[:-1], out=starts[1:])
    out = np.empty(int(starts[-1] + sizes[-1]), dtype=np.uint8)
    out[starts[:, None] + np.arange(2)] = np.array([len(kinds)], ">i2").view(np.uint8)
    pos = starts + 2
    for valid, width, payload in fields:
        lengths = np.where(valid, width, -1).astype(">i4").view(np.uint8).reshape(n, 4)
        out[pos[:, None] + np.arange(4)] = lengths
        pos = pos + 4
        if isinstance(payload, np.ndarray):
            w = payload.shape[1]
            if valid.all():
                out[pos[:, None] + np.arange(w)] = payload
            else:
                out[pos[valid][:, None] + np.arange(w)] = payload[valid]
        else:
            src_start, data = payload
            total = int(width.sum())
            if total:
                # Byte i of row r's text goes from data[src_start[r] + i] to out[pos[r] + i].
                first = np.repeat(np.cumsum(width) - width, width)
                src = np.repeat(src_start, width) + (np.arange(total) - first)
                out[src + np.repeat(pos - src_start, width)] = data[src]
        pos = pos + width
    return out.tobytes()
