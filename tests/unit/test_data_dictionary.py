"""docs/data.md is generated from the declarations and must be up to date."""

from __future__ import annotations

from pathlib import Path

from stockbatch import dictionary, schema
from stockbatch.features import catalog

DOC = Path(__file__).resolve().parents[2] / "docs" / "data.md"


def test_docs_data_md_is_up_to_date() -> None:
    expected = dictionary.render()
    assert DOC.read_text() == expected, (
        "docs/data.md is out of date: run `python -m stockbatch.dictionary > docs/data.md`"
    )


def test_every_declared_column_reason_and_flag_is_described() -> None:
    text = dictionary.render()
    names = [
        *schema.DAILY_FEATURES.names,
        *schema.QUARTERLY_FEATURES.names,
        *schema.QUARANTINE.names,
        *schema.REASON_CODES,
        *schema.HEALTH_FLAGS,
    ]
    assert [n for n in names if f"| `{n}` |" not in text] == []
    # Every published feature's formula comes from its declaration.
    for d in (*catalog.DAILY_FEATURES, *catalog.QUARTERLY_FEATURES):
        if d.role != "intermediate":
            assert d.description.replace("|", "\\|") in text, d.name
