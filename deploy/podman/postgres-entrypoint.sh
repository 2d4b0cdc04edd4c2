#!/bin/bash
# Entry point of deploy/podman/postgres.Containerfile: on an empty data folder, create
# the cluster (scram-sha-256, TLS-only host connections) and the application role and
# database `stockbatch`; then run the server in the foreground.
# Environment: POSTGRES_PASSWORD_FILE, POSTGRES_TLS_CERT_FILE, POSTGRES_TLS_KEY_FILE
# (required), PGPORT (5432), POSTGRES_LISTEN (listen_addresses, default '*').
set -euo pipefail
: "${POSTGRES_PASSWORD_FILE:?set POSTGRES_PASSWORD_FILE to a file holding the password}"
: "${POSTGRES_TLS_CERT_FILE:?set POSTGRES_TLS_CERT_FILE (the server certificate, PEM)}"
: "${POSTGRES_TLS_KEY_FILE:?set POSTGRES_TLS_KEY_FILE (its key, PEM)}"
port=${PGPORT:-5432}

# The server refuses a key readable by others: a private copy owned by postgres.
install -m 0600 "$POSTGRES_TLS_KEY_FILE" /tmp/server.key
install -m 0644 "$POSTGRES_TLS_CERT_FILE" /tmp/server.pem

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    initdb --pgdata "$PGDATA" --username postgres --auth-local peer --auth-host reject \
        --encoding UTF8 --locale C.UTF-8 > /tmp/initdb.log
    # TLS only for every host connection; the socket stays for this script (peer).
    cat > "$PGDATA/pg_hba.conf" <<'HBA'
local   all  postgres               peer
hostssl all  all       0.0.0.0/0    scram-sha-256
hostssl all  all       ::/0         scram-sha-256
HBA
    pg_ctl --pgdata "$PGDATA" --options "-c listen_addresses=''" --wait start > /dev/null
    # psql reads the password from the file itself (backquote expansion of a meta
    # command): it is never an argument of a process.
    psql --quiet --no-psqlrc --username postgres --dbname postgres \
        --set ON_ERROR_STOP=1 --set "pwfile=$POSTGRES_PASSWORD_FILE" <<'SQL'
\set pw `cat :pwfile`
CREATE ROLE stockbatch LOGIN PASSWORD :'pw';
CREATE DATABASE stockbatch OWNER stockbatch;
SQL
    pg_ctl --pgdata "$PGDATA" --mode fast --wait stop > /dev/null
fi

exec postgres -D "$PGDATA" -p "$port" \
    -c listen_addresses="${POSTGRES_LISTEN:-*}" \
    -c ssl=on -c ssl_cert_file=/tmp/server.pem -c ssl_key_file=/tmp/server.key \
    -c password_encryption=scram-sha-256 -c unix_socket_directories=/tmp
