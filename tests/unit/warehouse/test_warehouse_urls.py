"""Which URL each warehouse role uses: explicit settings, else what `services up` recorded."""

from __future__ import annotations

from pathlib import Path

import pytest

from stockbatch.services.endpoints import record_endpoint
from stockbatch.settings import Settings, WarehouseSettings
from stockbatch.warehouse import db

RECORD = {
    "host": "127.0.0.1",
    "port": 5999,
    "database": "stockbatch",
    "owner_url": "postgresql+psycopg://o:p@127.0.0.1:5999/stockbatch",
    "loader_url": "postgresql+psycopg://l:p@127.0.0.1:5999/stockbatch",
    "reader_url": "postgresql+psycopg://r:p@127.0.0.1:5999/stockbatch",
}


def test_sqlite_uses_one_file_for_every_role(tmp_path: Path) -> None:
    urls = db.resolve_urls(Settings(home=tmp_path))
    expected = f"sqlite:///{(tmp_path / 'warehouse.db').resolve()}"
    assert urls == db.WarehouseUrls(owner=expected, loader=expected, reader=expected)
    assert db.resolve_urls(Settings(home=tmp_path)).loader == expected


def test_postgresql_uses_the_recorded_roles(tmp_path: Path) -> None:
    record_endpoint(tmp_path, "postgresql", RECORD)
    settings = Settings(home=tmp_path, warehouse=WarehouseSettings(kind="postgresql"))
    urls = db.resolve_urls(settings)
    assert urls == db.WarehouseUrls(
        owner=RECORD["owner_url"], loader=RECORD["loader_url"], reader=RECORD["reader_url"]
    )
    assert db.resolve_urls(settings).loader == RECORD["loader_url"]


def test_explicit_urls_win_over_the_record(tmp_path: Path) -> None:
    record_endpoint(tmp_path, "postgresql", RECORD)
    explicit = "postgresql+psycopg://me:x@db.example:5432/wh"
    only_url = Settings(home=tmp_path, warehouse=WarehouseSettings(kind="postgresql", url=explicit))
    # An explicit URL describes another server: the record is ignored entirely.
    assert db.resolve_urls(only_url) == db.WarehouseUrls(explicit, explicit, explicit)
    reader = "postgresql+psycopg://ro:x@db.example:5432/wh"
    mixed = Settings(
        home=tmp_path, warehouse=WarehouseSettings(kind="postgresql", reader_url=reader)
    )
    assert db.resolve_urls(mixed) == db.WarehouseUrls(
        owner=RECORD["owner_url"], loader=RECORD["loader_url"], reader=reader
    )


def test_environment_sets_the_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STOCKBATCH_HOME", str(tmp_path))
    monkeypatch.setenv("STOCKBATCH_WAREHOUSE__KIND", "postgresql")
    monkeypatch.setenv("STOCKBATCH_WAREHOUSE__URL", "postgresql+psycopg://l@h/d")
    monkeypatch.setenv("STOCKBATCH_WAREHOUSE__OWNER_URL", "postgresql+psycopg://o@h/d")
    urls = db.resolve_urls(Settings())
    assert (urls.owner, urls.loader, urls.reader) == (
        "postgresql+psycopg://o@h/d",
        "postgresql+psycopg://l@h/d",
        "postgresql+psycopg://l@h/d",
    )


def test_nothing_recorded_says_how_to_start_postgresql(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, warehouse=WarehouseSettings(kind="postgresql"))
    with pytest.raises(db.WarehouseNotConfigured, match="stockbatch services up postgresql"):
        db.resolve_urls(settings)
    with pytest.raises(ValueError, match="stockbatch services up postgresql"):
        _ = db.resolve_urls(settings).loader
