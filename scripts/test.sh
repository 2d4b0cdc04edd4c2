#!/usr/bin/env bash
# The whole test suite from a fresh machine: installs what it needs, lints,
# type-checks, then runs every test (unit, integration, end to end).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/setup-services.sh
if [ -z "${STOCKBATCH_SHARED_DATA:-}" ]; then
  # The shared real-data folder sits beside the checkout on development and CI machines.
  if [ -d "../shared/data/kaggle" ]; then
    STOCKBATCH_SHARED_DATA="$(cd ../shared/data && pwd)"
  else
    echo "test: set STOCKBATCH_SHARED_DATA to the shared data/ folder (Kaggle samples)" >&2
    exit 2
  fi
fi
export STOCKBATCH_SHARED_DATA
echo "== ruff"
.venv/bin/ruff check src tests benchmarks dags scripts
.venv/bin/ruff format --check src tests benchmarks dags scripts
echo "== mypy"
.venv/bin/mypy
echo "== import-linter (layers and no cycles: pyproject.toml [tool.importlinter])"
.venv/bin/lint-imports --no-cache
echo "== pytest"
# Two workers (pytest-xdist): most tests wait on a subprocess, a JVM or one Python core,
# so a second worker fills the other core. tests/conftest.py groups the modules by the
# session service they need (one worker starts each); STOCKBATCH_TEST_WORKERS=0 runs
# everything in one process.
workers="${STOCKBATCH_TEST_WORKERS:-2}"
# A short temp root: a worker's folder adds a level (popen-gwN), and the services' unix
# sockets under a test's home must stay under the kernel's path limit. Kept when a test
# failed (its services' logs are in it).
basetemp="$(mktemp -d "${TMPDIR:-/tmp}/sbt-XXXXXX")"
chmod 711 "$basetemp"  # servers run as their own users (PostgreSQL) under it
set +e
.venv/bin/pytest -n "$workers" --dist loadgroup --basetemp "$basetemp" "$@"
rc=$?
set -e
if [ "$rc" -eq 0 ]; then
  rm -rf "$basetemp"
else
  echo "test: the tests' files and service logs are kept in $basetemp" >&2
fi
if [ "$rc" -eq 5 ]; then
  echo "test: pytest collected no tests: that is a failure" >&2
  exit 1
fi
exit "$rc"
