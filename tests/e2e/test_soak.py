"""Soak: 20 consecutive daily incremental runs of the embedded pipeline, then equality
with a full rebuild.

A tiny working copy of the CC0 demo data (three Kaggle Huge files, 20 lines of each
held back) is grown one trading day per session, and ``stockbatch run`` (the CLI,
in-process, as tests/e2e/test_cli_pipeline.py drives it) runs after every append. At
one session a past row's close is corrected in place in its source file (a new version
of the file: FEATURES.md/docs say the file is re-landed and its symbols' bucket
revalidated); at another a garbage file appears (rejected by name: the run is
``partial``, exit 3, never a crash) and is removed by the next session; a malformed-
but-parseable file also arrives and stays (its rows quarantined).

What it proves, after EVERY run: the run record reconciles (``rows_in = rows_clean +
rows_quarantined + rows_deduplicated``), ``rows_in`` equals the data lines of the source
files counted independently, the status is ``succeeded`` (``partial`` with the one
garbage file rejected at its session), and each new day's rows reach silver. After the
correction: silver holds the corrected close. At the end: silver, quarantine, gold
daily and gold quarterly of the grown lake equal those of a full rebuild from the same
source files in a fresh home (sorted frames; silver and quarantine exactly equal, gold
exactly equal but for floats, held to the FEATURES.md tolerance: rolling means summed
from another starting row differ in the last bits; ``ingest_run_id`` is provenance).
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import time
from pathlib import Path

import polars as pl
from typer.testing import CliRunner

from stockbatch.cli import app
from support.lake_compare import PROVENANCE_ONLY, assert_frames_close, read_layer

DEMO_HUGE = Path(__file__).resolve().parents[2] / "data" / "demo" / "kaggle" / "huge"
FILES = ("btu.us.txt", "evstc.us.txt", "aig-ws.us.txt")  # tiny real files (CC0 demo)
SESSIONS = 20
AS_OF = "2017-12-31"
CORRECT_AT, GARBAGE_AT, MALFORMED_AT = 7, 12, 15
LAYERS = ("silver/bars", "silver/quarantine", "gold/daily_features", "gold/quarterly_features")

# Hand-made, clearly not market data.
GARBAGE = b"\x00\xffPK\x03\x04 this is not a price file\n\x1b[31m,,,\n"
MALFORMED = (
    b"Date,Open,High,Low,Close,Volume,OpenInt\n"
    b"2017-11-01,10,11,9,10.5,1000,0\n"  # clean
    b"2017-11-02,10,11\n"  # wrong arity
    b"2017-11-03,ten,11,9,10.5,1000,0\n"  # non-numeric
    b"2017-11-06,10,11,9,10.5,1000,0\n"  # identical twin ...
    b"2017-11-06,10,11,9,10.5,1000,0\n"  # ... collapsed
)

runner = CliRunner()


def sb_run(home: Path, data: Path) -> int:
    """``stockbatch run`` in-process, with an isolated home; returns the exit code."""
    args = ["run", "--source", "kaggle", "--path", str(data), "--as-of", AS_OF, "-q"]
    res = runner.invoke(app, args, env={"STOCKBATCH_HOME": str(home)}, catch_exceptions=False)
    assert "Traceback" not in res.output, res.output
    return res.exit_code


def last_run(home: Path) -> dict:
    res = runner.invoke(app, ["runs", "--last", "--json"], env={"STOCKBATCH_HOME": str(home)})
    assert res.exit_code == 0, res.output
    return json.loads(res.output)


def data_lines(folder: Path) -> int:
    """Non-blank lines after the header of every readable price file (independent count)."""
    total = 0
    for p in sorted(folder.glob("*.us.txt")):
        lines = [ln for ln in p.read_bytes().splitlines() if ln.strip()]
        if lines and lines[0].startswith(b"Date,"):
            total += len(lines) - 1
    return total


def frames(home: Path) -> dict[str, pl.DataFrame]:
    out = {}
    for layer in LAYERS:
        f = read_layer(home / "lake", layer)
        out[layer] = f.drop([c for c in PROVENANCE_ONLY if c in f.columns])
    return out


def test_twenty_daily_runs_then_equal_to_full_rebuild(tmp_path: Path) -> None:
    started = time.monotonic()
    data = tmp_path / "data"
    data.mkdir()
    held: dict[Path, list[bytes]] = {}
    for name in FILES:
        lines = (DEMO_HUGE / name).read_bytes().rstrip(b"\n").split(b"\n")
        (data / name).write_bytes(b"\n".join(lines[:-SESSIONS]) + b"\n")
        held[data / name] = lines[-SESSIONS:]
    home = tmp_path / "home"

    assert sb_run(home, data) == 0  # the initial history
    first = last_run(home)
    assert first["status"] == "succeeded"
    per_run: list[int] = [first["rows_in"]]
    landed: list[int] = [first["rows_landed"]]
    corrected: tuple[str, float] | None = None

    for day in range(SESSIONS):
        new_days = set()
        for path, lines in held.items():
            with path.open("ab") as fh:
                fh.write(lines[day] + b"\n")
            new_days.add((path.name.split(".")[0].upper(), lines[day][:10].decode()))
        if day == CORRECT_AT:
            path = data / "aig-ws.us.txt"
            lines = path.read_bytes().split(b"\n")
            fields = lines[200].split(b",")
            close = round(float(fields[4]) * 1.01, 4)
            fields[4] = b"%.4f" % close
            fields[2] = b"%.4f" % max(float(fields[2]), close)
            lines[200] = b",".join(fields)
            path.write_bytes(b"\n".join(lines))
            corrected = (fields[0].decode(), close)
        if day == GARBAGE_AT:
            (data / "junk.us.txt").write_bytes(GARBAGE)
        if day == GARBAGE_AT + 1:
            (data / "junk.us.txt").unlink()
        if day == MALFORMED_AT:
            (data / "odd.us.txt").write_bytes(MALFORMED)

        code = sb_run(home, data)
        run = last_run(home)
        total = run["rows_clean"] + run["rows_quarantined"] + run["rows_deduplicated"]
        assert run["rows_in"] == total, (day, run)
        assert run["rows_in"] == data_lines(data), (day, run["rows_in"])
        if day == GARBAGE_AT:
            assert (code, run["status"], run["rejected_inputs"]) == (3, "partial", 1), run
        else:
            assert (code, run["status"]) == (0, "succeeded"), (day, run)
        per_run.append(run["rows_in"])
        landed.append(run["rows_landed"])
        assert not run["process_skipped"], (day, run)
        if day == CORRECT_AT:  # the corrected file is a new version: landed whole
            assert run["rows_landed"] > len(FILES), run
        else:  # only the appended lines are landed
            extra = len(MALFORMED.splitlines()) - 1 if day == MALFORMED_AT else 0
            assert run["rows_landed"] == len(FILES) + extra, (day, run)
        silver = read_layer(home / "lake", "silver/bars")
        have = set(
            silver.select(pl.col("symbol"), pl.col("trade_date").cast(pl.String)).iter_rows()
        )
        assert new_days <= have, (day, new_days - have)
        if day == CORRECT_AT:
            assert corrected is not None
            row = silver.filter(
                (pl.col("symbol") == "AIG-WS")
                & (pl.col("trade_date") == dt.date.fromisoformat(corrected[0]))
            )
            assert row["close"].to_list() == [corrected[1]], "the correction reached silver"

    assert per_run[-1] - per_run[0] == SESSIONS * len(FILES) + 5  # + the malformed file's rows
    fresh = tmp_path / "fresh"
    assert sb_run(fresh, data) == 0
    grown, rebuilt = frames(home), frames(fresh)
    for layer in LAYERS:
        a, b = grown[layer], rebuilt[layer]
        assert a.columns == b.columns, layer
        assert a.height == b.height, (layer, a.height, b.height)
        if layer.startswith("silver/"):
            assert a.equals(b), f"{layer}: the grown lake differs from a full rebuild"
        else:
            # Gold: exactly equal except floats, which may differ in the last bits where a
            # rolling window was summed from another starting row (FEATURES.md tolerance).
            assert_frames_close(a, b, layer)
            floats = [n for n, t in a.schema.items() if t == pl.Float64]
            assert a.drop(floats).equals(b.drop(floats)), layer
    elapsed = time.monotonic() - started
    print(f"soak: {SESSIONS + 1} runs, rows_in {per_run}, rows_landed {landed}, {elapsed:.1f}s")
    assert elapsed < 120
    shutil.rmtree(tmp_path / "fresh")
