#!/bin/bash
# First start only (the image runs /docker-entrypoint-initdb.d/* on an empty data
# volume): the roles and databases of the host's `stockbatch services up postgresql`
# and `services up airflow` (src/stockbatch/services/postgresql.py, airflow.py).
# Passwords come from the URL secrets the clients use, so each is written once; they
# reach psql through its environment (\getenv), never a command line.
set -euo pipefail

# postgresql+psycopg://user:PASSWORD@host:port/db?...  ->  PASSWORD (make-secrets.sh
# generates URL-safe passwords, so no percent-decoding is needed).
url_password() { sed -E 's#^[^:]+://[^:/@]+:([^@]*)@.*$#\1#' "$1"; }

export SB_OWNER_PW SB_LOADER_PW SB_READER_PW SB_AIRFLOW_PW
SB_OWNER_PW=$(url_password /run/secrets/warehouse_owner_url)
SB_LOADER_PW=$(url_password /run/secrets/warehouse_loader_url)
SB_READER_PW=$(url_password /run/secrets/warehouse_reader_url)
SB_AIRFLOW_PW=$(url_password /run/secrets/airflow_db_url)

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres <<'SQL'
\getenv owner_pw SB_OWNER_PW
\getenv loader_pw SB_LOADER_PW
\getenv reader_pw SB_READER_PW
\getenv airflow_pw SB_AIRFLOW_PW
CREATE ROLE stockbatch_write NOLOGIN;
CREATE ROLE stockbatch_read NOLOGIN;
CREATE ROLE stockbatch_owner LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'owner_pw';
CREATE ROLE stockbatch_loader LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'loader_pw';
CREATE ROLE stockbatch_reader LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'reader_pw';
GRANT stockbatch_write TO stockbatch_loader;
GRANT stockbatch_read TO stockbatch_reader;
CREATE DATABASE stockbatch OWNER stockbatch_owner ENCODING 'UTF8' TEMPLATE template0;
CREATE ROLE airflow LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'airflow_pw';
CREATE DATABASE airflow OWNER airflow ENCODING 'UTF8' TEMPLATE template0;
REVOKE ALL ON DATABASE airflow FROM PUBLIC;
\connect stockbatch
-- Nobody but the named roles connects or makes temp tables; only the owner creates
-- objects (pg_database_owner owns schema public in PostgreSQL 15).
REVOKE ALL ON DATABASE stockbatch FROM PUBLIC;
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE stockbatch TO stockbatch_write;
GRANT CONNECT ON DATABASE stockbatch TO stockbatch_read;
GRANT USAGE ON SCHEMA public TO stockbatch_write, stockbatch_read;
ALTER DEFAULT PRIVILEGES FOR ROLE stockbatch_owner IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO stockbatch_write;
ALTER DEFAULT PRIVILEGES FOR ROLE stockbatch_owner IN SCHEMA public
    GRANT USAGE, SELECT ON SEQUENCES TO stockbatch_write;
ALTER DEFAULT PRIVILEGES FOR ROLE stockbatch_owner IN SCHEMA public
    GRANT SELECT ON TABLES TO stockbatch_read;
SQL
