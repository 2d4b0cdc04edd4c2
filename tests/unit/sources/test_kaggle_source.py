"""KaggleSource and its parser: real files from tests/fixtures/sources/kaggle (see
PROVENANCE.md), plus tiny hand-made edge cases, each labelled as such."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stockbatch.schema import INSTRUMENTS
from stockbatch.sources.base import BRONZE_SOURCE_SCHEMA, SourceError, UnknownLayoutError
from stockbatch.sources.kaggle import KaggleSource
from stockbatch.sources.kaggle_parse import (
    LAYOUTS,
    WHITESPACE,
    parse_kaggle_bytes,
    parse_lines_fast,
    parse_lines_generic,
)

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "sources" / "kaggle"
HUGE_HEADER = b"Date,Open,High,Low,Close,Volume,OpenInt"
VALUE_FIELDS = ("trade_date", "open", "high", "low", "close", "adj_close", "volume")


def rows(table: pa.Table) -> list[dict[str, object]]:
    return table.to_pylist()


# -- real fixture files ----------------------------------------------------------------


def test_units_list_price_files_sorted_with_size_and_mtime() -> None:
    units = list(KaggleSource(FIXTURES).units())
    assert [(u.ref, u.source) for u in units] == [
        ("huge/btu_.us.txt", "kaggle-huge"),
        ("huge/dcng.us.txt", "kaggle-huge"),
        ("huge/sbt.us.txt", "kaggle-huge"),
        ("nasdaq/stocks/CPAAW.csv", "kaggle-nasdaq"),  # symbols_valid_meta.csv is skipped
        ("sp500/BRK.B_data.csv", "kaggle-sp500"),
    ]
    for unit in units:
        assert unit.path is not None
        # Listing only stats a file (issue 15): the ingest reads what it must.
        assert unit.sha256 is None
        assert unit.size == len(unit.path.read_bytes())
        assert unit.mtime_ns == unit.path.stat().st_mtime_ns
    assert units[2].size == 0


def test_huge_file_with_crlf_lines() -> None:
    src = KaggleSource(FIXTURES)
    unit = next(u for u in src.units() if u.ref == "huge/btu_.us.txt")
    table = src.read(unit)
    assert table.schema == BRONZE_SOURCE_SCHEMA
    assert table.num_rows == 14  # 15 lines, minus the header
    got = rows(table)
    assert got[0] == {
        "symbol": "BTU_",
        "trade_date": "2017-07-20",
        "open": "52.85",
        "high": "52.98",
        "low": "52.85",
        "close": "52.98",
        "adj_close": None,
        "volume": "450000",
        "source": "kaggle-huge",
        "is_adjusted": True,
        "source_file": "huge/btu_.us.txt",
        "line_no": 2,
        "n_fields": 7,
        "raw_line": None,
    }
    # The file's last line: 2017-10-23,57.15,57.25,57.15,57.25,32000,0
    assert (got[-1]["trade_date"], got[-1]["close"], got[-1]["volume"]) == (
        "2017-10-23",
        "57.25",
        "32000",
    )
    assert got[-1]["line_no"] == 15
    assert table.column("line_no").to_pylist() == list(range(2, 16))


def test_empty_file_is_zero_rows_not_an_error() -> None:
    src = KaggleSource(FIXTURES)
    unit = next(u for u in src.units() if u.ref == "huge/sbt.us.txt")
    table = src.read(unit)
    assert table.num_rows == 0
    assert table.schema == BRONZE_SOURCE_SCHEMA


def test_sp500_file_symbol_from_name() -> None:
    src = KaggleSource(FIXTURES)
    unit = next(u for u in src.units() if u.source == "kaggle-sp500")
    table = src.read(unit)
    assert table.num_rows == 1259
    assert set(table.column("symbol").to_pylist()) == {"BRK-B"}  # Name column says BRK.B
    assert set(table.column("is_adjusted").to_pylist()) == {False}
    first, last = rows(table)[0], rows(table)[-1]
    assert [first[k] for k in VALUE_FIELDS] == [
        "2013-02-08",
        "97.25",
        "97.33",
        "96.73",
        "97.25",
        None,
        "2996000",
    ]
    assert [last[k] for k in VALUE_FIELDS] == [
        "2018-02-07",
        "202.0",
        "204.48",
        "200.0",
        "200.37",
        None,
        "5758041",
    ]
    assert (first["line_no"], last["line_no"]) == (2, 1260)


def test_nasdaq_file_keeps_adj_close() -> None:
    src = KaggleSource(FIXTURES)
    unit = next(u for u in src.units() if u.source == "kaggle-nasdaq")
    (row,) = rows(src.read(unit))
    assert [row[k] for k in VALUE_FIELDS] == [
        "2023-04-13",
        "0.0",
        "0.21480000019073486",
        "0.12999999523162842",
        "0.12999999523162842",
        "0.12999999523162842",
        "5570",
    ]
    assert (row["symbol"], row["source"], row["is_adjusted"]) == ("CPAAW", "kaggle-nasdaq", False)


def test_instruments_from_nasdaq_metadata() -> None:
    table = KaggleSource(FIXTURES).instruments()
    assert table is not None
    assert table.schema == INSTRUMENTS
    assert table.num_rows == 262
    by_symbol = {r["symbol"]: r for r in table.to_pylist()}
    assert by_symbol["A"] == {
        "symbol": "A",
        "name": "Agilent Technologies, Inc. Common Stock",
        "exchange": "N",
        "is_etf": False,
        "source": "kaggle-nasdaq",
    }
    assert by_symbol["AA"]["name"] == "Alcoa Corporation Common Stock"  # trailing blank gone
    assert (by_symbol["AAA"]["exchange"], by_symbol["AAA"]["is_etf"]) == ("P", True)


def test_instruments_none_without_metadata() -> None:
    assert KaggleSource(FIXTURES / "huge").instruments() is None


def test_mixed_folder_hidden_and_other_files(tmp_path: Path) -> None:
    """Real files of all three layouts in one folder, plus files that must be ignored."""
    for rel in ("huge/btu_.us.txt", "sp500/BRK.B_data.csv", "nasdaq/stocks/CPAAW.csv"):
        shutil.copy(FIXTURES / rel, tmp_path)
    (tmp_path / ".git").mkdir()
    shutil.copy(FIXTURES / "huge/dcng.us.txt", tmp_path / ".git")  # hidden folder
    shutil.copy(FIXTURES / "huge/dcng.us.txt", tmp_path / ".dcng.us.txt")  # hidden file
    (tmp_path / "README.md").write_text("not data\n")
    (tmp_path / "notes.txt").write_text("not data either\n")
    shutil.copy(FIXTURES / "sp500/BRK.B_data.csv", tmp_path / "all_stocks_5yr.csv")
    src = KaggleSource(tmp_path)
    units = list(src.units())
    assert [(u.ref, u.source) for u in units] == [
        ("BRK.B_data.csv", "kaggle-sp500"),
        ("CPAAW.csv", "kaggle-nasdaq"),
        ("btu_.us.txt", "kaggle-huge"),
    ]
    counts = {u.ref: src.read(u).num_rows for u in units}
    assert counts == {"BRK.B_data.csv": 1259, "CPAAW.csv": 1, "btu_.us.txt": 14}


def test_file_changed_after_listing(tmp_path: Path) -> None:
    shutil.copy(FIXTURES / "huge/dcng.us.txt", tmp_path)
    src = KaggleSource(tmp_path)
    (unit,) = src.units()
    with (tmp_path / "dcng.us.txt").open("ab") as fh:
        fh.write(b"2017-10-31,17.7,17.7,17.7,17.7,300,0\r\n")
    with pytest.raises(SourceError, match="changed between listing and reading") as err:
        src.read(unit)
    assert err.value.ref == "dcng.us.txt"


def test_describe_names_the_folder() -> None:
    assert KaggleSource(FIXTURES).describe() == f"folder {FIXTURES}"


def test_missing_root_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        KaggleSource(tmp_path / "nope")


# -- hand-made edge cases --------------------------------------------------------------


def test_handmade_messy_file() -> None:
    """Hand-made: BOM, CRLF, a blank line before the header, blank and whitespace-only
    lines, padded fields, a short line, a bad byte, an all-empty row, no final newline."""
    data = (
        b"\xef\xbb\xbf\r\n"  # line 1: BOM then blank
        + HUGE_HEADER
        + b"\r\n"  # line 2: header
        + b"2017-01-03, 1.5 ,2,1,1.8,100,0\r\n"  # line 3
        + b"\r\n"  # line 4: blank
        + b"  \t \r\n"  # line 5: whitespace only
        + b"2017-01-04,1,2\r\n"  # line 6: 3 fields
        + b"2017-01-05,1,2,1,1\xff,100,0\n"  # line 7: bad byte, LF only
        + b"2017-01-06,,,,,,\r\n"  # line 8: all empty
        + b"2017-01-09,1,2,1,1,5,0,extra"  # line 9: 8 fields, no newline
    )
    got = rows(parse_kaggle_bytes(data, file_name="abc.us.txt", ref="x/abc.us.txt"))
    assert [r["line_no"] for r in got] == [3, 6, 7, 8, 9]
    assert [r["n_fields"] for r in got] == [7, 3, 7, 7, 8]
    assert [r["raw_line"] for r in got] == [
        None,
        "2017-01-04,1,2",
        None,
        None,
        "2017-01-09,1,2,1,1,5,0,extra",
    ]
    assert [got[0][k] for k in VALUE_FIELDS] == ["2017-01-03", "1.5", "2", "1", "1.8", None, "100"]
    assert all(got[1][k] is None for k in VALUE_FIELDS)
    assert got[2]["close"] == "1\ufffd"  # kept; processing calls it unparseable
    assert [got[3][k] for k in VALUE_FIELDS] == ["2017-01-06", None, None, None, None, None, None]
    assert all(got[4][k] is None for k in VALUE_FIELDS)
    assert {r["symbol"] for r in got} == {"ABC"}


def test_handmade_header_only_and_blank_files() -> None:
    """Hand-made: a header and nothing else; only blank lines."""
    for data in (HUGE_HEADER, HUGE_HEADER + b"\r\n", HUGE_HEADER + b"\n\n  \n", b"\n \r\n\t"):
        table = parse_kaggle_bytes(data, file_name="abc.us.txt", ref="abc.us.txt")
        assert table.num_rows == 0
        assert table.schema == BRONZE_SOURCE_SCHEMA


def test_handmade_unknown_header() -> None:
    """Hand-made: a header of no known layout."""
    with pytest.raises(UnknownLayoutError) as err:
        parse_kaggle_bytes(b"\nticker,price\nAAPL,1\n", file_name="x.csv", ref="in/x.csv")
    message = str(err.value)
    assert err.value.ref == "in/x.csv"
    assert message.startswith("in/x.csv: header 'ticker,price' (line 2) matches no Kaggle layout")
    # The name says which layout the file should have: that header is shown.
    assert "a *.csv file starts with Date,Open,High,Low,Close,Adj Close,Volume" in message
    # A name of no layout (only when called directly): every accepted header is listed.
    with pytest.raises(UnknownLayoutError) as err:
        parse_kaggle_bytes(b"ticker,price\n", file_name="x.dat", ref="x.dat")
    for layout in LAYOUTS:
        assert ",".join(layout.header) in str(err.value)


def test_handmade_header_and_name_disagree() -> None:
    """Hand-made: a Huge header in a file named like a NASDAQ file."""
    with pytest.raises(UnknownLayoutError, match=r"rename the file to <SYMBOL>\.us\.txt"):
        parse_kaggle_bytes(HUGE_HEADER + b"\n", file_name="aapl.csv", ref="aapl.csv")


def test_header_match_ignores_case_and_padding() -> None:
    """Hand-made: the S&P header in upper case with spaces."""
    data = b" DATE , OPEN,HIGH,LOW,CLOSE,VOLUME,NAME\n2013-02-08,1,2,0.5,1.5,10,X\n"
    (row,) = rows(parse_kaggle_bytes(data, file_name="X_data.csv", ref="X_data.csv"))
    assert (row["source"], row["close"], row["volume"]) == ("kaggle-sp500", "1.5", "10")


# -- properties ------------------------------------------------------------------------

# Lines built from the characters that matter (separators, whitespace, CR, digits,
# non-ASCII, U+FFFD, NUL) plus anything else Unicode has.
_chars = st.sampled_from(list("0123456789.-,,,, \t\r\x0b\x0cAZaz\u00e9\ufffd\x00\x85\u2028"))
# Lone surrogates (category Cs) cannot be encoded, so no file can hold them; invalid
# bytes are covered by the bytes-level property test.
_line = st.text(_chars | st.characters(exclude_categories=("Cs",)), max_size=40)
_clean_row = st.lists(
    st.text(st.sampled_from(list("0123456789.-e")), max_size=8), min_size=7, max_size=7
).map(",".join)


def _oracle(data: bytes) -> tuple[int, list[tuple[int, str]]] | None:
    """Plain-Python reading of the contract: (header index, [(line_no, line)]) or None."""
    lines = data.decode("utf-8-sig", errors="replace").replace("\r\n", "\n").split("\n")
    nonblank = [(i + 1, line) for i, line in enumerate(lines) if line.strip(WHITESPACE)]
    if not nonblank:
        return None
    return nonblank[0][0], nonblank[1:]


def _check_against_oracle(data: bytes, table: pa.Table) -> None:
    oracle = _oracle(data)
    expected = [] if oracle is None else oracle[1]
    got = rows(table)
    assert [r["line_no"] for r in got] == [no for no, _ in expected]  # one row per line
    for row, (_, line) in zip(got, expected, strict=True):
        parts = line.split(",")
        assert row["n_fields"] == min(len(parts), 32767)
        if len(parts) == 7:
            assert row["raw_line"] is None
            stripped = [p.strip(WHITESPACE) or None for p in parts]
            assert [row[k] for k in ("trade_date", "open", "high", "low", "close")] == stripped[:5]
            assert row["volume"] == stripped[5]
        else:
            assert row["raw_line"] == line
            assert all(row[k] is None for k in VALUE_FIELDS)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=st.lists(_line | _clean_row, max_size=25),
    crlf=st.booleans(),
    final_newline=st.booleans(),
)
def test_property_every_nonblank_line_is_one_row(
    body: list[str], crlf: bool, final_newline: bool
) -> None:
    sep = "\r\n" if crlf else "\n"
    text = sep.join(["Date,Open,High,Low,Close,Volume,OpenInt", *body])
    data = (text + (sep if final_newline else "")).encode("utf-8")
    table = parse_kaggle_bytes(data, file_name="p.us.txt", ref="p.us.txt")
    assert table.schema == BRONZE_SOURCE_SCHEMA
    _check_against_oracle(data, table)


@settings(max_examples=200, deadline=None)
@given(tail=st.binary(max_size=300), lead=st.sampled_from([b"", b"\n", b"\xef\xbb\xbf"]))
def test_property_arbitrary_bytes_never_crash(tail: bytes, lead: bytes) -> None:
    data = lead + HUGE_HEADER + b"\n" + tail
    table = parse_kaggle_bytes(data, file_name="p.us.txt", ref="p.us.txt")
    _check_against_oracle(data, table)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=200))
def test_property_arbitrary_files_give_rows_or_a_layout_error(data: bytes) -> None:
    try:
        table = parse_kaggle_bytes(data, file_name="p.us.txt", ref="p.us.txt")
    except UnknownLayoutError:
        assert _oracle(data) is not None  # only raised when there is a (bad) header
        return
    _check_against_oracle(data, table)


@settings(max_examples=100, deadline=None)
@given(body=st.lists(_clean_row, min_size=1, max_size=30), final_newline=st.booleans())
def test_property_fast_path_equals_generic_path(body: list[str], final_newline: bool) -> None:
    text = "\n".join(body) + ("\n" if final_newline else "")
    fast = parse_lines_fast(text, 2, 7)
    assert fast is not None  # clean rows take the fast path
    generic = parse_lines_generic(text, 2, 7)
    for a, b in zip(fast[0], generic[0], strict=True):
        assert a.equals(b)
    for a, b in zip(fast[1:], generic[1:], strict=True):
        assert a.equals(b)
