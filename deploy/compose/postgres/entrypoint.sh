#!/bin/sh
# Entry point of the postgres service (deploy/compose.yaml). PostgreSQL refuses a key
# that others may read, and compose (outside swarm) cannot set a secret file's owner or
# mode: copy the pair where only the server's user reads the key, then hand over to the
# image's own entrypoint (initdb on first start, scripts in /docker-entrypoint-initdb.d).
set -eu
install -d -o postgres -g postgres -m 0700 /var/lib/postgresql/tls
install -o postgres -g postgres -m 0644 /run/secrets/postgres_tls_cert /var/lib/postgresql/tls/server.crt
install -o postgres -g postgres -m 0600 /run/secrets/postgres_tls_key /var/lib/postgresql/tls/server.key
exec docker-entrypoint.sh "$@"
