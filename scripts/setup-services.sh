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
