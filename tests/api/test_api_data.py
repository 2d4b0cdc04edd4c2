"""The data endpoints on real warehouses: downloads equal ``stockbatch export``, cursor
pages cover every row exactly once, ``as_of`` is point-in-time on hand-made rows, and
bad input is a 4xx JSON error that says what to fix (never a 500).

Expected values come from the CLI export of the same home, from one big page, or
from an oracle written here over hand-made rows: never from the answer under test.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from polars.testing import assert_frame_equal

from stockbatch import schema
from stockbatch.api.app import create_app
from stockbatch.settings import Settings
from stockbatch.warehouse import db, loader

from .conftest import PASSWORDS, Demo, bearer, cli_token, client_for, sb

DAILY_KEY = ["symbol", "trade_date"]
QUARTERLY_KEY = ["symbol", "quarter"]


# ----------------------------------------------------------------------------- helpers


def _get(client: TestClient, token: str, path: str, **params: Any) -> Any:
    """GET that must succeed (200); the response."""
    r = client.get(path, params=params, headers=bearer(token))
    assert r.status_code == 200, (path, params, r.status_code, r.text[:500])
    return r


def _parquet(content: bytes) -> pa.Table:
    return pq.read_table(io.BytesIO(content))


def _frame(table: pa.Table) -> pl.DataFrame:
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame


def _export(home: Path, tmp_path: Path, what: str, suffix: str, *args: str) -> Path:
    out = tmp_path / f"export-{what}{suffix}"
    sb(home, "export", what, "--out", str(out), *args)
    return out


def _lineage(table: pa.Table) -> dict[str, str]:
    md = table.schema.metadata or {}
    return {k.decode(): v.decode() for k, v in md.items() if k.startswith(b"stockbatch.")}


def _two_symbols(client: TestClient, token: str) -> list[str]:
    """Two symbols of the demo with the most bars (read from the API's own listing)."""
    items = _get(client, token, "/api/v1/instruments", limit=1000).json()["items"]
    bars = {
        i["symbol"]: _get(client, token, f"/api/v1/instruments/{i['symbol']}").json()["bars"]
        for i in items
    }
    assert len(bars) >= 2
    return sorted(sorted(bars, key=lambda s: -bars[s])[:2])


@pytest.fixture(scope="module")
def analyst(demo: Demo) -> str:
    return demo.tokens["analyst"]


@pytest.fixture(scope="module")
def pair(app: FastAPI, analyst: str) -> list[str]:
    return _two_symbols(client_for(app), analyst)


# ----------------------------------------------------------------------------- downloads = export


def test_quarterly_parquet_equals_the_cli_export(
    client: TestClient, demo: Demo, analyst: str, tmp_path: Path
) -> None:
    r = _get(client, analyst, "/api/v1/quarterly", format="parquet")
    assert r.headers["content-type"].startswith("application/vnd.apache.parquet")
    got = _parquet(r.content)
    want = pq.read_table(_export(demo.home, tmp_path, "quarterly", ".parquet"))
    assert want.num_rows > 100
    assert got.schema.remove_metadata() == want.schema.remove_metadata()
    assert got.schema.remove_metadata().equals(schema.QUARTERLY_FEATURES.remove_metadata())
    # Row order as exported (symbol, quarter), every value equal, dtypes included.
    assert_frame_equal(_frame(got), _frame(want))
    assert_frame_equal(_frame(got).sort(QUARTERLY_KEY), _frame(got))
    assert _lineage(got) == _lineage(want)
    assert _lineage(got)["stockbatch.process_run_id"] == demo.run_id
    assert json.loads(r.headers["x-stockbatch-lineage"]) == _lineage(want)


def test_quarterly_csv_equals_the_cli_export(
    client: TestClient, demo: Demo, analyst: str, tmp_path: Path
) -> None:
    r = _get(client, analyst, "/api/v1/quarterly", format="csv")
    assert r.headers["content-type"].startswith("text/csv")
    want = _export(demo.home, tmp_path, "quarterly", ".csv")
    assert r.content == want.read_bytes()  # the same writer: byte for byte
    got = pl.read_csv(io.BytesIO(r.content), infer_schema_length=None)
    assert (
        got.height
        == pq.read_metadata(_export(demo.home, tmp_path, "quarterly", ".parquet")).num_rows
    )
    meta = json.loads(Path(str(want) + ".meta.json").read_text())
    assert json.loads(r.headers["x-stockbatch-lineage"]) == meta


def test_daily_parquet_of_two_symbols_equals_the_cli_export(
    client: TestClient, demo: Demo, analyst: str, pair: list[str], tmp_path: Path
) -> None:
    # Asked in reverse order, with a duplicate and a lower-case spelling: the same rows.
    asked = f"{pair[1]},{pair[0].lower()},{pair[1]}"
    r = _get(client, analyst, "/api/v1/daily", symbols=asked, format="parquet")
    got = _parquet(r.content)
    want = pq.read_table(
        _export(demo.home, tmp_path, "daily", ".parquet", "--symbols", ",".join(pair))
    )
    assert set(want["symbol"].to_pylist()) == set(pair) and want.num_rows > 1000
    assert got.schema.remove_metadata().equals(schema.DAILY_FEATURES.remove_metadata())
    assert_frame_equal(_frame(got), _frame(want))
    assert_frame_equal(_frame(got).sort(DAILY_KEY), _frame(got))
    assert _lineage(got) == _lineage(want)


def test_daily_csv_equals_the_cli_export(
    client: TestClient, demo: Demo, analyst: str, pair: list[str], tmp_path: Path
) -> None:
    r = _get(client, analyst, "/api/v1/daily", symbols=",".join(pair), format="csv")
    want = _export(demo.home, tmp_path, "daily", ".csv", "--symbols", ",".join(pair))
    assert r.content == want.read_bytes()


@pytest.mark.parametrize(
    ("start", "end", "columns"),
    [
        ("2015-01-01", "2016-06-30", None),
        (None, "2014-03-31", "close,rsi_14"),
        ("2017-02-01", None, "volume, sma_200 ,trade_date"),
        ("2016-03-05", "2016-03-06", None),  # a weekend: no rows, still a valid file
    ],
)
def test_daily_parquet_with_dates_and_columns_equals_the_filtered_export(
    client: TestClient,
    demo: Demo,
    analyst: str,
    pair: list[str],
    tmp_path: Path,
    start: str | None,
    end: str | None,
    columns: str | None,
) -> None:
    params: dict[str, Any] = {"symbols": ",".join(pair), "format": "parquet"}
    params |= {k: v for k, v in (("start", start), ("end", end), ("columns", columns)) if v}
    got = _frame(_parquet(_get(client, analyst, "/api/v1/daily", **params).content))
    # `stockbatch export daily` has --symbols only: filter and select its file the same way.
    want = pl.read_parquet(
        _export(demo.home, tmp_path, "daily", ".parquet", "--symbols", ",".join(pair))
    )
    if start:
        want = want.filter(pl.col("trade_date") >= dt.date.fromisoformat(start))
    if end:
        want = want.filter(pl.col("trade_date") <= dt.date.fromisoformat(end))
    if columns:
        asked = {c.strip() for c in columns.split(",")} | set(DAILY_KEY)
        want = want.select([c for c in schema.DAILY_FEATURES.names if c in asked])
    assert_frame_equal(got, want)
    if start == "2016-03-05":
        assert got.height == 0
    else:
        assert got.height > 10


def test_quarterly_download_of_two_symbols_and_a_quarter_range(
    client: TestClient, demo: Demo, analyst: str, pair: list[str], tmp_path: Path
) -> None:
    r = _get(
        client, analyst, "/api/v1/quarterly", symbols=",".join(pair), format="parquet",
        **{"from": "2014Q2", "to": "2016Q3"},
    )  # fmt: skip
    got = _frame(_parquet(r.content))
    want = pl.read_parquet(_export(demo.home, tmp_path, "quarterly", ".parquet")).filter(
        pl.col("symbol").is_in(pair),
        pl.col("quarter").is_between(pl.lit("2014Q2"), pl.lit("2016Q3")),
    )
    assert want.height >= 2 * 9
    assert_frame_equal(got, want)


# ----------------------------------------------------------------------------- JSON pages


def _walk(
    client: TestClient, token: str, path: str, **params: Any
) -> tuple[list[dict[str, Any]], int]:
    """Every item of a paged listing, following next_cursor; (items, pages)."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    pages = 0
    while True:
        body = _get(client, token, path, **params, **({"cursor": cursor} if cursor else {})).json()
        pages += 1
        items.extend(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            return items, pages
        assert pages < 10_000, "the cursor never ends"


def _keys(items: list[dict[str, Any]], key: list[str]) -> list[tuple[Any, ...]]:
    return [tuple(i[k] for k in key) for i in items]


def test_daily_pages_cover_one_big_page_exactly(
    client: TestClient, analyst: str, pair: list[str]
) -> None:
    params = {"symbols": ",".join(pair), "start": "2015-06-01", "end": "2016-12-31"}
    whole = _get(client, analyst, "/api/v1/daily", **params, limit=50_000).json()
    assert whole["next_cursor"] is None and len(whole["items"]) > 300
    # 97 does not divide the row count: the last page is short.
    paged, pages = _walk(client, analyst, "/api/v1/daily", **params, limit=97)
    assert pages == -(-len(whole["items"]) // 97) + (len(whole["items"]) % 97 == 0)
    assert paged == whole["items"]
    keys = _keys(paged, DAILY_KEY)
    assert len(set(keys)) == len(keys) and keys == sorted(keys)
    # The JSON rows are the download's rows (dates as ISO text, nulls as null).
    r = _get(client, analyst, "/api/v1/daily", **params, format="parquet")
    rows = _frame(_parquet(r.content)).with_columns(pl.col("trade_date").cast(pl.String))
    assert rows.to_dicts() == paged


def test_daily_pages_of_every_symbol_with_columns(client: TestClient, analyst: str) -> None:
    params = {"columns": "close", "start": "2017-01-01"}
    whole = _get(client, analyst, "/api/v1/daily", **params, limit=50_000).json()
    assert whole["next_cursor"] is None
    paged, pages = _walk(client, analyst, "/api/v1/daily", **params, limit=1_000)
    assert pages > 3 and paged == whole["items"]
    assert set(paged[0]) == {"symbol", "trade_date", "close"}
    assert len({i["symbol"] for i in paged}) > 5


def test_quarterly_pages_cover_one_big_page_exactly(
    client: TestClient, analyst: str, demo: Demo, tmp_path: Path
) -> None:
    whole = _get(client, analyst, "/api/v1/quarterly", limit=50_000).json()
    paged, pages = _walk(client, analyst, "/api/v1/quarterly", limit=50)
    assert pages > 10 and paged == whole["items"]
    keys = _keys(paged, QUARTERLY_KEY)
    assert len(set(keys)) == len(keys) == len(keys) and keys == sorted(keys)
    exported = pl.read_parquet(_export(demo.home, tmp_path, "quarterly", ".parquet"))
    assert keys == list(exported.select(QUARTERLY_KEY).iter_rows())


def test_instrument_pages_cover_the_listing(client: TestClient, analyst: str) -> None:
    whole = _get(client, analyst, "/api/v1/instruments", limit=1_000).json()
    assert whole["next_cursor"] is None and len(whole["items"]) > 5
    for limit in (1, 3, len(whole["items"])):
        paged, _ = _walk(client, analyst, "/api/v1/instruments", limit=limit)
        assert paged == whole["items"], limit
    symbols = [i["symbol"] for i in whole["items"]]
    assert symbols == sorted(set(symbols))


@pytest.fixture(scope="module")
def runs_app(demo: Demo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    """A copy of the demo home with three more runs recorded (`stockbatch load`)."""
    home = tmp_path_factory.mktemp("api-runs") / "home"
    shutil.copytree(demo.home, home)
    for _ in range(3):
        sb(home, "load", "-q", "--force")
    application = create_app(Settings(home=home))
    yield application
    application.state.ctx.close()


def test_run_pages_cover_every_run(runs_app: FastAPI, demo: Demo) -> None:
    client = client_for(runs_app)
    token = demo.tokens["viewer"]  # the copy has the same users and tokens
    whole = _get(client, token, "/api/v1/runs", limit=500).json()
    ids = [r["run_id"] for r in whole["items"]]
    assert len(ids) == 4 and ids == sorted(ids, reverse=True) and ids[-1] == demo.run_id
    for limit in (1, 2, 3):
        paged, pages = _walk(client, token, "/api/v1/runs", limit=limit)
        assert paged == whole["items"], limit
        assert pages == 4 // limit + 1  # a full last page is followed by an empty one


# ----------------------------------------------------------------------------- as_of


@dataclass(frozen=True)
class Row:
    symbol: str
    quarter: str
    available_at: dt.date
    label: float | None


HAND_MADE = [
    Row("XA", "2020Q1", dt.date(2020, 4, 5), 0.11),
    Row("XA", "2020Q2", dt.date(2020, 7, 10), 0.12),
    Row("XA", "2020Q3", dt.date(2020, 10, 7), 0.13),
    Row("XA", "2020Q4", dt.date(2021, 1, 8), None),  # the newest: no label yet
    Row("XB", "2020Q1", dt.date(2020, 4, 20), 0.21),
    Row("XB", "2020Q2", dt.date(2020, 7, 2), 0.22),  # its next quarter is missing
    Row("XB", "2020Q4", dt.date(2021, 1, 2), -0.24),
    Row("XC", "2019Q4", dt.date(2020, 7, 2), 0.31),  # published late
    Row("XC", "2020Q1", dt.date(2020, 4, 30), 0.32),  # before the quarter above
]
AS_OF_DATES = [
    "2020-04-04",  # before anything
    "2020-04-05",  # the first row's own day (<=)
    "2020-07-01",
    "2020-07-02",
    "2020-07-09",
    "2020-07-10",
    "2021-01-07",
    "2030-01-01",
]


def _oracle(as_of: dt.date) -> list[tuple[str, str, float | None]]:
    """What a point-in-time table on ``as_of`` holds: (symbol, quarter, label)."""
    published = {(r.symbol, r.quarter) for r in HAND_MADE if r.available_at <= as_of}

    def nxt(q: str) -> str:
        y, n = int(q[:4]), int(q[5])
        return f"{y + 1}Q1" if n == 4 else f"{y}Q{n + 1}"

    return sorted(
        (r.symbol, r.quarter, r.label if (r.symbol, nxt(r.quarter)) in published else None)
        for r in HAND_MADE
        if r.available_at <= as_of
    )


@dataclass
class Home:
    home: Path
    app: FastAPI
    token: str


@pytest.fixture(scope="module")
def hand_made(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Home]:
    """A warehouse of hand-made quarterly rows (no pipeline), an analyst and its token."""
    home = tmp_path_factory.mktemp("api-asof")
    url = db.resolve_urls(Settings(home=home)).loader
    db.migrate(url)
    engine = db.engine_for(url)
    try:
        symbols = sorted({r.symbol for r in HAND_MADE})
        loader.load_table(
            engine,
            "instruments",
            [pa.table({"symbol": symbols, "name": [f"{s} Corp" for s in symbols]})],
            key=("symbol",),
        )
        columns: dict[str, Any] = {
            f.name: [None] * len(HAND_MADE) for f in schema.QUARTERLY_FEATURES
        }
        columns |= {
            "symbol": [r.symbol for r in HAND_MADE],
            "quarter": [r.quarter for r in HAND_MADE],
            "available_at": [r.available_at for r in HAND_MADE],
            "label_next_q_return": [r.label for r in HAND_MADE],
            "q_close": [float(i) for i in range(len(HAND_MADE))],
            "q_complete": [True] * len(HAND_MADE),
            "feature_set_version": [schema.FEATURE_SET_VERSION] * len(HAND_MADE),
        }
        table = pa.Table.from_pydict(columns, schema=schema.QUARTERLY_FEATURES)
        loader.load_table(engine, "quarterly_features", [table], key=("symbol", "quarter"))
    finally:
        engine.dispose()
    sb(home, "users", "add", "ana", "--role", "analyst", "--password-stdin",
       stdin=PASSWORDS["analyst"])  # fmt: skip
    token = cli_token(home, "ana")[1]
    application = create_app(Settings(home=home))
    yield Home(home=home, app=application, token=token)
    application.state.ctx.close()


@pytest.mark.parametrize("as_of", AS_OF_DATES)
def test_as_of_returns_what_was_published_then(hand_made: Home, tmp_path: Path, as_of: str) -> None:
    client = client_for(hand_made.app)
    want = _oracle(dt.date.fromisoformat(as_of))
    body = _get(client, hand_made.token, "/api/v1/quarterly", as_of=as_of).json()
    got = [(i["symbol"], i["quarter"], i["label_next_q_return"]) for i in body["items"]]
    assert got == want
    assert all(dt.date.fromisoformat(i["available_at"]) <= dt.date.fromisoformat(as_of)
               for i in body["items"])  # fmt: skip
    # Paged by one, the same rows; the download equals `stockbatch export --as-of`.
    paged, _ = _walk(client, hand_made.token, "/api/v1/quarterly", as_of=as_of, limit=1)
    assert paged == body["items"]
    r = _get(client, hand_made.token, "/api/v1/quarterly", as_of=as_of, format="parquet")
    got_file = _parquet(r.content)
    out = _export(hand_made.home, tmp_path, "quarterly", ".parquet", "--as-of", as_of)
    exported = pq.read_table(out)
    assert_frame_equal(_frame(got_file), _frame(exported))
    assert (
        _lineage(got_file)["stockbatch.point_in_time"]
        == as_of
        == _lineage(exported)["stockbatch.point_in_time"]
    )
    assert [
        (s, q, lab)
        for s, q, lab in zip(
            got_file["symbol"].to_pylist(),
            got_file["quarter"].to_pylist(),
            got_file["label_next_q_return"].to_pylist(),
            strict=True,
        )
    ] == want


def test_as_of_with_symbols_and_quarters(hand_made: Home) -> None:
    client = client_for(hand_made.app)
    as_of = dt.date(2020, 7, 10)
    body = _get(
        client, hand_made.token, "/api/v1/quarterly", symbols="XA,XC", as_of=as_of.isoformat(),
        **{"from": "2020Q1", "to": "2020Q2"},
    ).json()  # fmt: skip
    want = [w for w in _oracle(as_of) if w[0] in ("XA", "XC") and "2020Q1" <= w[1] <= "2020Q2"]
    assert [(i["symbol"], i["quarter"], i["label_next_q_return"]) for i in body["items"]] == want
    # Without as_of every row is there with its stored label (the label is not a secret).
    whole = _get(client, hand_made.token, "/api/v1/quarterly").json()["items"]
    assert [(i["symbol"], i["quarter"], i["label_next_q_return"]) for i in whole] == sorted(
        (r.symbol, r.quarter, r.label) for r in HAND_MADE
    )


# ----------------------------------------------------------------------------- bad input

INJECTIONS = [
    "'; DROP TABLE daily_bars; --",
    "%",
    "_",
    "A%",
    "ÄÖÜ-股票",
    "AAPL\x00",
    "\x00",
    "Robert'); DROP TABLE instruments;--",
]


def _cursor(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


MANY = ",".join(f"S{i:05d}" for i in range(201))  # one more than api.max_symbols
THOUSANDS = ",".join(f"S{i:05d}" for i in range(3_000))

BAD_REQUESTS: list[tuple[str, dict[str, Any], str]] = [
    # (path, query, a word the error must name: the parameter or what to fix)
    ("/api/v1/daily", {"symbols": "AAPL", "start": "2020-13-01"}, "start"),
    ("/api/v1/daily", {"symbols": "AAPL", "start": "2020-02-30"}, "start"),
    ("/api/v1/daily", {"symbols": "AAPL", "end": "yesterday"}, "end"),
    ("/api/v1/daily", {"symbols": "AAPL", "start": "2020-01-02", "end": "2020-01-01"}, "after"),
    ("/api/v1/quarterly", {"symbols": "AAPL", "as_of": "2020-02-30"}, "as_of"),
    ("/api/v1/quarterly", {"symbols": "AAPL", "as_of": "yesterday"}, "as_of"),
    ("/api/v1/quarterly", {"symbols": "AAPL", "from": "2019Q5"}, "from"),
    ("/api/v1/quarterly", {"symbols": "AAPL", "to": "19Q1"}, "to"),
    ("/api/v1/quarterly", {"symbols": "AAPL", "from": "2020Q1", "to": "2019Q4"}, "after"),
    ("/api/v1/daily", {"symbols": "NOSUCHSYM"}, "unknown symbols"),
    ("/api/v1/daily", {"symbols": "AAPL,NOSUCH1,NOSUCH2"}, "NOSUCH1"),
    ("/api/v1/quarterly", {"symbols": "NOSUCHSYM"}, "unknown symbols"),
    ("/api/v1/instruments/NOSUCHSYM", {}, "unknown symbol"),
    ("/api/v1/daily", {"symbols": MANY}, "at most 200"),
    ("/api/v1/quarterly", {"symbols": MANY}, "at most 200"),
    ("/api/v1/daily", {"symbols": THOUSANDS}, "symbols"),
    ("/api/v1/daily", {"symbols": ","}, "symbols"),
    ("/api/v1/daily", {"symbols": "AAPL", "limit": 0}, "limit"),
    ("/api/v1/daily", {"symbols": "AAPL", "limit": -5}, "limit"),
    ("/api/v1/daily", {"symbols": "AAPL", "limit": 60_000}, "limit"),
    ("/api/v1/daily", {"symbols": "AAPL", "limit": 10**30}, "limit"),
    ("/api/v1/daily", {"symbols": "AAPL", "limit": "ten"}, "limit"),
    ("/api/v1/quarterly", {"symbols": "AAPL", "limit": 0}, "limit"),
    ("/api/v1/instruments", {"limit": 0}, "limit"),
    ("/api/v1/instruments", {"limit": 1_001}, "limit"),
    ("/api/v1/runs", {"limit": -1}, "limit"),
    ("/api/v1/runs", {"limit": 10**9}, "limit"),
    ("/api/v1/quarantine", {"limit": 0}, "limit"),
    ("/api/v1/daily", {"symbols": "AAPL", "cursor": "garbage!"}, "cursor"),
    ("/api/v1/daily", {"symbols": "AAPL", "cursor": _cursor(["AAPL"])}, "cursor"),
    ("/api/v1/daily", {"symbols": "AAPL", "cursor": _cursor(["AAPL", "2020-13-01"])}, "cursor"),
    ("/api/v1/daily", {"symbols": "AAPL", "cursor": _cursor([True, 1])}, "cursor"),
    ("/api/v1/daily", {"symbols": "AAPL", "cursor": _cursor({"a": 1})}, "cursor"),
    ("/api/v1/daily", {"symbols": "AAPL", "cursor": "x" * 600}, "cursor"),
    ("/api/v1/quarterly", {"symbols": "AAPL", "cursor": _cursor(["AAPL", "2020Q9"])}, "cursor"),
    ("/api/v1/instruments", {"cursor": _cursor(["A", "B"])}, "cursor"),
    ("/api/v1/runs", {"cursor": "%%%"}, "cursor"),
    ("/api/v1/quarantine", {"cursor": _cursor(["x"])}, "cursor"),
    ("/api/v1/audit", {"cursor": _cursor([None])}, "cursor"),
    # Found on PostgreSQL (test_api_postgres): a NUL in a cursor reached the query (500).
    ("/api/v1/runs", {"cursor": _cursor(["\x00"])}, "cursor"),
    ("/api/v1/instruments", {"cursor": _cursor(["A\x00"])}, "cursor"),
    ("/api/v1/daily", {"cursor": _cursor(["AAPL\x00", "2015-01-02"])}, "cursor"),
    ("/api/v1/quarterly", {"cursor": _cursor(["\x00", "2015Q1"])}, "cursor"),
    ("/api/v1/daily", {"symbols": "AAPL", "format": "xml"}, "format"),
    ("/api/v1/quarterly", {"symbols": "AAPL", "format": "PARQUET"}, "format"),
    ("/api/v1/daily", {"symbols": "AAPL", "columns": "close,nope"}, "nope"),
    ("/api/v1/daily", {"symbols": "AAPL", "columns": "'; DROP TABLE daily_bars; --"}, "columns"),
    ("/api/v1/runs/no-such-run", {}, "run"),
    ("/api/v1/quality", {"run_id": "no-such-run"}, "run"),
    ("/api/v1/quality", {"run_id": "'; DROP TABLE pipeline_runs; --"}, "run_id"),
    ("/api/v1/quarantine", {"reason": "nope"}, "reason"),
    ("/api/v1/quarantine", {"symbol": "%"}, "symbol"),
    *[("/api/v1/daily", {"symbols": s}, "symbol") for s in INJECTIONS],
    *[("/api/v1/quarterly", {"symbols": s}, "symbol") for s in INJECTIONS],
    *[("/api/v1/daily", {"symbols": "AAPL", "cursor": s}, "cursor") for s in INJECTIONS],
]


@pytest.mark.parametrize(("path", "query", "hint"), BAD_REQUESTS)
def test_bad_input_is_a_4xx_that_says_what_to_fix(
    client: TestClient, demo: Demo, path: str, query: dict[str, Any], hint: str
) -> None:
    r = client.get(path, params=query, headers=bearer(demo.tokens["admin"]))
    assert r.status_code in (400, 404, 422), (r.status_code, r.text[:300])
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert isinstance(body["error"], str) and len(body["error"]) > 10
    said = body["error"] + " " + " ".join(f"{d['loc']} {d['msg']}" for d in body["detail"])
    assert hint.lower() in said.lower(), said
    if r.status_code == 422:  # a validation error names the parameter and what is wrong
        assert body["detail"] and all(d["msg"] for d in body["detail"])


@pytest.mark.parametrize("text", INJECTIONS)
def test_injection_shaped_paths_and_searches_change_nothing(
    client: TestClient, demo: Demo, text: str
) -> None:
    token = demo.tokens["admin"]
    before = _get(client, token, "/api/v1/instruments", limit=1000).json()["items"]
    for path in (
        f"/api/v1/instruments/{quote(text, safe='')}",
        f"/api/v1/runs/{quote(text, safe='')}",
    ):
        r = client.get(path, headers=bearer(token))
        assert r.status_code in (400, 404, 422), (path, r.status_code, r.text[:300])
        assert r.json()["error"]
    # A search is not an error: % and _ match literally, control characters are spaces.
    found = _get(client, token, "/api/v1/instruments", q=text).json()
    literal = text.replace("\x00", " ").strip().lower()
    for item in found["items"]:
        assert item["symbol"].lower().startswith(literal) or literal in (item["name"] or "").lower()
    assert _get(client, token, "/api/v1/instruments", limit=1000).json()["items"] == before
    assert _get(client, token, "/api/v1/daily", symbols="AAPL", limit=1).json()["items"]


# ----------------------------------------------------------------------------- regressions


@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("/api/v1/daily", {"symbols": "AAPL", "format": "csv"}),
        ("/api/v1/daily", {"symbols": "AAPL", "format": "parquet"}),
        ("/api/v1/daily", {"symbols": "AAPL", "limit": 1}),
        ("/api/v1/quarterly", {"symbols": "AAPL", "format": "csv"}),
        ("/api/v1/quarterly", {"symbols": "AAPL", "format": "parquet"}),
        ("/api/v1/quarterly", {"symbols": "AAPL"}),
        ("/metrics", {}),
    ],
)
def test_answers_have_a_documented_content_type(
    client: TestClient, app: FastAPI, demo: Demo, path: str, query: dict[str, Any]
) -> None:
    """Found by the fuzzer: the CSV / Parquet downloads and /metrics answered with content
    types the OpenAPI document did not declare (it said application/json only)."""
    r = _get(client, demo.tokens["admin"], path, **query)
    documented = app.openapi()["paths"][path]["get"]["responses"]["200"]["content"]
    assert r.headers["content-type"].split(";")[0] in documented, (r.headers, list(documented))
