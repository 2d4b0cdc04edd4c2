#!/usr/bin/env bash
# Refresh docs/screenshots/*.png: the dashboard's browser test
# (tests/e2e/test_dashboard_browser.py) on the demo sample, with its screenshots written
# there (login, overview, search, symbol, symbol-phone, quarterly, quality, quarantine,
# runs, run, admin; 1280x800, the phone one 390x844). Needs chromium
# (scripts/setup-services.sh installs it). Arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/pytest ] || bash scripts/setup.sh
out=docs/screenshots
expected=(login overview search symbol symbol-phone quarterly quality quarantine runs run admin catalog)
mkdir -p "$out"
for name in "${expected[@]}"; do rm -f "$out/$name.png"; done
STOCKBATCH_SCREENSHOTS="$PWD/$out" .venv/bin/pytest -q -p no:cacheprovider \
  tests/e2e/test_dashboard_browser.py tests/e2e/test_catalog_browser.py "$@"
missing=0
for name in "${expected[@]}"; do
  if [ ! -s "$out/$name.png" ]; then echo "screenshots: $out/$name.png is missing" >&2; missing=1; fi
done
[ "$missing" -eq 0 ] || exit 1
ls -l "$out"/*.png
