#!/usr/bin/env bash
# Install stockbatch and its pinned dependencies into ./.venv (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
UV_VERSION=0.13.9
say() { echo "setup: $*" >&2; }
if ! command -v uv >/dev/null 2>&1; then
  say "installing uv ${UV_VERSION} (Python package manager)"
  "$PY" -m pip install --quiet --disable-pip-version-check "uv==${UV_VERSION}"
fi
if [ ! -x .venv/bin/python ]; then
  say "creating .venv with $("$PY" --version 2>&1)"
  uv venv --quiet --python "$PY" .venv
fi
# requirements.lock pins every transitive dependency (regenerate: scripts/lock.sh).
# uv reports what it checks and installs (on a fresh machine: about a minute).
n=$(grep -c '^[A-Za-z0-9]' requirements.lock)
say "checking $n pinned packages in .venv (a fresh machine installs them: about a minute)"
uv pip install -p .venv/bin/python -r requirements.lock 2>&1 | sed 's/^/setup:   /' >&2
uv pip install --quiet -p .venv/bin/python --no-deps -e .
# Byte-compile once: with PYTHONDONTWRITEBYTECODE set (as on CI machines) every
# command would otherwise recompile ~900 modules (~3 s) at each start. The paths
# come from the interpreter itself (no hard-coded Python version).
say "byte-compiling"
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
.venv/bin/python -m compileall -q -j 0 src "$site" >/dev/null 2>&1 || say "byte-compiling failed (commands start slower; not fatal)"
say "ready: .venv/bin/stockbatch"
