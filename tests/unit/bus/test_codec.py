"""The bars.v1 / instruments.v1 message format: round trips on real rows, every refusal."""

from __future__ import annotations

import zlib
from pathlib import Path

import pyarrow as pa
import pytest

from stockbatch.bus import codec
from stockbatch.schema import INSTRUMENTS
from stockbatch.sources.base import BRONZE_SOURCE_SCHEMA
from stockbatch.sources.kaggle import KaggleSource


@pytest.fixture(scope="module")
def adm(demo_data: Path) -> pa.Table:
    """Real rows: the demo copy of the Kaggle Huge file adm.us.txt (8,726 data lines)."""
    src = KaggleSource(demo_data / "huge")
    unit = next(u for u in src.units() if u.ref == "adm.us.txt")
    return src.read(unit)


def _unit(table: pa.Table, **kw: object) -> list[codec.Envelope]:
    args: dict[str, object] = {
        "ingest_run_id": "20260101T000000000Z-abc123",
        "source": "kaggle-huge",
        "source_file": "adm.us.txt",
        "unit_sha256": "f" * 64,
        "batch_rows": 1000,
    }
    args.update(kw)
    return codec.encode_unit(table, **args)  # type: ignore[arg-type]


def _h(env: codec.Envelope) -> dict[str, str]:
    return {k: v.decode() for k, v in env.headers}


def test_real_file_round_trips_in_numbered_parts(adm: pa.Table) -> None:
    assert adm.num_rows == 8726  # wc -l adm.us.txt = 8727 lines, one is the header
    envs = _unit(adm)
    assert len(envs) == 9  # ceil(8726 / 1000)
    decoded = [codec.decode(e.key, e.value, e.headers) for e in envs]
    assert all(isinstance(m, codec.BarsMessage) for m in decoded)
    bars = [m for m in decoded if isinstance(m, codec.BarsMessage)]
    assert [(m.part, m.parts) for m in bars] == [(i, 9) for i in range(9)]
    assert [m.table.num_rows for m in bars] == [1000] * 8 + [726]
    assert pa.concat_tables([m.table for m in bars]).equals(adm)
    m = bars[0]
    assert (m.symbol, m.source, m.source_file, m.ingest_run_id) == (
        "ADM",
        "kaggle-huge",
        "adm.us.txt",
        "20260101T000000000Z-abc123",
    )
    assert m.unit_sha256 == "f" * 64


def test_headers_are_exactly_the_documented_ones(adm: pa.Table) -> None:
    env = _unit(adm.slice(0, 3), batch_rows=5000)[0]
    assert env.key == b"ADM"
    assert env.rows == 3
    assert _h(env) == {
        "stockbatch-schema": "bars.v1",
        "content-type": "application/vnd.apache.arrow.stream",
        "ingest-run-id": "20260101T000000000Z-abc123",
        "source": "kaggle-huge",
        "source-file": "adm.us.txt",
        "unit-sha256": "f" * 64,
        "unit-part": "0/1",
        "row-count": "3",
        "checksum": f"crc32:{zlib.crc32(env.value):08x}",
    }
    # The value is a plain Arrow IPC stream any Arrow reader opens.
    table = pa.ipc.open_stream(env.value).read_all()
    assert table.schema.equals(BRONZE_SOURCE_SCHEMA)
    assert table.column("trade_date").to_pylist() == ["1983-04-06", "1983-04-07", "1983-04-08"]


def test_oversized_slices_are_halved_until_they_fit(adm: pa.Table) -> None:
    envs = _unit(adm.slice(0, 2000), batch_rows=2000, max_bytes=60_000)
    assert all(len(e.value) <= 60_000 for e in envs)
    assert len(envs) > 1
    tables = [codec.decode(e.key, e.value, e.headers).table for e in envs]
    assert pa.concat_tables(tables).equals(adm.slice(0, 2000))
    assert [_h(e)["unit-part"] for e in envs] == [f"{i}/{len(envs)}" for i in range(len(envs))]


def test_empty_unit_has_no_records_and_ipc_compression_round_trips(adm: pa.Table) -> None:
    assert _unit(adm.slice(0, 0)) == []
    plain = _unit(adm, batch_rows=5000)
    packed = _unit(adm, batch_rows=5000, compression="zstd")
    assert sum(len(e.value) for e in packed) < sum(len(e.value) for e in plain) / 2
    back = [codec.decode(e.key, e.value, e.headers).table for e in packed]
    assert pa.concat_tables(back).equals(adm)


def test_rows_of_several_symbols_are_keyed_per_symbol(adm: pa.Table) -> None:
    # Hand-made edge case: a unit holding two symbols (no real source does this today).
    other = adm.slice(0, 2).set_column(0, "symbol", pa.array(["ZZZ", "ZZZ"]))
    envs = _unit(pa.concat_tables([adm.slice(0, 3), other]))
    assert [(e.key, e.rows) for e in envs] == [(b"ADM", 3), (b"ZZZ", 2)]
    assert [_h(e)["unit-part"] for e in envs] == ["0/2", "1/2"]


def test_instruments_round_trip() -> None:
    # Hand-made edge case: two instrument rows.
    table = pa.table(
        {
            "symbol": ["AAPL", "SPY"],
            "name": ["Apple Inc.", "SPDR S&P 500"],
            "exchange": ["Q", "P"],
            "is_etf": [False, True],
            "source": ["kaggle-nasdaq", "kaggle-nasdaq"],
        },
        schema=INSTRUMENTS,
    )
    env = codec.encode_instruments(table, ingest_run_id="r1", source="kaggle-nasdaq")
    msg = codec.decode(env.key, env.value, env.headers)
    assert isinstance(msg, codec.InstrumentsMessage)
    assert msg.table.equals(table)
    assert (msg.ingest_run_id, msg.source) == ("r1", "kaggle-nasdaq")


# ----------------------------------------------------------------------------- refusals


def _replace(headers: codec.Headers, name: str, value: bytes | None) -> list:
    return [(k, value if k == name else v) for k, v in headers]


def _reason(key: bytes | None, value: bytes | None, headers: list | None) -> str:
    with pytest.raises(codec.DecodeError) as info:
        codec.decode(key, value, headers)
    return info.value.reason


@pytest.fixture(scope="module")
def good(adm: pa.Table) -> codec.Envelope:
    return _unit(adm.slice(0, 5), batch_rows=5000)[0]


def test_missing_or_unknown_version_is_refused(good: codec.Envelope) -> None:
    assert _reason(good.key, good.value, None) == "missing_header"
    no_version = [(k, v) for k, v in good.headers if k != "stockbatch-schema"]
    assert _reason(good.key, good.value, no_version) == "missing_header"
    v2 = _replace(good.headers, "stockbatch-schema", b"bars.v2")
    assert _reason(good.key, good.value, v2) == "unsupported_version"
    no_run = [(k, v) for k, v in good.headers if k != "ingest-run-id"]
    assert _reason(good.key, good.value, no_run) == "missing_header"


def test_flipped_byte_fails_the_checksum(good: codec.Envelope) -> None:
    value = bytearray(good.value)
    value[len(value) // 2] ^= 0x01
    assert _reason(good.key, bytes(value), good.headers) == "checksum_mismatch"
    assert _reason(good.key, None, good.headers) == "bad_payload"


def _with_value(env: codec.Envelope, value: bytes) -> list:
    return _replace(env.headers, "checksum", codec.checksum(value).encode())


def test_payload_that_is_not_arrow_or_not_bars_is_refused(good: codec.Envelope) -> None:
    junk = b'{"symbol": "ADM", "close": "1.0"}'
    assert _reason(good.key, junk, _with_value(good, junk)) == "bad_payload"
    truncated = good.value[: len(good.value) // 2]
    assert _reason(good.key, truncated, _with_value(good, truncated)) == "bad_payload"
    sink = pa.BufferOutputStream()
    other = pa.table({"symbol": ["ADM"], "close": [1.0]})
    with pa.ipc.new_stream(sink, other.schema) as w:
        w.write_table(other)
    wrong = sink.getvalue().to_pybytes()
    assert _reason(good.key, wrong, _with_value(good, wrong)) == "schema_mismatch"


def test_counts_parts_and_key_must_agree(good: codec.Envelope) -> None:
    assert _reason(good.key, good.value, _replace(good.headers, "row-count", b"6")) == (
        "row_count_mismatch"
    )
    assert _reason(good.key, good.value, _replace(good.headers, "row-count", b"-5")) == (
        "bad_header"
    )
    for bad in (b"1/1", b"3/2", b"x/2", b"1"):
        assert _reason(good.key, good.value, _replace(good.headers, "unit-part", bad)) == (
            "bad_header"
        )
    assert _reason(b"MSFT", good.value, good.headers) == "key_mismatch"
    assert _reason(None, good.value, good.headers) == "key_mismatch"
    doubled = [*good.headers, ("source", b"yahoo")]
    assert _reason(good.key, good.value, doubled) == "bad_header"
    latin = _replace(good.headers, "source", b"\xff\xfe")
    assert _reason(good.key, good.value, latin) == "bad_header"
    ctype = _replace(good.headers, "content-type", b"application/json")
    assert _reason(good.key, good.value, ctype) == "bad_header"
