"""Byte-level fuzzing of the Kaggle parser (``kaggle_parse``) and reader (``KaggleSource``).

The existing property tests generate bronze *text fields* (tests/unit/test_quality_properties.py)
or hostile *folder entries* (tests/unit/sources/test_hostile_entries.py,
tests/e2e/test_hostile_inputs.py). These feed raw *bytes*: arbitrary binary, and real
demo lines mutated byte by byte (flips, cuts, NUL, BOM, stray CR, invalid UTF-8,
commas, whitespace, swapped or repeated lines). What each test proves:

- ``test_any_bytes_parse_like_the_documented_line_model``: any bytes either raise
  ``UnknownLayoutError`` or give one row per non-blank line after the header, with the
  right line number, the right fields (stripped, empty -> null) or ``raw_line`` when the
  arity is wrong: an independent line-model oracle written from the module docstring.
- ``test_mutated_real_files_are_fully_accounted_for``: parse -> validate of mutated real
  files: every parsed row ends clean, quarantined (known reason codes) or collapsed, and
  no clean value nor daily/quarterly feature is NaN or infinite.
- ``test_appended_tail_parses_like_the_whole_file``: ``parse_kaggle_lines`` (the append
  path, with its small/fast/generic parsers) gives exactly the rows the whole-file parse
  gives for the same lines.
- ``test_kaggle_source_reads_any_file_or_names_the_error``: a fuzzed file on disk read by
  ``KaggleSource`` is a table of the bronze schema or a ``SourceError``, never another
  exception.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import polars as pl
import pyarrow as pa
from hypothesis import given
from hypothesis import strategies as st

from fuzz.budget import fuzz_settings, tried
from fuzz.check import assert_features_finite, bronze_frame, validate_accounted
from stockbatch.sources.base import BRONZE_SOURCE_SCHEMA, SourceError, UnknownLayoutError
from stockbatch.sources.kaggle import KaggleSource
from stockbatch.sources.kaggle_parse import (
    LAYOUTS,
    WHITESPACE,
    parse_kaggle_bytes,
    parse_kaggle_lines,
)

DEMO = Path(__file__).resolve().parents[2] / "data" / "demo" / "kaggle"
REAL = {  # (file name, layout source) -> a real header + first 40 lines (CC0 demo data)
    "adm.us.txt": DEMO / "huge" / "adm.us.txt",
    "AAPL_data.csv": DEMO / "sp500" / "AAPL_data.csv",
    "AON.csv": DEMO / "nasdaq" / "stocks" / "AON.csv",
}
REAL_LINES = {
    name: path.read_bytes().split(b"\n")[:40] for name, path in REAL.items()
}  # header first
NAMES = [*REAL, "x.us.txt", "weird name.csv", "NOPE_data.csv", "a.txt"]

# Bytes that break parsers: separators, line ends, whitespace, BOM, invalid UTF-8, NUL.
NASTY = [b",", b"\n", b"\r", b"\r\n", b" ", b"\t", b"\x0b", b"\x0c", b"\x00", b"\xef\xbb\xbf",
         b"\xff", b"\xc3", b"\xe2\x80\xae", b"\"", b"-", b".", b"e", b"9" * 40, b"1e400",
         b"nan", b"inf", b"\x85", "\u2028".encode()]  # fmt: skip


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, bytes]:
    """A real file's lines (a random prefix) mutated at the byte and line level."""
    name = draw(st.sampled_from(list(REAL)))
    lines = list(REAL_LINES[name][: draw(st.integers(1, 40))])
    for _ in range(draw(st.integers(0, 8))):
        op = draw(st.sampled_from(["byte", "insert", "cut", "dup", "swap", "drop", "blank"]))
        i = draw(st.integers(0, len(lines) - 1)) if lines else 0
        if not lines:
            lines.append(b"")
        line = lines[i]
        j = draw(st.integers(0, len(line)))
        if op == "byte" and line:
            k = min(j, len(line) - 1)
            line = line[:k] + bytes([draw(st.integers(0, 255))]) + line[k + 1 :]
        elif op == "insert":
            line = line[:j] + draw(st.sampled_from(NASTY)) + line[j:]
        elif op == "cut":
            line = line[:j]
        elif op == "dup":
            lines.insert(i, line)
        elif op == "swap" and len(lines) > 1:
            k = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[k] = lines[k], lines[i]
            continue
        elif op == "drop" and len(lines) > 1:
            del lines[i]
            continue
        elif op == "blank":
            lines.insert(i, draw(st.sampled_from([b"", b" ", b"\r", b"\t \t"])))
            continue
        lines[i] = line
    end = draw(st.sampled_from([b"\n", b"\r\n"]))
    data = end.join(lines) + draw(st.sampled_from([b"", end, end * 3]))
    if draw(st.booleans()) and draw(st.booleans()):
        data = b"\xef\xbb\xbf" + data
    return name, data


def any_file() -> st.SearchStrategy[tuple[str, bytes]]:
    """Pure random bytes, random bytes after a real header, or a mutated real file."""
    header = st.sampled_from([lay.header for lay in LAYOUTS]).map(lambda h: ",".join(h).encode())
    random_body = st.tuples(header, st.binary(max_size=400)).map(lambda hb: hb[0] + b"\n" + hb[1])
    return st.one_of(
        st.tuples(st.sampled_from(NAMES), st.binary(max_size=400)),
        st.tuples(st.sampled_from(NAMES), random_body),
        mutated(),
    )


def oracle(data: bytes) -> tuple[int, list[list[str]]] | None:
    """(header field count, non-blank body lines as (line_no, text)) from the docstring's
    line model; None when the file is blank."""
    text = data.decode("utf-8-sig", errors="replace").replace("\r\n", "\n")
    lines = text.split("\n")
    for idx, line in enumerate(lines):
        if line.strip(WHITESPACE):
            body = [(n + 1, t) for n, t in enumerate(lines) if n > idx and t.strip(WHITESPACE)]
            return len(line.split(",")), body  # type: ignore[return-value]
    return None


def assert_rows_match_oracle(table: pa.Table, data: bytes) -> None:
    model = oracle(data)
    assert model is not None, "a blank file gives no table rows... and no layout error"
    width, body = model
    assert table.schema == BRONZE_SOURCE_SCHEMA
    assert table.num_rows == len(body), "one row per non-blank line after the header"
    rows = table.to_pylist()
    for row, (line_no, text) in zip(rows, body, strict=True):
        assert row["line_no"] == line_no
        parts = text.split(",")
        assert row["n_fields"] == min(len(parts), 32767)
        if len(parts) != width:
            assert row["raw_line"] == text
            assert row["trade_date"] is None and row["close"] is None
        else:
            assert row["raw_line"] is None
            want = parts[0].strip(WHITESPACE)
            assert row["trade_date"] == (want or None)


@fuzz_settings()
@given(any_file())
def test_any_bytes_parse_like_the_documented_line_model(case: tuple[str, bytes]) -> None:
    tried("kaggle: any bytes vs line model")
    name, data = case
    try:
        table = parse_kaggle_bytes(data, file_name=name, ref=f"fuzz/{name}")
    except UnknownLayoutError as exc:
        assert len(str(exc)) < 2000, "the message quotes a bounded part of the input"
        return
    if oracle(data) is None:
        assert table.num_rows == 0
        return
    assert_rows_match_oracle(table, data)


@fuzz_settings()
@given(mutated())
def test_mutated_real_files_are_fully_accounted_for(case: tuple[str, bytes]) -> None:
    tried("kaggle: mutated real file -> validate")
    name, data = case
    try:
        table = parse_kaggle_bytes(data, file_name=name, ref=f"fuzz/{name}")
    except UnknownLayoutError:
        return
    res = validate_accounted(bronze_frame(table))
    assert_features_finite(res)


@fuzz_settings()
@given(mutated(), st.integers(0, 60))
def test_appended_tail_parses_like_the_whole_file(case: tuple[str, bytes], cut: int) -> None:
    tried("kaggle: appended tail vs whole file")
    name, data = case
    try:
        whole = parse_kaggle_bytes(data, file_name=name, ref="r")
    except UnknownLayoutError:
        return
    # Split after a line break past the header: the head is "landed", the rest appended.
    breaks = [i + 1 for i, b in enumerate(data) if b == 0x0A]
    if oracle(data) is None:
        assert whole.num_rows == 0
        return  # a blank file (no header): nothing can be appended to it
    text = data.decode("utf-8-sig", errors="replace").replace("\r\n", "\n")
    header_no = next(n for n, t in enumerate(text.split("\n")) if t.strip(WHITESPACE))
    breaks = [b for b in breaks if data[:b].count(b"\n") > header_no]
    if not breaks:
        return
    at = breaks[cut % len(breaks)]
    first_line_no = data[:at].count(b"\n") + 1
    source = LAYOUTS[[lay.source for lay in LAYOUTS].index(whole.column("source")[0].as_py())] \
        if whole.num_rows else None  # fmt: skip
    if source is None:
        return
    tail = parse_kaggle_lines(
        data[at:], source=source.source, file_name=name, ref="r", first_line_no=first_line_no
    )
    expect = pl.from_arrow(whole).filter(pl.col("line_no") >= first_line_no)
    got = pl.from_arrow(tail)
    assert isinstance(expect, pl.DataFrame) and isinstance(got, pl.DataFrame)
    assert got.schema == expect.schema
    assert got.to_dicts() == expect.to_dicts()


@fuzz_settings()
@given(any_file())
def test_kaggle_source_reads_any_file_or_names_the_error(case: tuple[str, bytes]) -> None:
    tried("kaggle: KaggleSource on a fuzzed file")
    name, data = case
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / name).write_bytes(data)
        source = KaggleSource(Path(tmp))
        units = list(source.units())
        assert len(units) <= 1
        for unit, outcome in source.read_many(units):
            if isinstance(outcome, SourceError):
                assert outcome.ref is not None
                continue
            assert outcome.schema == BRONZE_SOURCE_SCHEMA
            model = oracle(data)
            assert outcome.num_rows == (len(model[1]) if model else 0)
            assert unit.ref == name
