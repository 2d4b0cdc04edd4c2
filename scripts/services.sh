#!/usr/bin/env bash
# Start, stop and inspect the real local services (Kafka, PostgreSQL, OpenSearch) that the tests and the
# README use:  scripts/services.sh up kafka [--scram] | down [--purge] | status [--json]
# Data lives under $STOCKBATCH_HOME/services (default ./.stockbatch); see deploy/services/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m stockbatch.cli.services "$@"
