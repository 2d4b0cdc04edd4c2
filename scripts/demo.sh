#!/usr/bin/env bash
# The main job on a fresh machine: install, run the whole pipeline on the
# bundled demo data (embedded defaults: Polars, Parquet lake, SQLite), then
# show what it produced.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export STOCKBATCH_HOME="${STOCKBATCH_HOME:-.stockbatch/demo}"
SB=.venv/bin/stockbatch
# The demo data ends in 2023-04 (CPAAW); a fixed as-of keeps the demo reproducible.
set +e
$SB run --source kaggle --path data/demo/kaggle --as-of 2023-06-30 "$@"
rc=$?
set -e
if [ "$rc" -ne 0 ] && [ "$rc" -ne 3 ]; then exit "$rc"; fi
$SB runs --last
$SB runs --last --json   # counts per reason code and health flags
$SB export quarterly --out "$STOCKBATCH_HOME/exports/quarterly.parquet"
$SB export daily --symbols AAPL --out "$STOCKBATCH_HOME/exports/aapl_daily.csv"
echo "demo: outputs are under $STOCKBATCH_HOME (lake/, warehouse.db, exports/)"
