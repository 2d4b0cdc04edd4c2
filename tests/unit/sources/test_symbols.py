"""The one symbol rule (symbols.py), on the documented examples and on every real file name."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from stockbatch.sources.kaggle import SKIPPED_FILES
from stockbatch.sources.symbols import (
    canonical_symbol,
    kaggle_layout_of,
    normalize_symbol,
    symbol_for_file,
    yahoo_symbol,
)


@pytest.mark.parametrize(
    ("file_name", "symbol"),
    [
        ("aapl.us.txt", "AAPL"),
        ("brk-b.us.txt", "BRK-B"),  # Huge: dash = share class, kept
        ("bac-ws-a.us.txt", "BAC-WS-A"),  # warrant
        ("BRK.B_data.csv", "BRK-B"),  # S&P: dot = share class -> dash
        ("BF.B_data.csv", "BF-B"),
        ("BRK.B.csv", "BRK-B"),  # NASDAQ, either spelling
        ("BRK-B.csv", "BRK-B"),
        ("agm_a.us.txt", "AGM_A"),  # Huge: underscore = preferred series, kept ...
        ("agm-a.us.txt", "AGM-A"),  # ... and distinct from the class-A common
        ("btu_.us.txt", "BTU_"),  # trailing underscore stays
        ("btu.us.txt", "BTU"),
        ("AAPL_data.csv", "AAPL"),
        ("CPAAW.csv", "CPAAW"),
    ],
)
def test_documented_examples(file_name: str, symbol: str) -> None:
    assert normalize_symbol(file_name) == symbol


def test_layout_comes_from_the_suffix() -> None:
    assert kaggle_layout_of("aapl.us.txt") == "kaggle-huge"
    assert kaggle_layout_of("AAPL_data.csv") == "kaggle-sp500"
    assert kaggle_layout_of("AAPL.csv") == "kaggle-nasdaq"
    assert kaggle_layout_of("README.txt") is None
    assert kaggle_layout_of(".csv") is None  # nothing before the suffix


def test_layout_aware_helper_refuses_a_wrong_suffix() -> None:
    assert symbol_for_file("kaggle-nasdaq", "brk.b.csv") == "BRK-B"
    with pytest.raises(ValueError, match="does not end in"):
        symbol_for_file("kaggle-huge", "aapl.csv")
    with pytest.raises(ValueError, match="empty symbol"):
        symbol_for_file("kaggle-nasdaq", " .csv")
    with pytest.raises(ValueError, match="not a Kaggle price file"):
        normalize_symbol("notes.md")


def test_canonical_and_yahoo_spellings() -> None:
    assert canonical_symbol(" brk.b ") == "BRK-B"
    # Yahoo's dot is an exchange suffix, not a share class: it stays.
    assert yahoo_symbol(" vod.l ") == "VOD.L"
    assert yahoo_symbol("brk-b") == "BRK-B"


def test_every_shared_file_name_maps_to_its_own_symbol(shared_data: Path) -> None:
    """Within a source no two files share a symbol; across sources the same security does."""
    by_source: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    names = 0
    for path in sorted((shared_data / "kaggle").rglob("*")):
        if not path.is_file() or path.name.lower() in SKIPPED_FILES:
            continue
        layout = kaggle_layout_of(path.name)
        assert layout is not None, f"{path} has no Kaggle layout by name"
        by_source[layout][normalize_symbol(path.name)].append(path.name)
        names += 1
    assert names == 900 + 5 + 15
    for source, symbols in by_source.items():
        clashes = {sym: files for sym, files in symbols.items() if len(files) > 1}
        assert not clashes, f"{source}: files sharing a symbol: {clashes}"
    huge = by_source["kaggle-huge"]
    assert huge["BTU"] == ["btu.us.txt"] and huge["BTU_"] == ["btu_.us.txt"]
    assert huge["AIG-WS"] == ["aig-ws.us.txt"]
    assert by_source["kaggle-sp500"]["BRK-B"] == ["BRK.B_data.csv"]
    assert by_source["kaggle-sp500"]["BF-B"] == ["BF.B_data.csv"]
    # The same ETF in two datasets gets one symbol, so source priority can choose.
    assert huge["DBO"] == ["dbo.us.txt"] and by_source["kaggle-nasdaq"]["DBO"] == ["DBO.csv"]
