"""The three Kaggle file layouts and their parser: bytes of one file -> bronze rows.

Parsing keeps every physical line: the file is decoded as UTF-8 (bad bytes
become U+FFFD, which then fails to parse downstream: ``unparseable`` is the
processing stage's call), split into lines (``\\n`` or ``\\r\\n``), fully blank
lines are skipped, the first non-blank line is the header, and every other line
becomes exactly one bronze row. Fields are split on ``,`` (the Kaggle files
have no quoting) and kept as text, stripped of surrounding ASCII whitespace; an
empty field is null (missing, not unparseable). A line whose field count
differs from the header's keeps its text in ``raw_line`` and has null fields.
``n_fields`` saturates at 32767 (int16).
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from itertools import accumulate

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv

from stockbatch.sources.base import (
    BRONZE_SOURCE_SCHEMA,
    SourceName,
    UnknownLayoutError,
    echo,
    empty_bronze,
)
from stockbatch.sources.symbols import kaggle_layout_of, symbol_for_file

WHITESPACE = " \t\r\n\x0b\x0c"
"""What "surrounding whitespace" and "blank line" mean here: ASCII whitespace only."""

_INT16_MAX = 32767


@dataclass(frozen=True)
class KaggleLayout:
    """One Kaggle file layout: its header, file-name suffix and column mapping."""

    source: SourceName
    title: str
    header: tuple[str, ...]
    file_suffix: str
    is_adjusted: bool
    columns: tuple[tuple[str, int], ...]
    """(bronze field, header position); a bronze field not listed is null."""

    def describe(self) -> str:
        """``title (*suffix): header`` for error messages."""
        return f"{self.title} (*{self.file_suffix}): {','.join(self.header)}"


LAYOUTS: tuple[KaggleLayout, ...] = (
    KaggleLayout(
        source="kaggle-huge",
        title="Huge Stock Market Dataset",
        header=("Date", "Open", "High", "Low", "Close", "Volume", "OpenInt"),
        file_suffix=".us.txt",
        # Boris Marjanovic's files are split- and dividend-adjusted already.
        is_adjusted=True,
        columns=(
            ("trade_date", 0),
            ("open", 1),
            ("high", 2),
            ("low", 3),
            ("close", 4),
            ("volume", 5),
        ),
    ),
    KaggleLayout(
        source="kaggle-sp500",
        title="S&P 500 stock data (5yr)",
        header=("date", "open", "high", "low", "close", "volume", "Name"),
        file_suffix="_data.csv",
        is_adjusted=False,
        columns=(
            ("trade_date", 0),
            ("open", 1),
            ("high", 2),
            ("low", 3),
            ("close", 4),
            ("volume", 5),
        ),
    ),
    KaggleLayout(
        source="kaggle-nasdaq",
        title="Stock Market Dataset (NASDAQ)",
        header=("Date", "Open", "High", "Low", "Close", "Adj Close", "Volume"),
        file_suffix=".csv",
        is_adjusted=False,
        columns=(
            ("trade_date", 0),
            ("open", 1),
            ("high", 2),
            ("low", 3),
            ("close", 4),
            ("adj_close", 5),
            ("volume", 6),
        ),
    ),
)
_LAYOUT_BY_HEADER = {tuple(h.casefold() for h in lay.header): lay for lay in LAYOUTS}
_LAYOUT_BY_SOURCE = {lay.source: lay for lay in LAYOUTS}


def detect_layout(header_line: str) -> KaggleLayout | None:
    """The layout whose header this is (fields stripped, case-insensitive), or None."""
    key = tuple(f.strip(WHITESPACE).casefold() for f in header_line.split(","))
    return _LAYOUT_BY_HEADER.get(key)


def parse_kaggle_bytes(data: bytes, *, file_name: str, ref: str, quote: bool = True) -> pa.Table:
    """Parse one Kaggle price file into a table of ``BRONZE_SOURCE_SCHEMA``.

    ``file_name`` gives the symbol; ``ref`` becomes ``source_file``. An empty or
    header-only file gives 0 rows. Raises ``UnknownLayoutError`` when the header
    matches no layout or the name does not fit the header's layout; its message
    quotes at most ``ECHO_LIMIT`` characters of the header, escaped, and none at
    all with ``quote=False`` (a file reached through a link out of the input folder).
    """
    text = data.decode("utf-8-sig", errors="replace")
    if "\r\n" in text:
        text = text.replace("\r\n", "\n")
    header = _find_header(text)
    if header is None:
        return empty_bronze()  # 0 bytes, or blank lines only
    header_idx, header_line, body = header
    layout = detect_layout(header_line)
    if layout is None:
        shown = (
            f"header {echo(header_line.strip(WHITESPACE))}"
            if quote
            else "header (not shown: the file is a link out of the input folder)"
        )
        by_name = kaggle_layout_of(file_name)
        if by_name is not None:
            named = _LAYOUT_BY_SOURCE[by_name]  # the name says which layout the file should have
            expected = f"a *{named.file_suffix} file starts with {','.join(named.header)}"
        else:
            expected = "accepted: " + "; ".join(lay.describe() for lay in LAYOUTS)
        raise UnknownLayoutError(
            f"{shown} (line {header_idx + 1}) matches no Kaggle layout; {expected}. "
            "Convert or remove the file.",
            ref=ref,
        )
    try:
        if kaggle_layout_of(file_name) != layout.source:
            raise ValueError(f"the file name {echo(file_name)} is not *{layout.file_suffix}")
        symbol = symbol_for_file(layout.source, file_name)
    except ValueError as exc:
        raise UnknownLayoutError(
            f"the header is the {layout.describe()} layout, but {exc}: the symbol comes "
            f"from the file name, so rename the file to <SYMBOL>{layout.file_suffix}.",
            ref=ref,
        ) from None

    first_line_no = header_idx + 2  # physical line number of the body's first line
    n = len(layout.header)
    parsed = parse_lines_fast(body, first_line_no, n) or parse_lines_generic(body, first_line_no, n)
    return _assemble(layout, symbol, ref, *parsed)


def parse_kaggle_lines(
    data: bytes, *, source: SourceName, file_name: str, ref: str, first_line_no: int
) -> pa.Table:
    """Parse lines appended to a Kaggle file already landed (no header: the landed
    version's header, of layout ``source``, applies).

    ``data`` starts at the beginning of a line, numbered ``first_line_no``; every
    line becomes a row exactly as :func:`parse_kaggle_bytes` makes it from the
    whole file (same decoding, blank lines skipped, the same line numbers).
    """
    layout = _LAYOUT_BY_SOURCE[source]
    symbol = symbol_for_file(layout.source, file_name)
    text = data.decode("utf-8", errors="replace")
    if "\r\n" in text:
        text = text.replace("\r\n", "\n")
    if not text.strip(WHITESPACE):
        return empty_bronze()
    n = len(layout.header)
    parsed = (
        parse_lines_small(text, first_line_no, n)
        or parse_lines_fast(text, first_line_no, n)
        or parse_lines_generic(text, first_line_no, n)
    )
    return _assemble(layout, symbol, ref, *parsed)


SMALL_LINES = 64
"""Bodies of at most this many lines (a day's appended lines) skip Arrow's CSV reader,
whose fixed cost (~0.8 ms) would otherwise dominate an append ingest of many files."""


def parse_lines_small(body: str, first_line_no: int, n: int) -> _Parsed | None:
    """A short clean body (see ``parse_lines_fast``) split in Python: the same result.

    Returns None when the body is longer than ``SMALL_LINES`` lines or not clean
    (whitespace to strip, a blank line, a wrong field count).
    """
    if not body or body.count("\n") > SMALL_LINES or body.startswith("\n") or "\n\n" in body:
        return None
    if any(ch in body for ch in " \t\r\x0b\x0c"):
        return None
    lines = body[:-1].split("\n") if body.endswith("\n") else body.split("\n")
    rows = [line.split(",") for line in lines]
    if any(len(r) != n for r in rows):
        return None
    m = len(rows)
    line_no = _numeric(pa.int32(), np.arange(first_line_no, first_line_no + m, dtype=np.int32))
    n_fields = _numeric(pa.int16(), np.full(m, min(n, _INT16_MAX), dtype=np.int16))
    fields = [_strings([r[i] for r in rows]) for i in range(n)]
    return fields, line_no, n_fields, pa.nulls(m, pa.string())


def _find_header(text: str) -> tuple[int, str, str] | None:
    """(0-based line index, header line, the text after it) or None when all blank."""
    pos, idx = 0, 0
    while True:
        end = text.find("\n", pos)
        line = text[pos:] if end < 0 else text[pos:end]
        if line.strip(WHITESPACE):
            return idx, line, "" if end < 0 else text[end + 1 :]
        if end < 0:
            return None
        pos, idx = end + 1, idx + 1


_Parsed = tuple[list[pa.Array], pa.Array, pa.Array, pa.Array]
"""(fields by header position, line_no, n_fields, raw_line)"""


def parse_lines_fast(body: str, first_line_no: int, n: int) -> _Parsed | None:
    """Arrow's C++ CSV reader, for the common case: a clean body.

    Clean means no whitespace to strip, no blank line and no ``\\r`` (Arrow would
    take a lone ``\\r`` as a line break); Arrow itself refuses a wrong field
    count. Then it gives exactly what ``parse_lines_generic`` gives, about twice as
    fast. Returns None when the body is not clean.
    """
    if not body or body.startswith("\n") or "\n\n" in body:
        return None
    if any(ch in body for ch in " \t\r\x0b\x0c"):
        return None
    names = [f"f{i}" for i in range(n)]
    buf = body.encode("utf-8")
    try:
        table = pacsv.read_csv(
            pa.py_buffer(buf),
            # One block: the whole file is already in memory, and one chunk per column.
            read_options=pacsv.ReadOptions(
                column_names=names, use_threads=False, block_size=len(buf) + 1
            ),
            parse_options=pacsv.ParseOptions(quote_char=False, ignore_empty_lines=False),
            convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(names, pa.string()),
                strings_can_be_null=True,
                null_values=[""],
            ),
        )
    except pa.ArrowInvalid:
        return None  # a line with the wrong field count: the generic path keeps it
    m = table.num_rows
    line_no = _numeric(pa.int32(), np.arange(first_line_no, first_line_no + m, dtype=np.int32))
    n_fields = _numeric(pa.int16(), np.full(m, min(n, _INT16_MAX), dtype=np.int16))
    fields = [table.column(i).combine_chunks() for i in range(n)]
    return fields, line_no, n_fields, pa.nulls(m, pa.string())


def parse_lines_generic(body: str, first_line_no: int, n: int) -> _Parsed:
    """Any body: blank lines, whitespace, wrong field counts, stray ``\\r``."""
    df = pl.DataFrame({"raw": body.split("\n")}, schema={"raw": pl.String})
    df = df.with_row_index("line_no", offset=first_line_no)
    df = df.filter(pl.col("raw").str.strip_chars(WHITESPACE) != "")
    parts = pl.col("raw").str.split(",")
    df = df.with_columns(n_fields=parts.list.len())
    ok = pl.col("n_fields") == n

    def field(i: int) -> pl.Expr:
        value = parts.list.get(i, null_on_oob=True).str.strip_chars(WHITESPACE)
        return pl.when(ok & (value != "")).then(value).alias(f"f{i}")

    out = df.select(
        *(field(i) for i in range(n)),
        pl.col("line_no").cast(pl.Int32),
        pl.col("n_fields").clip(upper_bound=_INT16_MAX).cast(pl.Int16),
        pl.when(~ok).then(pl.col("raw")).alias("raw_line"),
    ).to_arrow()

    def col(name: str, type_: pa.DataType) -> pa.Array:
        return out.column(name).combine_chunks().cast(type_)

    fields = [col(f"f{i}", pa.string()) for i in range(n)]
    return (
        fields,
        col("line_no", pa.int32()),
        col("n_fields", pa.int16()),
        col("raw_line", pa.string()),
    )


def _assemble(
    layout: KaggleLayout,
    symbol: str,
    ref: str,
    fields: list[pa.Array],
    line_no: pa.Array,
    n_fields: pa.Array,
    raw_line: pa.Array,
) -> pa.Table:
    m = len(line_no)
    arrays: dict[str, pa.Array] = {name: fields[pos] for name, pos in layout.columns}
    arrays.update(
        symbol=_const_string(symbol, m),
        source=_const_string(layout.source, m),
        is_adjusted=_const_bool(layout.is_adjusted, m),
        source_file=_const_string(ref, m),
        line_no=line_no,
        n_fields=n_fields,
        raw_line=raw_line,
    )
    columns = [
        arrays[f.name] if f.name in arrays else pa.nulls(m, f.type) for f in BRONZE_SOURCE_SCHEMA
    ]
    return pa.Table.from_arrays(columns, schema=BRONZE_SOURCE_SCHEMA)


# Arrays built from NumPy buffers: pa.array()/pa.scalar() on Python objects would
# import pandas (seconds, once per process) just to check the argument's type.
def _numeric(type_: pa.DataType, values: np.ndarray) -> pa.Array:
    return pa.Array.from_buffers(type_, len(values), [None, pa.py_buffer(values)])


def _strings(values: list[str]) -> pa.Array:
    """A string array of ``values``, an empty one null (as Arrow's CSV reader makes it)."""
    data = [v.encode("utf-8") for v in values]
    # Plain Python for a few values: NumPy's per-call cost would dominate.
    offsets = array("i", [0, *accumulate(map(len, data))])
    valid = [bool(d) for d in data]
    nulls = valid.count(False)
    bitmap = None
    if nulls:
        bitmap = pa.py_buffer(np.packbits(np.array(valid, dtype=np.bool_), bitorder="little"))
    return pa.Array.from_buffers(
        pa.string(),
        len(data),
        [bitmap, pa.py_buffer(offsets), pa.py_buffer(b"".join(data))],
        null_count=nulls,
    )


def _const_string(value: str, m: int) -> pa.Array:
    data = value.encode("utf-8")
    offsets = np.arange(m + 1, dtype=np.int32) * len(data)
    return pa.Array.from_buffers(
        pa.string(), m, [None, pa.py_buffer(offsets), pa.py_buffer(data * m)]
    )


def _const_bool(value: bool, m: int) -> pa.Array:
    bits = np.packbits(np.full(m, value, dtype=np.bool_), bitorder="little")
    return pa.Array.from_buffers(pa.bool_(), m, [None, pa.py_buffer(bits)])
