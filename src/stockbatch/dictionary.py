"""The data dictionary (``docs/data.md``), generated from the declarations.

Column lists and types come from the Arrow schemas (:mod:`stockbatch.schema`),
formulas from the feature catalog (:mod:`stockbatch.features.catalog`), reason
codes from the rule declarations (:mod:`stockbatch.quality.rules`). The prose
that the declarations do not hold (units, examples) is in the tables below,
and generation fails when a declared column, reason or flag has none, so the
document cannot drift: ``tests/unit/test_data_dictionary.py`` compares
``docs/data.md`` with :func:`render`. Regenerate with
``python -m stockbatch.dictionary > docs/data.md``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import pyarrow as pa

from stockbatch import schema
from stockbatch.features import catalog
from stockbatch.quality.rules import RULES

BAR_COLUMNS: Mapping[str, tuple[str, str, str]] = {
    # name: (unit, null when, meaning)
    "symbol": ("", "never", "the instrument, Yahoo spelling (`BRK-B`; a Huge-set `_` series kept)"),
    "trade_date": ("", "never", "the session's date (exchange local)"),
    "open": ("price", "not recorded (the source wrote 0)", "the session's first price"),
    "high": ("price", "never", "the session's highest price"),
    "low": ("price", "never", "the session's lowest price"),
    "close": ("price", "never", "the session's last price"),
    "adj_close": ("price", "the layout has none", "close adjusted for splits and dividends"),
    "volume": ("shares", "never", "shares traded (0 is allowed: illiquid days)"),
    "source": ("", "never", "kaggle-huge, kaggle-sp500, kaggle-nasdaq or yahoo"),
}

QUARANTINE_COLUMNS: Mapping[str, str] = {
    "symbol": "the symbol the row claims (null when it could not be read)",
    "trade_date": "the date field as arrived (text)",
    "open": "as arrived (text)",
    "high": "as arrived (text)",
    "low": "as arrived (text)",
    "close": "as arrived (text)",
    "adj_close": "as arrived (text); null when the layout has none",
    "volume": "as arrived (text)",
    "source": "which source layout the row came from",
    "is_adjusted": "whether the source's prices are already adjusted",
    "source_file": "the file (relative to the input folder) or the Yahoo request",
    "line_no": "1-based physical line in that file (the header is line 1)",
    "n_fields": "fields found on the line",
    "raw_line": "the line verbatim when its arity was wrong, else null",
    "ingest_run_id": "the landing (ingest run) that brought the row",
    "reasons": "every reason code that fired (one row can have several)",
}

REASON_EXAMPLES: Mapping[str, str] = {
    # code: an input line (Huge layout: Date,Open,High,Low,Close,Volume,OpenInt) that fires it
    "unparseable": "`2017-02-30,1.0,1.1,0.9,1.0,100,0` (no such date), or a line with 5 fields",
    "missing_price": "`2017-11-13,,1.30,1.20,1.25,100000,0` (empty open)",
    "missing_volume": "`2017-11-13,1.24,1.30,1.20,1.25,,0`",
    "non_positive_price": "`2017-11-13,1.24,1.30,-1.20,1.25,100000,0` (a negative open too)",
    "high_below_low": "`2017-11-13,1.24,1.20,1.30,1.25,100000,0`",
    "open_outside_range": "`2017-11-13,1.50,1.30,1.20,1.25,100000,0`",
    "close_outside_range": "`2017-11-13,1.24,1.30,1.20,1.10,100000,0`",
    "negative_volume": "`2017-11-13,1.24,1.30,1.20,1.25,-5,0`",
    "weekend_date": "`2017-11-11,1.24,1.30,1.20,1.25,100000,0` (a Saturday)",
    "duplicate": "two lines for 2017-11-13 of one symbol and source with different closes",
    "future_date": "`2031-01-02,...` with `--as-of 2030-12-31`",
    "date_out_of_range": "`1800-01-02,1,2,1,1.5,100,0` (before 1885-01-01: a typo)",
    "implausible_value": "`2017-11-13,1e308,1e308,1e308,1e308,100,0`, or a volume of 1e14",
}

HEALTH_FLAGS: Mapping[str, str] = {
    # flag: (kept, counted) what it means, with an example
    "zero_volume": "volume 0 (real on illiquid days): `2017-11-13,1.2,1.3,1.2,1.25,0,0`",
    "off_calendar": "a weekday that is not an XNYS session, e.g. 2017-11-23 (Thanksgiving)",
    "suspect_jump": "close moves beyond x5 or /5 from the day before (often an unadjusted split)",
    "open_missing": "open = 0 in the source, read as not recorded: open null, the row kept",
}

RUN_RECORD: Mapping[str, str] = {
    "run_id": "UTC timestamp + random suffix; sorts by time",
    "command": "run, ingest, collect, process or load",
    "status": "succeeded, partial (completed; something needs attention) or failed",
    "started_at": "UTC, ISO 8601",
    "duration_s": "seconds",
    "rows_landed": "rows this run landed in bronze",
    "rows_in": "bronze rows the process stage read (all active rows on a full rebuild)",
    "rows_clean": "rows in silver (superseded rows of a lower-priority source included)",
    "rows_quarantined": "rows refused, each with one or more reasons",
    "rows_deduplicated": "identical repeats collapsed into one row",
    "rows_superseded": "clean rows of a source that a higher-priority source replaces",
    "reasons": "rows per reason code (a row with two reasons counts for both)",
    "health": "rows per health flag (kept rows)",
    "process_skipped": "true when the inputs were unchanged (nothing recomputed)",
    "rows_changed_in_warehouse": "rows inserted or updated by the load",
    "rejected_inputs": "input files or requests refused as a whole (listed in the manifest)",
}


def _unit(d: catalog.FeatureDef) -> str:
    """The unit of a feature, from its kind and inputs."""
    daily = catalog.by_name(catalog.DAILY_FEATURES)
    if d.kind == "last" and d.inputs and d.inputs[0] in daily:
        return _unit(daily[d.inputs[0]])  # a daily feature on the quarter's last row
    if d.kind in ("ratio_lag", "log_ratio_lag", "relative_to", "period_return", "log1p"):
        return "fraction"
    if d.kind in ("rolling_std", "std"):
        return "fraction, annualised"
    if d.kind == "rsi":
        return "0-100"
    if d.kind == "max_drawdown":
        return "fraction (<= 0)"
    if d.kind == "rolling_zscore":
        return "std devs"
    if d.kind in ("count", "expected_sessions") or d.name == "q_missing_days":
        return "sessions"
    if d.name in ("dollar_volume", "q_dollar_volume"):
        return "price x shares"
    if d.name == "q_avg_volume":
        return "shares"
    if d.kind in ("next_session_after", "period_complete", "constant", "next_period_value"):
        return {"next_period_value": "fraction"}.get(d.kind, "")
    return "price (adjusted)"


def _null_rule(d: catalog.FeatureDef) -> str:
    """When a feature is null, from its kind."""
    if d.kind in ("ratio_lag", "log_ratio_lag", "diff_lag"):
        return f"first {d.lag} row(s) of the symbol"
    if d.kind in ("rolling_mean", "rolling_std", "bollinger"):
        return f"fewer than {d.window} values of `{d.inputs[0]}` so far"
    if d.kind == "rolling_zscore":
        return f"fewer than {d.window} values so far, or a constant window"
    if d.kind == "wilder_mean" or d.kind == "rsi":
        return "before the first 14 values"
    if d.kind == "std":
        return "fewer than 2 values in the quarter"
    if d.kind == "period_return" or d.kind == "log1p":
        return "no row in the previous quarter"
    if d.kind == "next_period_value":
        return "next quarter absent or not complete"
    if d.kind == "last" and d.name.endswith("_end"):
        return "the daily feature is null on that row"
    if d.kind in ("relative_to",):
        return "an input is null"
    if d.name == "q_open":
        return "no row of the quarter has an open"
    return "never"


def _type(field: pa.Field) -> str:
    return {
        pa.string(): "text",
        pa.float64(): "float",
        pa.date32(): "date",
        pa.int32(): "integer",
        pa.int16(): "integer",
        pa.bool_(): "boolean",
        pa.list_(pa.string()): "list of text",
    }.get(field.type, str(field.type))


def _table(header: Iterable[str], rows: Iterable[Iterable[str]]) -> list[str]:
    head = list(header)
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return out


def _need(mapping: Mapping[str, object], names: Iterable[str], what: str) -> None:
    missing = [n for n in names if n not in mapping]
    if missing:
        raise KeyError(f"docs/data.md has no {what} for {missing}: add it in dictionary.py")


def _daily() -> list[str]:
    feats = catalog.by_name(catalog.DAILY_FEATURES)
    _need(BAR_COLUMNS, schema.DAILY_BAR_COLUMNS, "bar column text")
    rows = []
    for f in schema.DAILY_FEATURES:
        if f.name in BAR_COLUMNS:
            unit, null, meaning = BAR_COLUMNS[f.name]
            rows.append((f"`{f.name}`", _type(f), unit, null, meaning))
        else:
            d = feats[f.name]
            rows.append((f"`{f.name}`", _type(f), _unit(d), _null_rule(d), d.description))
    return _table(("column", "type", "unit", "null when", "meaning / formula"), rows)


QUARTER_KEYS: Mapping[str, str] = {
    "symbol": "the instrument",
    "quarter": "calendar quarter, e.g. `2017Q4`",
    "quarter_start": "first calendar day of the quarter",
    "quarter_end": "last calendar day of the quarter",
}


def describe_columns(table: str) -> dict[str, str]:
    """One line per column of ``table`` (``daily``, ``quarterly`` or ``quarantine``): its
    meaning, unit and when it is null, as in docs/data.md (the API's schema descriptions)."""
    out: dict[str, str] = {}
    if table == "daily":
        feats = catalog.by_name(catalog.DAILY_FEATURES)
        for f in schema.DAILY_FEATURES:
            if f.name in BAR_COLUMNS:
                unit, null, meaning = BAR_COLUMNS[f.name]
            else:
                d = feats[f.name]
                unit, null, meaning = _unit(d), _null_rule(d), d.description
            out[f.name] = _line(meaning, unit, null)
    elif table == "quarterly":
        defs = catalog.by_name(catalog.QUARTERLY_FEATURES)
        for f in schema.QUARTERLY_FEATURES:
            if f.name in QUARTER_KEYS:
                out[f.name] = QUARTER_KEYS[f.name]
            else:
                d = defs[f.name]
                out[f.name] = _line(d.description, _unit(d), _null_rule(d))
    elif table == "quarantine":
        out.update(QUARANTINE_COLUMNS)
    else:
        raise ValueError(f"unknown table {table!r}")
    return out


def _line(meaning: str, unit: str, null: str) -> str:
    text = meaning + (f" [{unit}]" if unit else "")
    return text + (f"; null when: {null}" if null and null != "never" else "")


def _quarterly() -> list[str]:
    defs = catalog.by_name(catalog.QUARTERLY_FEATURES)
    keys = QUARTER_KEYS
    _need(keys, schema.QUARTERLY_KEY_COLUMNS, "key column text")
    groups = (
        ("key", schema.QUARTERLY_KEY_COLUMNS),
        ("feature", schema.QUARTERLY_FEATURE_COLUMNS),
        ("meta", schema.QUARTERLY_META_COLUMNS),
        ("label", schema.QUARTERLY_LABEL_COLUMNS),
    )
    rows = []
    for group, names in groups:
        for name in names:
            f = schema.QUARTERLY_FEATURES.field(name)
            if name in keys:
                rows.append((f"`{name}`", group, _type(f), "", "never", keys[name]))
            else:
                d = defs[name]
                rows.append((f"`{name}`", group, _type(f), _unit(d), _null_rule(d), d.description))
    return _table(("column", "group", "type", "unit", "null when", "meaning / formula"), rows)


def _quarantine() -> list[str]:
    _need(QUARANTINE_COLUMNS, schema.QUARANTINE.names, "quarantine column text")
    rows = [(f"`{f.name}`", _type(f), QUARANTINE_COLUMNS[f.name]) for f in schema.QUARANTINE]
    return _table(("column", "type", "meaning"), rows)


def _reasons() -> list[str]:
    by_code = {r.code: r.description for r in RULES}
    _need(REASON_EXAMPLES, schema.REASON_CODES, "reason example")
    rows = [
        (f"`{code}`", by_code.get(code, ""), REASON_EXAMPLES[code]) for code in schema.REASON_CODES
    ]
    return _table(("code", "rule", "example"), rows)


def _health() -> list[str]:
    _need(HEALTH_FLAGS, schema.HEALTH_FLAGS, "health flag text")
    return _table(
        ("flag", "meaning, example"), [(f"`{h}`", HEALTH_FLAGS[h]) for h in schema.HEALTH_FLAGS]
    )


def _runs() -> list[str]:
    return _table(("field", "meaning"), [(f"`{k}`", v) for k, v in RUN_RECORD.items()])


INTRO = """\
# Data dictionary

What stockbatch produces, column by column, as its users read it: the daily
export, the quarterly ML table, the quarantine and the run record.
Contract version (`feature_set_version`): {version}.

This page is generated from the code's declarations (`python -m
stockbatch.dictionary > docs/data.md`); a test fails when it is out of date.

## Conventions

- **Prices** are in the source's currency (USD for every shipped source).
  Features read *adjusted* prices: `factor = adj_close / close` when the source
  has an adjusted close (and close > 0), else 1; `o, h, l, c = open, high, low,
  close x factor`; adjusted volume `v = volume / factor`.
- **Windows count rows** (the symbol's trading days), not calendar days, per
  symbol in `trade_date` order.
- **Returns and ratios** are fractions (`0.01` = 1 %); volatilities are
  annualised with `sqrt(252)`.
- **Null** means "not computable here" (too little history, a missing input).
  No value is ever NaN or infinite.
"""

SNAPSHOTS = """\
### Quarterly snapshots

`stockbatch export snapshot --quarter 2017Q4` (the quarterly DAG calls the same
`stockbatch.snapshots.write_snapshot`) keeps an immutable, versioned copy of a
closed quarter's rows of the table above, for the ML application:

```
HOME/exports/quarterly/<quarter>/<version>.parquet   the rows (read-only)
HOME/exports/quarterly/<quarter>/<version>.json      its manifest
HOME/exports/quarterly/<quarter>/latest.json         names the current version
```

- `<version>` is the id of the run that wrote it; `stockbatch export snapshots`
  lists quarter, version, rows and SHA-256.
- A quarter is snapshotted once it has ended, the gold data reaches its last
  XNYS session and the warehouse holds that gold; otherwise the command says
  why (exit 1).
- The rows are exactly `stockbatch export quarterly`'s rows of that quarter
  (`--as-of`: its point-in-time table), ordered by symbol. The file holds no
  time or run id (only quarter, `feature_set_version`, label columns and the
  point in time as metadata) and is written with fixed Parquet options, so the
  same rows give the same bytes.
- The manifest holds the file's SHA-256 and size, rows, columns and types,
  `feature_set_version`, the source run ids (the process run that made gold,
  the load run, the caller's), the data's as-of and last date, `created_at`,
  the code version and the previous version.
- Same content as the latest version: nothing is written and that version is
  returned. Other content: a new version beside the old ones, then
  `latest.json` is replaced atomically. Files are written to a temporary name
  and linked into place, which fails on an existing name: a version is never
  replaced, and none is ever deleted.
"""

LOOK_AHEAD = """\
## No look-ahead

- `available_at` is the first XNYS session after `quarter_end`: a quarterly
  row may be used for a decision from that day on, never before.
- `q_complete` is false for the quarter-to-date row (the dataset ends before
  the quarter's last session); train on complete rows
  (`stockbatch export quarterly --complete-only`).
- `label_next_q_return` is the *next* quarter's `q_return`: it is the target,
  in its own column group; no feature reads it (the catalog refuses such a
  definition), and it is null until that next quarter is complete.
- Daily features of a row read only that row and earlier rows of the symbol.
"""


def render() -> str:
    """The whole of ``docs/data.md``."""
    parts = [
        INTRO.format(version=schema.FEATURE_SET_VERSION),
        "## Daily export\n",
        "`stockbatch export daily` (and the warehouse tables `daily_bars` + `daily_features`):"
        " one row per symbol and session.\n",
        *_daily(),
        "",
        "## Quarterly ML table\n",
        "`stockbatch export quarterly` (table `quarterly_features`): one row per symbol and"
        " calendar quarter. Groups: `key`, `feature` (model inputs), `meta` (use, do not"
        " train on), `label` (the target).\n",
        *_quarterly(),
        "",
        SNAPSHOTS,
        "## Quarantine\n",
        "Rows refused by validation, exactly as they arrived, with every reason"
        " (`stockbatch quarantine`, table `quarantine`, `lake/silver/quarantine`).\n",
        *_quarantine(),
        "",
        "### Reason codes\n",
        "A row is quarantined when any rule fires; it keeps every code that fired, so counts"
        " per reason can add up to more than the quarantined rows.\n",
        *_reasons(),
        "",
        "### Health flags\n",
        "Kept rows that are counted, not refused (`health` in the run record).\n",
        *_health(),
        "",
        "## The run record\n",
        "`stockbatch runs --json` (from `lake/runs/<run_id>.json`, which also holds the"
        " inputs with their SHA-256, the settings with passwords masked, the gold"
        " checksums and the code and contract versions). Every run reconciles:"
        " `rows_in = rows_clean + rows_quarantined + rows_deduplicated`.\n",
        *_runs(),
        "",
        LOOK_AHEAD,
    ]
    return "\n".join(parts)


if __name__ == "__main__":  # pragma: no cover - the generator's command line
    print(render(), end="")
