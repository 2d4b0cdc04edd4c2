#!/usr/bin/env bash
# Everything the real services need, installed by the project itself:
# Java 17 and Maven from Debian (when missing), then the Apache Kafka jars from
# Maven Central into the user cache (~/.cache/stockbatch, or $STOCKBATCH_CACHE).
set -euo pipefail
cd "$(dirname "$0")/.."
need() { command -v "$1" >/dev/null 2>&1; }
missing=()
need java || missing+=(openjdk-17-jre-headless)
need mvn || missing+=(maven)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && need apt-get; then
    echo "setup-services: installing ${missing[*]} (apt-get)" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "setup-services: please install ${missing[*]} (Java 17 and Maven) and retry" >&2
    exit 1
  fi
fi
.venv/bin/python -c "from stockbatch.services.kafka import ensure_kafka_jars; print('kafka jars:', ensure_kafka_jars())"

# ---- PostgreSQL (begin) --------------------------------------------------------------
# Debian's server binaries (initdb, postgres; pg_trgm comes with them in postgresql-contrib,
# part of the postgresql package) for the throwaway cluster of `stockbatch services up
# postgresql`. Debian keeps them in /usr/lib/postgresql/<version>/bin, off PATH.
have_pg() {
  [ -n "${STOCKBATCH_PG_BINDIR:-}" ] && [ -x "${STOCKBATCH_PG_BINDIR}/initdb" ] && return 0
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null && return 0
  need initdb
}
if ! have_pg; then
  if [ "$(id -u)" = 0 ] && need apt-get; then
    echo "setup-services: installing postgresql (apt-get)" >&2
    apt-get update -qq
    # The package's own cluster is not needed: stockbatch runs its own under STOCKBATCH_HOME.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    for v in /usr/lib/postgresql/*; do
      pg_ctlcluster "$(basename "$v")" main stop 2>/dev/null || true
    done
  else
    echo "setup-services: please install PostgreSQL (apt-get install postgresql) and retry" >&2
    exit 1
  fi
fi
.venv/bin/python -c "from stockbatch.services.postgresql import find_pg_bindir as f, server_version as v; b = f(); print('postgresql:', b, v(b))"
# ---- PostgreSQL (end) ----------------------------------------------------------------

# ---- OpenSearch (begin) --------------------------------------------------------------
# src/stockbatch/services/opensearch.py: the node's jars from Maven Central into the cache,
# then its launcher compiled with javac: that needs a JDK, not only the JRE above.
if ! need javac; then
  if [ "$(id -u)" = 0 ] && need apt-get; then
    echo "setup-services: installing openjdk-17-jdk-headless (apt-get)" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jdk-headless >/dev/null
  else
    echo "setup-services: please install a Java 17 JDK (openjdk-17-jdk-headless) and retry" >&2
    exit 1
  fi
fi
.venv/bin/python -c "from stockbatch.services.opensearch import ensure_opensearch_jars; print('opensearch:', ensure_opensearch_jars())"
# ---- OpenSearch (end) ----------------------------------------------------------------

# ---- Elasticsearch (begin) -----------------------------------------------------------
# src/stockbatch/services/elasticsearch.py: Elastic's minimal distribution zip from Maven
# Central, unpacked into the cache (Java 17 and Maven above are enough).
.venv/bin/python -c "from stockbatch.services.elasticsearch import ensure_elasticsearch; print('elasticsearch:', ensure_elasticsearch())"
# ---- Elasticsearch (end) -------------------------------------------------------------

# ---- Chromium (begin) ----------------------------------------------------------------
# Debian's chromium for the dashboard's browser test (tests/e2e/test_dashboard_browser.py):
# Playwright drives it through executable_path (Playwright's own browser download is not
# used). STOCKBATCH_CHROMIUM points at another binary.
chromium_bin="${STOCKBATCH_CHROMIUM:-/usr/bin/chromium}"
if [ ! -x "$chromium_bin" ]; then
  if [ "$(id -u)" = 0 ] && need apt-get; then
    echo "setup-services: installing chromium (apt-get)" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "setup-services: please install chromium (apt-get install chromium) for the browser test, or set STOCKBATCH_CHROMIUM, and retry" >&2
    exit 1
  fi
fi
echo "chromium: $("$chromium_bin" --version 2>/dev/null || echo "$chromium_bin")"
# ---- Chromium (end) ------------------------------------------------------------------

# ---- Containers (begin) --------------------------------------------------------------
# Debian's podman with runc (crun is refused on this kind of machine) and debootstrap,
# for the image test (tests/deploy/test_image.py): scripts/build-image.sh builds a
# Debian bookworm base locally (no registry is reachable) and the image on top of it.
if ! need podman || ! need runc || ! need debootstrap; then
  if [ "$(id -u)" = 0 ] && need apt-get; then
    echo "setup-services: installing podman runc debootstrap (apt-get)" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc debootstrap >/dev/null
  else
    echo "setup-services: please install podman, runc and debootstrap (apt-get install podman runc debootstrap) for the image test, and retry" >&2
    exit 1
  fi
fi
echo "podman: $(podman --version)"
# ---- Containers (end) ----------------------------------------------------------------
# kubectl for `kubectl kustomize` of deploy/k8s (offline; tests/deploy/test_k8s.py).
if ! need kubectl; then
  if [ "$(id -u)" = 0 ] && need apt-get; then
    echo "setup-services: installing kubernetes-client (kubectl; apt-get)" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kubernetes-client >/dev/null
  else
    echo "setup-services: please install kubectl (apt-get install kubernetes-client) and retry" >&2
    exit 1
  fi
fi
