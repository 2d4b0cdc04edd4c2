#!/usr/bin/env bash
# The main job on a fresh machine: install, run the whole pipeline on the bundled demo
# data (embedded defaults: Polars, Parquet lake, SQLite), show what it produced, then
# serve the dashboard and API on http://127.0.0.1:8000 (Ctrl-C stops it).
# It uses the default home (./.stockbatch, or $STOCKBATCH_HOME), so every command of the
# README works on the demo's results right after it.
#   bash scripts/demo.sh --no-serve    # stop after the pipeline (for scripts)
# Other arguments go to `stockbatch run`.
set -euo pipefail
cd "$(dirname "$0")/.."
serve=1
args=()
for a in "$@"; do
  if [ "$a" = "--no-serve" ]; then serve=0; else args+=("$a"); fi
done
set -- "${args[@]+"${args[@]}"}"
bash scripts/setup.sh
export STOCKBATCH_HOME="${STOCKBATCH_HOME:-.stockbatch}"
SB=.venv/bin/stockbatch
echo "demo: running the pipeline on data/demo/kaggle (home $STOCKBATCH_HOME)" >&2
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
$SB quarantine --limit 5
$SB show AAPL --days 5 --quarters 4
cat <<MSG
demo: outputs are under $STOCKBATCH_HOME (lake/, warehouse.db, exports/). Look further with:
  .venv/bin/stockbatch show SYMBOL --days 20 --quarters 8    # e.g. ACN, ADM, AON, XLV
  .venv/bin/stockbatch quarantine --by file                  # refused rows and why
  .venv/bin/stockbatch runs                                  # every run and its counts
  every column is described in docs/data.md
MSG
if [ "$serve" -eq 0 ]; then exit 0; fi
# A demo login with a fresh random password, printed once (only its hash is stored).
password=$(.venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(12))')
if ! printf '%s\n' "$password" | $SB users passwd demo --password-stdin >/dev/null 2>&1; then
  printf '%s\n' "$password" | $SB users add demo --role admin --password-stdin >/dev/null
fi
port="${STOCKBATCH_API__PORT:-8000}"
cat <<MSG
demo: dashboard at http://127.0.0.1:${port}/  log in as: demo / ${password}
      (an admin; add others with: .venv/bin/stockbatch users add NAME --role viewer)
      API: .venv/bin/stockbatch tokens create demo, then
           curl -H "Authorization: Bearer <token>" http://127.0.0.1:${port}/api/v1/runs
      Ctrl-C stops the server.
MSG
exec $SB serve --port "$port"
