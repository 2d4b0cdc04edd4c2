#!/usr/bin/env bash
# Re-pin every dependency (run after changing pyproject.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
uv pip compile --quiet --python-version 3.11 --extra dev --extra spark --extra postgresql --extra opensearch --extra elasticsearch --extra airflow pyproject.toml -o requirements.lock
