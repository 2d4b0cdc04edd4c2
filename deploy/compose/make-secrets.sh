#!/usr/bin/env bash
# Creates every secret file deploy/compose.yaml names, in deploy/compose/secrets/ (or
# the folder given as $1): generated passwords, the PostgreSQL URLs that carry them,
# Airflow's keys, OpenSearch's internal users (bcrypt hashes), and a CA with one
# certificate per TLS server (SANs: the service name, localhost, 127.0.0.1).
# Existing files are kept, so running it again only fills in what is missing; delete a
# file (and the data volume that remembers it, for passwords) to rotate it.
# Needs: openssl, and python3 with bcrypt (the project's .venv has it; PYTHON=...).
set -euo pipefail
umask 077
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/secrets}
python=${PYTHON:-$here/../../.venv/bin/python}
[ -x "$python" ] || python=python3
mkdir -p "$out"
cd "$out"

# URL-safe (hex), so a password is used verbatim inside a URL.
pw() { openssl rand -hex 24; }
# write NAME VALUE: only when NAME does not exist yet.
write() { [ -e "$1" ] || printf '%s\n' "$2" > "$1"; }

write postgres_superuser_password "$(pw)"
tls="sslmode=verify-full&sslrootcert=/run/secrets/ca.pem"
for role in owner loader reader; do
  write "warehouse_${role}_url" \
    "postgresql+psycopg://stockbatch_${role}:$(pw)@postgres:5432/stockbatch?${tls}"
done
write airflow_db_url "postgresql+psycopg://airflow:$(pw)@postgres:5432/airflow?${tls}"

for user in admin loader reader dashboards; do write "opensearch_${user}_password" "$(pw)"; done
if [ ! -e opensearch_internal_users.yml ]; then
  "$python" - <<'PY'
import bcrypt

users = {
    "admin": ("opensearch_admin_password", "stockbatch: everything (all_access), for operators"),
    "loader": ("opensearch_loader_password", "stockbatch: loads the stockbatch* indices"),
    "reader": ("opensearch_reader_password", "stockbatch: reads the stockbatch* indices"),
    "kibanaserver": ("opensearch_dashboards_password", "OpenSearch Dashboards' own login"),
}
lines = ['_meta:\n  type: "internalusers"\n  config_version: 2\n']
for user, (file, text) in users.items():
    password = open(file, encoding="utf-8").read().rstrip("\n").encode()
    digest = bcrypt.hashpw(password, bcrypt.gensalt(rounds=12)).decode()
    lines.append(
        f'{user}:\n  hash: "{digest}"\n  reserved: true\n  backend_roles: []\n'
        f'  description: "{text}"\n'
    )
with open("opensearch_internal_users.yml", "w", encoding="utf-8") as f:
    f.write("".join(lines))
PY
fi

write api_session_secret "$(openssl rand -hex 32)"
write airflow_jwt_secret "$(openssl rand -hex 32)"
write airflow_api_secret_key "$(openssl rand -hex 32)"
# Fernet: 32 random bytes, URL-safe base64.
write airflow_fernet_key "$(openssl rand 32 | base64 | tr '+/' '-_')"
[ -e airflow_passwords.json ] || printf '{"admin": "%s"}\n' "$(pw)" > airflow_passwords.json

# The CA (its key stays here: keep this folder private) and the server certificates.
if [ ! -e ca.pem ]; then
  openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout ca.key -out ca.pem -days 3650 -subj "/CN=stockbatch compose CA/O=stockbatch" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
fi
for name in postgres opensearch opensearch-dashboards api airflow-api-server; do
  [ -e "$name.pem" ] && continue
  # PKCS#8 keys (OpenSearch's security plugin reads no other PEM key format).
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$name.key"
  openssl req -new -key "$name.key" -subj "/CN=$name/O=stockbatch" -out "$name.csr"
  printf '%s\n' \
    "basicConstraints=CA:FALSE" \
    "keyUsage=critical,digitalSignature,keyEncipherment" \
    "extendedKeyUsage=serverAuth,clientAuth" \
    "subjectAltName=DNS:$name,DNS:localhost,IP:127.0.0.1" > "$name.ext"
  openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key -CAcreateserial \
    -days 825 -extfile "$name.ext" -out "$name.pem" 2> /dev/null
  rm -f "$name.csr" "$name.ext"
done
rm -f ca.srl

# Compose (outside swarm) bind-mounts these files with their host owner and mode, and
# the services run as several users (postgres, opensearch 1000, airflow 50000,
# stockbatch 10001): the files must be readable to them, so the folder is what keeps
# them private on the host (0700). The CA key is never mounted.
chmod 0644 -- *
chmod 0600 ca.key
chmod 0700 .
echo "secrets in $(pwd)"
