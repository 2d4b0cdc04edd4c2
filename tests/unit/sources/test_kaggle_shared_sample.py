"""KaggleSource over the whole shared real sample ($STOCKBATCH_SHARED_DATA/kaggle):
every line accounted for, every file's layout detected."""

from __future__ import annotations

from pathlib import Path

import pytest

from stockbatch.sources.kaggle import KaggleSource
from stockbatch.sources.kaggle_parse import WHITESPACE

SAMPLES = {
    "huge-stock-market-sample": "kaggle-huge",
    "sp500-5yr-sample": "kaggle-sp500",
    "nasdaq-sample": "kaggle-nasdaq",
}


def _line_counts(data: bytes) -> tuple[int, int, int]:
    """(wc -l, header lines, blank lines) of one file, by plain byte counting."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # what follows the final newline is not a line
    blank = sum(1 for line in lines if not line.strip(WHITESPACE.encode()))
    header = 1 if blank < len(lines) else 0
    return data.count(b"\n"), header, blank


@pytest.mark.slow
@pytest.mark.parametrize("sample", sorted(SAMPLES))
def test_every_line_of_the_shared_sample_is_one_row(shared_data: Path, sample: str) -> None:
    root = shared_data / "kaggle" / sample
    expected_source = SAMPLES[sample]
    src = KaggleSource(root)
    units = list(src.units())
    assert units, f"no files found under {root}"
    wc_total = rows_total = 0
    for unit in units:
        assert unit.source == expected_source, unit.ref
        assert unit.path is not None
        data = unit.path.read_bytes()
        wc, header, blank = _line_counts(data)
        # Every file of the sample ends with a newline, so wc -l counts all its lines.
        assert data == b"" or data.endswith(b"\n"), unit.ref
        table = src.read(unit)
        assert table.num_rows == wc - header - blank, unit.ref
        if table.num_rows:
            assert set(table.column("source").to_pylist()) == {expected_source}, unit.ref
            assert table.column("raw_line").null_count == table.num_rows, unit.ref
            assert table.column("line_no")[-1].as_py() == wc, unit.ref  # the last line
        wc_total += wc
        rows_total += table.num_rows
    if sample == "huge-stock-market-sample":
        # data/README.md: 780 stocks + 120 ETFs, 1,883,942 lines; 898 headers (two
        # files are empty), no blank lines.
        assert len(units) == 900
        assert sum(u.ref.startswith("ETFs/") for u in units) == 120
        assert wc_total == 1_883_942
        assert rows_total == 1_883_942 - 898
    elif sample == "sp500-5yr-sample":
        assert (len(units), rows_total) == (5, 5 * 1259)
    else:
        assert len(units) == 15  # symbols_valid_meta.csv is metadata, not a unit
