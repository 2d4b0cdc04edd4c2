#!/usr/bin/env bash
# Install stockbatch and its pinned dependencies into ./.venv (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
UV_VERSION=0.13.9
if ! command -v uv >/dev/null 2>&1; then
  echo "setup: installing uv ${UV_VERSION} (Python package manager)" >&2
  "$PY" -m pip install --quiet --disable-pip-version-check "uv==${UV_VERSION}"
fi
if [ ! -x .venv/bin/python ]; then
  uv venv --quiet --python "$PY" .venv
fi
# requirements.lock pins every transitive dependency (regenerate: scripts/lock.sh).
uv pip install --quiet -p .venv/bin/python -r requirements.lock
uv pip install --quiet -p .venv/bin/python --no-deps -e .
# Byte-compile once: with PYTHONDONTWRITEBYTECODE set (as on CI machines) every
# command would otherwise recompile ~900 modules (~3 s) at each start.
.venv/bin/python -m compileall -q -j 0 src .venv/lib/python3.11/site-packages >/dev/null 2>&1 || true
