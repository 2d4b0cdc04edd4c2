"""Symbol normalisation: the one rule that names a security across sources.

The rule (Yahoo Finance's convention, so a Kaggle series and a Yahoo series of
the same security share one symbol):

1. The Kaggle symbol comes from the file name, minus its layout's suffix:
   ``.us.txt`` (Huge), ``_data.csv`` (S&P 500 5yr), ``.csv`` (NASDAQ). The
   S&P ``Name`` column is not used.
2. Uppercase it.
3. A dot separates a share class: it becomes a dash (``BRK.B`` -> ``BRK-B``).
4. Everything else stays as it is. In particular the Huge set's underscore
   marks a *preferred series* and is kept, also when trailing: ``agm_a`` ->
   ``AGM_A`` (a preferred of AGM) stays distinct from ``agm-a`` -> ``AGM-A``
   (class-A common), and ``btu_`` -> ``BTU_`` stays distinct from ``btu`` -> ``BTU``.

Yahoo symbols are only stripped and uppercased (``yahoo_symbol``): a dot there
is an exchange suffix (``VOD.L``), not a share class.
"""

from __future__ import annotations

from stockbatch.sources.base import SourceName, echo

KAGGLE_FILE_SUFFIXES: tuple[tuple[SourceName, str], ...] = (
    # Checked in this order: "_data.csv" must win over the NASDAQ set's plain ".csv".
    ("kaggle-huge", ".us.txt"),
    ("kaggle-sp500", "_data.csv"),
    ("kaggle-nasdaq", ".csv"),
)
_SUFFIX_OF: dict[str, str] = dict(KAGGLE_FILE_SUFFIXES)


def canonical_symbol(raw: str) -> str:
    """Apply steps 2-4 of the rule to a raw ticker (``brk.b`` -> ``BRK-B``)."""
    return raw.strip().upper().replace(".", "-")


def yahoo_symbol(raw: str) -> str:
    """A Yahoo ticker as Yahoo spells it: stripped and uppercased, dots kept."""
    return raw.strip().upper()


def kaggle_layout_of(file_name: str) -> SourceName | None:
    """The Kaggle layout a file name belongs to by its suffix, or None."""
    lower = file_name.lower()
    for layout, suffix in KAGGLE_FILE_SUFFIXES:
        if lower.endswith(suffix) and len(lower) > len(suffix):
            return layout
    return None


def symbol_for_file(layout: str, file_name: str) -> str:
    """Symbol of a Kaggle file of a known layout (``kaggle-sp500``, ``BF.B_data.csv`` -> ``BF-B``).

    Raises ValueError when the name does not carry that layout's suffix, or
    leaves an empty symbol.
    """
    suffix = _SUFFIX_OF.get(layout)
    if suffix is None:
        raise ValueError(f"unknown Kaggle layout {echo(layout)}")
    if not file_name.lower().endswith(suffix):
        raise ValueError(f"file name {echo(file_name)} does not end in {suffix!r} ({layout})")
    symbol = canonical_symbol(file_name[: -len(suffix)])
    if not symbol:
        raise ValueError(f"file name {echo(file_name)} leaves an empty symbol")
    return symbol


def normalize_symbol(file_name: str) -> str:
    """Symbol of any Kaggle price file, its layout taken from the name's suffix.

    ``brk-b.us.txt`` -> ``BRK-B``; ``BRK.B_data.csv`` -> ``BRK-B``;
    ``BRK.B.csv`` -> ``BRK-B``; ``agm_a.us.txt`` -> ``AGM_A``; ``btu_.us.txt`` -> ``BTU_``.
    """
    layout = kaggle_layout_of(file_name)
    if layout is None:
        raise ValueError(
            f"{echo(file_name)} is not a Kaggle price file name "
            "(expected *.us.txt, *_data.csv or *.csv)"
        )
    return symbol_for_file(layout, file_name)
