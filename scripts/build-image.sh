#!/usr/bin/env bash
# Build the stockbatch image (deploy/Dockerfile) with podman, on a machine where
# Docker Hub cannot be reached:
#   1. the base image localhost/stockbatch-base:bookworm: a debootstrap of Debian
#      bookworm (from this machine's apt mirror) with Debian's python3.11,
#      python3-venv and python3-pip, imported into podman. Reused when present
#      (--rebuild-base builds it again).
#   2. the image (default localhost/stockbatch:dev) FROM that base, with this
#      machine's pip configuration and CA as build secrets and --network host.
# Prints the image's size at the end.
#
# Usage: scripts/build-image.sh [--tag TAG] [--extras LIST] [--rebuild-base]
# Environment: IMAGE (tag), BASE_IMAGE (skip step 1 and use this base), EXTRAS,
#   MIRROR (Debian mirror; default: the first deb.debian.org-like URI of apt's sources),
#   WORK (scratch dir, default $TMPDIR/stockbatch-base), NICE (default 10).
# Needs root (debootstrap) and Debian's podman, runc, debootstrap
#   (apt-get install -y podman debootstrap runc).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

IMAGE=${IMAGE:-localhost/stockbatch:dev}
BASE=localhost/stockbatch-base:bookworm
EXTRAS=${EXTRAS:-postgresql,opensearch,elasticsearch}
WORK=${WORK:-${TMPDIR:-/tmp}/stockbatch-base}
NICE=${NICE:-10}
REBUILD_BASE=0
while [ $# -gt 0 ]; do
    case $1 in
        --tag) IMAGE=$2; shift 2 ;;
        --extras) EXTRAS=$2; shift 2 ;;
        --rebuild-base) REBUILD_BASE=1; shift ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "unknown option: $1" >&2; exit 2 ;;
    esac
done

for tool in podman runc; do
    command -v "$tool" > /dev/null || {
        echo "$tool is missing: apt-get install -y podman debootstrap runc" >&2; exit 1; }
done
# crun is refused here and the default ulimits cannot be set: the project's config.
export CONTAINERS_CONF=${CONTAINERS_CONF:-$ROOT/deploy/podman/containers.conf}
PODMAN=(podman --runtime runc)

log() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# ------------------------------------------------------------------ 1. base image
build_base() {
    command -v debootstrap > /dev/null || {
        echo "debootstrap is missing: apt-get install -y debootstrap" >&2; exit 1; }
    local mirror=${MIRROR:-}
    if [ -z "$mirror" ]; then
        mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
                     /etc/apt/sources.list.d/*.sources 2>/dev/null \
                 | grep -E '^(URIs:|deb )' | grep -v security | grep -oE 'https?://[^ ]+' \
                 | head -n1 || true)
    fi
    mirror=${mirror:-http://deb.debian.org/debian}
    local rootfs=$WORK/rootfs start=$SECONDS
    log "base: debootstrap bookworm from $mirror into $rootfs"
    rm -rf "$rootfs"
    mkdir -p "$WORK"
    nice -n "$NICE" debootstrap --variant=minbase \
        --include=python3.11,python3-venv,python3-pip,ca-certificates \
        bookworm "$rootfs" "$mirror" > "$WORK/debootstrap.log" 2>&1 \
        || { tail -n 20 "$WORK/debootstrap.log" >&2; exit 1; }
    # The image's own apt sources (the same mirror), no caches, docs or man pages.
    cat > "$rootfs/etc/apt/sources.list" <<SOURCES
deb $mirror bookworm main
deb $mirror bookworm-updates main
SOURCES
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
           "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
           "$rootfs"/usr/share/locale/* "$rootfs"/var/log/*.log "$rootfs"/var/log/apt/*
    log "base: importing as $BASE"
    tar -C "$rootfs" -c . | "${PODMAN[@]}" import \
        --change 'ENV=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV=LANG=C.UTF-8' \
        --change 'CMD=["python3"]' \
        - "$BASE" > /dev/null
    rm -rf "$rootfs"
    log "base: built in $((SECONDS - start)) s"
}

if [ -n "${BASE_IMAGE:-}" ]; then
    BASE=$BASE_IMAGE
    log "base: using BASE_IMAGE=$BASE"
elif [ "$REBUILD_BASE" = 1 ] || ! "${PODMAN[@]}" image exists "$BASE"; then
    build_base
else
    log "base: $BASE present, reused (--rebuild-base to build it again)"
fi

# ------------------------------------------------------------------ 2. the image
# This machine's pip configuration and CA (what `pip config list` shows) as build
# secrets: the files are mounted for the downloading RUN steps, never copied.
secrets=()
# the pip.conf files that exist, in pip's order (the last one wins); else the usual places
pipconf=$(pip config debug 2>/dev/null | sed -n 's/^ *\(\/[^,]*\), exists: True$/\1/p' | tail -n1 || true)
pipconf=${PIP_CONFIG_FILE:-$pipconf}
if [ -z "$pipconf" ]; then
    for f in /etc/pip.conf "$HOME/.config/pip/pip.conf" "$HOME/.pip/pip.conf"; do
        if [ -s "$f" ]; then pipconf=$f; break; fi
    done
fi
ca=${PIP_CERT:-$(pip config get global.cert 2>/dev/null || true)}
if [ -n "$pipconf" ] && [ -s "$pipconf" ]; then
    secrets+=(--secret "id=pipconf,src=$pipconf")
    log "image: pip configuration $pipconf as build secret pipconf"
fi
if [ -n "$ca" ] && [ -s "$ca" ]; then
    secrets+=(--secret "id=ca,src=$ca")
    log "image: CA $ca as build secret ca"
fi

revision=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
version=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -n1)
start=$SECONDS
log "image: building $IMAGE (extras: $EXTRAS)"
nice -n "$NICE" "${PODMAN[@]}" build \
    --network host \
    --format docker \
    --file deploy/Dockerfile \
    --build-arg "BASE_IMAGE=$BASE" \
    --build-arg "EXTRAS=$EXTRAS" \
    --build-arg "VERSION=$version" \
    --build-arg "REVISION=$revision" \
    --build-arg "CREATED=$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    "${secrets[@]}" \
    --tag "$IMAGE" \
    .
log "image: built in $((SECONDS - start)) s"
"${PODMAN[@]}" image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' \
    | grep -E "^(${IMAGE}|${BASE})( |$)" | sed 's/^/size: /'
