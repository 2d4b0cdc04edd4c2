"""Fixtures of the warehouse tests: a migrated SQLite file per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from stockbatch.warehouse import db


@pytest.fixture
def url(tmp_path: Path) -> str:
    """URL of a not-yet-existing SQLite file in a not-yet-existing folder."""
    return f"sqlite:///{tmp_path / 'wh' / 'warehouse.db'}"


@pytest.fixture
def engine(url: str) -> Iterator[sa.Engine]:
    """Engine on a freshly migrated warehouse."""
    db.migrate(url)
    eng = db.engine_for(url)
    yield eng
    eng.dispose()
