"""A real Apache Airflow 3 on loopback: :class:`AirflowService` runs its API server (UI
included), scheduler, DAG processor and triggerer under one supervisor process
(:mod:`stockbatch.services.supervisor`), with ``AIRFLOW_HOME`` at
``$STOCKBATCH_HOME/services/airflow``.

Metadata database: its own database ``airflow`` and role ``airflow`` (generated
password) in the project's PostgreSQL when ``services up postgresql`` runs in the
same home, else SQLite (for trying only). Login: Airflow's SimpleAuthManager with
one ``admin`` user whose generated password is recorded in services.json (0600).
The components get the environment of the command that ran ``services up``
(``STOCKBATCH_HOME`` set to this home, every ``STOCKBATCH_*`` kept), so DAG tasks
read the same settings. Files, ports, credentials: ``deploy/services/README.md``.

TLS: the API server (UI, REST API and the Execution API the tasks call) serves HTTPS
with a certificate of the home's CA (:mod:`stockbatch.services.tls`); the task runners'
client, the readiness probe and the recorded endpoint (``ca_file``) verify it against
that CA only. ``insecure=True`` (``services up airflow --insecure``) serves plain HTTP,
with a warning.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import quote, urlencode

import httpx

from stockbatch.services import tls
from stockbatch.services.base import Launch, LocalService
from stockbatch.services.jvm import REPO_ROOT
from stockbatch.services.postgresql import PostgresService
from stockbatch.services.system import HOST, ServiceError, tail, write_private

ADMIN = "admin"
"""The one Airflow user (role admin) of the local Airflow."""
DB_NAME = "airflow"
DB_ROLE = "airflow"
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
"""Airflow's processes, in start order (``airflow <name>``)."""
HEALTH_PATH = "/api/v2/monitor/health"
_HEALTH_KEYS = ("metadatabase", "scheduler", "dag_processor", "triggerer")

INSTALL_HINT = (
    "install the project's airflow extra (bash scripts/setup.sh; pinned in "
    "requirements.lock) into the virtualenv that runs stockbatch"
)
START_PG_HINT = "start it with `stockbatch services up postgresql` (same STOCKBATCH_HOME)"

MetadataDb = Literal["auto", "postgresql", "sqlite"]

INSECURE_WARNING = (
    "Airflow's API server runs WITHOUT TLS (--insecure): the admin password, JWTs and "
    "task traffic cross 127.0.0.1 in clear text; run `stockbatch services down airflow && "
    "stockbatch services up airflow` for HTTPS"
)


def find_airflow() -> str:
    """The ``airflow`` executable beside this Python (the project's .venv), else on PATH."""
    sibling = Path(sys.executable).parent / "airflow"
    found = str(sibling) if sibling.exists() else shutil.which("airflow")
    if not found:
        raise ServiceError(f"the `airflow` command was not found: {INSTALL_HINT}")
    return found


def airflow_version() -> str:
    """The installed Apache Airflow version (``3.3.2``)."""
    try:
        return metadata.version("apache-airflow")
    except metadata.PackageNotFoundError:
        return "unknown"


def default_dags_folder() -> Path:
    """The project's ``dags/`` folder (repository root)."""
    return REPO_ROOT / "dags"


def verify_context(ca_file: Path | str | None) -> ssl.SSLContext | bool:
    """What httpx verifies an https server with: ``ca_file`` alone (the local CA), else
    the system's CAs (``True``)."""
    return ssl.create_default_context(cafile=str(ca_file)) if ca_file else True


def airflow_health(
    url: str, timeout: float = 2.0, ca_file: Path | str | None = None
) -> dict[str, Any] | None:
    """``GET <url>/api/v2/monitor/health`` (no login needed), or None when nothing answers
    (an https server is verified against ``ca_file``: one it does not sign is no answer)."""
    try:
        response = httpx.get(
            f"{url.rstrip('/')}{HEALTH_PATH}", timeout=timeout, verify=verify_context(ca_file)
        )
        if response.status_code != 200:
            return None
        body: dict[str, Any] = response.json()
        return body
    except (httpx.HTTPError, ValueError):
        return None


def unhealthy_parts(health: dict[str, Any]) -> list[str]:
    """The parts of a health answer that are not ``healthy`` (``[]``: all are)."""
    return [
        key.replace("_", "-")
        for key in _HEALTH_KEYS
        if (health.get(key) or {}).get("status") != "healthy"
    ]


class AirflowService(LocalService[str]):
    """The local Airflow under ``home/services/airflow`` (its ``AIRFLOW_HOME``).

    ``port``: the API server's port on 127.0.0.1 (default: ``airflow.port`` of the
    settings, else the one used last time, else a free one). ``metadata_db`` and
    ``dags_folder`` default to the settings (``STOCKBATCH_AIRFLOW__*``). ``insecure``:
    plain HTTP instead of HTTPS (see the module doc). :attr:`warnings` holds what an
    ``up()`` wants the user to know (SQLite fallback, no TLS).
    """

    name = "airflow"
    title = "Airflow"
    port_hint = "`stockbatch services up airflow --port N` or STOCKBATCH_AIRFLOW__PORT"
    log_name = "airflow.log"
    # The supervisor stops its components (SIGTERM, SIGKILL after 20 s) and then exits.
    stop_signals: ClassVar[tuple[signal.Signals, ...]] = (signal.SIGTERM,)
    abort_timeout = 25.0
    kill_group = True  # the supervisor leads the group of every Airflow process
    secret_fields: ClassVar[tuple[str, ...]] = ("password",)
    probe_timeout = 2.0
    probe_interval = 0.5

    def __init__(
        self,
        home: Path,
        port: int | None = None,
        *,
        metadata_db: MetadataDb | None = None,
        dags_folder: Path | None = None,
        start_timeout: float = 150.0,
        stop_timeout: float = 30.0,
        insecure: bool = False,
    ) -> None:
        # TLS (and authentication) unless `services up --insecure`.
        self.insecure = insecure
        if port is None or metadata_db is None or dags_folder is None:
            from stockbatch.settings import Settings

            try:
                configured = Settings().airflow
            except Exception as exc:  # pydantic.ValidationError: a bad STOCKBATCH_* value
                raise ServiceError(f"invalid settings: {exc}") from exc
            port = port or configured.port
            metadata_db = metadata_db or configured.metadata_db
            dags_folder = dags_folder or configured.dags_folder
        super().__init__(
            home,
            port,
            version=airflow_version(),
            start_timeout=start_timeout,
            stop_timeout=stop_timeout,
        )
        self.metadata_db: MetadataDb = metadata_db
        self.dags_folder = Path(dags_folder or default_dags_folder()).expanduser().resolve()
        self.warnings: list[str] = []

    # -- paths ---------------------------------------------------------------

    @property
    def config_file(self) -> Path:
        """The generated ``airflow.cfg`` (regenerated at each start; 0600: it holds secrets)."""
        return self.dir / "airflow.cfg"

    @property
    def stdout_file(self) -> Path:
        """The supervisor's output is the service's log (what started, stopped, died)."""
        return self.log_file

    @property
    def passwords_file(self) -> Path:
        """SimpleAuthManager's passwords file, written by the service (0600)."""
        return self.dir / "passwords.json"

    @property
    def sqlite_file(self) -> Path:
        """The SQLite metadata database (when not on PostgreSQL)."""
        return self.data_dir / "airflow.db"

    def component_log(self, component: str) -> Path:
        """The output of one Airflow process (``scheduler.log`` ...)."""
        return self.dir / f"{component}.log"

    @property
    def _spec_file(self) -> Path:
        return self.dir / "supervisor.json"

    @property
    def _pids_file(self) -> Path:
        return self.dir / "components.json"

    @property
    def tls(self) -> bool:
        """True when the API server serves HTTPS (as of the last start; a first start: TLS
        unless ``insecure``)."""
        was = self._tls_before(self._stored_state())
        return not self.insecure if was is None else was

    @staticmethod
    def _tls_before(state: dict[str, Any]) -> bool | None:
        """Whether the last start served HTTPS; None before a first start. A home started
        before Airflow had TLS here has no ``tls`` in its state: plain HTTP."""
        if "tls" in state:
            return bool(state["tls"])
        return False if state.get("admin_password") else None

    @property
    def ca_file(self) -> Path | None:
        """The CA clients verify the API server with; None when it serves plain HTTP."""
        state = self._stored_state()
        return Path(state["ca_file"]) if state.get("tls") and state.get("ca_file") else None

    @property
    def url(self) -> str:
        """``https://127.0.0.1:<port>`` (``http://`` with ``--insecure``): the UI, the REST
        API (``/api/v2``) and the Execution API (``/execution/``)."""
        return f"{'https' if self.tls else 'http'}://{self.address}"

    def component_pids(self) -> dict[str, int]:
        """Pids of the Airflow processes while they run ({} otherwise)."""
        try:
            return {k: int(v) for k, v in json.loads(self._pids_file.read_text()).items()}
        except (OSError, ValueError, AttributeError):
            return {}

    def endpoint(self) -> dict[str, Any]:
        """What ``services.json`` records: URL, admin login, metadata database, folders."""
        state = self._stored_state()
        if not state.get("admin_password"):
            raise ServiceError(f"Airflow under {self.dir} has never been started")
        return {
            "url": self.url,
            "tls": bool(state.get("tls")),
            "ca_file": state.get("ca_file") if state.get("tls") else None,
            "username": ADMIN,
            "password": state["admin_password"],
            "version": state.get("version"),
            "metadata_db": state.get("metadata_db"),
            "dags_folder": state.get("dags_folder"),
            "airflow_home": str(self.dir),
            "components": self.component_pids(),
            "log_file": str(self.log_file),
        }

    # -- what differs from the other services ------------------------------------

    def _provision(self) -> str:
        return find_airflow()

    def _prepare(self, state: dict[str, Any], tools: str) -> Launch:
        airflow = tools
        if not self.dags_folder.is_dir():
            raise ServiceError(
                f"the DAGs folder {self.dags_folder} does not exist: create it, or set "
                "STOCKBATCH_AIRFLOW__DAGS_FOLDER"
            )
        tls_before = self._tls_before(state)  # before the first start's secrets are made
        for key in ("admin_password", "db_password", "jwt_secret", "api_secret_key"):
            state.setdefault(key, secrets.token_urlsafe(32))
        state.setdefault("fernet_key", base64.urlsafe_b64encode(os.urandom(32)).decode())
        port = int(state["port"])
        log_port = self._second_port(state, "worker_log_port", port)
        state["worker_log_port"] = log_port
        state["trigger_log_port"] = self._second_port(state, "trigger_log_port", log_port)
        kind, sync_url, async_url = self._metadata(state)  # resets self.warnings
        self._choose_tls(state, tls_before)
        state.update(
            metadata_db=kind,
            dags_folder=str(self.dags_folder),
            version=self.version,
            cwd=os.getcwd(),
        )
        for folder in (self.data_dir, self.dir / "logs"):
            folder.mkdir(parents=True, exist_ok=True)
        self._save_state(state)
        write_private(self.passwords_file, json.dumps({ADMIN: state["admin_password"]}) + "\n")
        write_private(self.config_file, self._airflow_cfg(state, sync_url, async_url))
        env = self._environment()
        migrated = f"{self.version} {kind}"
        if state.get("migrated") != migrated:
            self._migrate(airflow, env)
            state["migrated"] = migrated
            self._save_state(state)
        spec = {
            "components": {c: self._command(airflow, c, port) for c in COMPONENTS},
            "log_dir": str(self.dir),
            "pids_file": str(self._pids_file),
            "grace": 20,
        }
        write_private(self._spec_file, json.dumps(spec, indent=2) + "\n")
        command = [sys.executable, "-m", "stockbatch.services.supervisor", str(self._spec_file)]
        # cwd: where `services up` ran, so relative paths in STOCKBATCH_* mean the same thing.
        return Launch(command, cwd=Path(os.getcwd()), popen={"env": env})

    def _choose_tls(self, state: dict[str, Any], was: bool | None) -> None:
        """HTTPS with the CA's certificate (issued or reused), or plain HTTP with a warning;
        a switch of a stopped home's mode (``was``: the last start's) is said too, since
        its URL changes."""
        if self.insecure:
            state.update(tls=False, ca_file=None, ssl_cert=None, ssl_key=None)
            self.warnings.append(INSECURE_WARNING)
        else:
            issued = tls.issue(self.home, self.name)
            state.update(
                tls=True,
                ca_file=str(issued.ca_file),
                ssl_cert=str(issued.cert_file),
                ssl_key=str(issued.key_file),
            )
        if was is not None and was != state["tls"]:
            now = "https" if state["tls"] else "http"
            self.warnings.append(
                f"this Airflow served {'HTTPS' if was else 'plain HTTP'} before and now serves "
                f"{now.upper() if state['tls'] else 'plain HTTP'}: its URL is now "
                f"{now}://{HOST}:{state['port']} (services.json has it); clients configured "
                "with the old one must change"
            )

    def _check_options(self, state: dict[str, Any], pid: int) -> None:
        super()._check_options(state, pid)
        self.warnings = []
        if bool(self._tls_before(state)) == self.insecure:
            runs = "over HTTPS" if state.get("tls") else "over plain HTTP (--insecure)"
            raise ServiceError(
                f"Airflow already runs under {self.dir} {runs} (pid {pid}); run "
                f"`stockbatch services down {self.name}` first to change it"
            )
        if self.insecure:
            self.warnings.append(INSECURE_WARNING)

    def _owns(self, cmdline: list[str]) -> bool:
        return "stockbatch.services.supervisor" in cmdline and str(self._spec_file) in cmdline

    def _ready(self, timeout: float) -> bool:
        health = airflow_health(self.url, timeout, self.ca_file)
        return health is not None and not unhealthy_parts(health)

    def _awaiting(self) -> str:
        return f"report scheduler, DAG processor and triggerer healthy at {self.url}{HEALTH_PATH}"

    def _health(self) -> tuple[bool, str]:
        health = airflow_health(self.url, timeout=3.0, ca_file=self.ca_file)
        if health is None:
            return False, f"process alive but {self.url}{HEALTH_PATH} does not answer"
        bad = unhealthy_parts(health)
        if bad:
            return False, f"{self.label} at {self.url}: unhealthy {', '.join(bad)}"
        return True, self._running_detail()

    def _running_detail(self) -> str:
        state = self._stored_state()
        db = state.get("metadata_db", "?")
        note = " (SQLite: for trying only)" if db == "sqlite" else ""
        return (
            f"{self.label} at {self.url}{'' if self.tls else ' (NO TLS)'}, metadata {db}{note}; "
            "api-server, scheduler, "
            "dag-processor, triggerer healthy"
        )

    def _log_tails(self) -> str:
        parts = []
        for path in (self.log_file, *(self.component_log(c) for c in COMPONENTS)):
            if (text := tail(path, 15)).strip():
                parts.append(f"--- last lines of {path}\n{text}")
        return "\n".join(parts) or f"(no output in {self.dir})"

    # -- metadata database ---------------------------------------------------------

    def _metadata(self, state: dict[str, Any]) -> tuple[str, str, str]:
        """Choose the metadata database: ``(kind, sync URL, async URL)``."""
        self.warnings = []
        postgres = PostgresService(self.home)
        pg_up = self.metadata_db != "sqlite" and postgres.status().running
        if self.metadata_db == "postgresql" and not pg_up:
            raise ServiceError(
                "Airflow's metadata database is set to PostgreSQL (STOCKBATCH_AIRFLOW__METADATA_DB"
                f"=postgresql) but no PostgreSQL runs under {self.home}: {START_PG_HINT}, "
                "then `stockbatch services up airflow` again"
            )
        if self.metadata_db == "auto" and not pg_up and state.get("metadata_db") == "postgresql":
            raise ServiceError(
                f"this Airflow keeps its metadata in PostgreSQL, which is not running under "
                f"{self.home}: {START_PG_HINT} (or set STOCKBATCH_AIRFLOW__METADATA_DB=sqlite "
                "for a separate, empty SQLite database)"
            )
        if pg_up:
            port = self._create_pg_database(postgres, state["db_password"])
            auth = f"{quote(DB_ROLE, safe='')}:{quote(state['db_password'], safe='')}"
            # The server's TLS parameters (verify-full against the home's CA) go in the
            # URL: both psycopg drivers hand the query to libpq.
            query = urlencode(postgres.tls_params, safe="/")
            where = f"{auth}@{HOST}:{port}/{DB_NAME}" + (f"?{query}" if query else "")
            return (
                "postgresql",
                f"postgresql+psycopg://{where}",
                f"postgresql+psycopg_async://{where}",
            )
        if self.metadata_db == "auto":
            self.warnings.append(
                "Airflow's metadata database is SQLite because PostgreSQL is not running here: "
                "for trying only (one scheduler, no concurrent writes). For real use: "
                f"{START_PG_HINT}, then `stockbatch services down airflow && stockbatch services "
                "up airflow`"
            )
        path = self.sqlite_file
        return "sqlite", f"sqlite:///{path}", f"sqlite+aiosqlite:///{path}"

    @staticmethod
    def _create_pg_database(postgres: PostgresService, password: str) -> int:
        """Role ``airflow`` (this password) and database ``airflow`` owned by it; the port."""
        import psycopg
        from psycopg import sql

        superuser = postgres.url("superuser").replace("+psycopg", "", 1)
        ident = sql.Identifier
        try:
            with psycopg.connect(superuser, autocommit=True, connect_timeout=10) as conn:
                exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [DB_ROLE])
                verb = "ALTER" if exists.fetchone() else "CREATE"
                conn.execute(
                    sql.SQL(
                        "{} ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {}"
                    ).format(sql.SQL(verb), ident(DB_ROLE), sql.Literal(password))
                )
                if not conn.execute(
                    "SELECT 1 FROM pg_database WHERE datname = %s", [DB_NAME]
                ).fetchone():
                    conn.execute(
                        sql.SQL(
                            "CREATE DATABASE {} OWNER {} ENCODING 'UTF8' TEMPLATE template0"
                        ).format(ident(DB_NAME), ident(DB_ROLE))
                    )
                    conn.execute(
                        sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(ident(DB_NAME))
                    )
        except psycopg.Error as exc:
            raise ServiceError(f"could not create Airflow's database in PostgreSQL: {exc}") from exc
        return int(postgres.endpoint()["port"])

    def _migrate(self, airflow: str, env: dict[str, str]) -> None:
        """``airflow db migrate`` (first start, or another Airflow version or database)."""
        log = self.dir / "db-migrate.log"
        try:
            with open(log, "ab") as out:
                done = subprocess.run(
                    [airflow, "db", "migrate"],
                    cwd=self.dir,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    timeout=600,
                    check=False,
                )
        except subprocess.TimeoutExpired as exc:
            raise ServiceError(f"`airflow db migrate` took over 600 s: see {log}") from exc
        if done.returncode != 0:
            raise ServiceError(
                f"`airflow db migrate` failed (exit {done.returncode}):\n{tail(log, 30)}"
            )

    # -- processes and configuration -------------------------------------------------

    def _environment(self) -> dict[str, str]:
        """The components' environment: this one (every STOCKBATCH_* included, so tasks
        read the same settings) with STOCKBATCH_HOME set to this home and Airflow's own
        configuration only from the generated airflow.cfg."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("AIRFLOW__") and k not in ("AIRFLOW_HOME", "AIRFLOW_CONFIG")
        }
        env.update(
            AIRFLOW_HOME=str(self.dir),
            AIRFLOW_CONFIG=str(self.config_file),
            STOCKBATCH_HOME=str(self.home),
            PYTHONUNBUFFERED="1",
        )
        return env

    @staticmethod
    def _command(airflow: str, component: str, port: int) -> list[str]:
        if component == "api-server":
            return [airflow, "api-server", "--host", HOST, "--port", str(port), "--workers", "1"]
        return [airflow, component]

    def _openlineage(self) -> dict[str, Any]:
        """Airflow's OpenLineage provider (``apache-airflow-providers-openlineage``; inert
        when it is not installed): the DAG and task events Airflow emits itself go where
        stockbatch's own go (``settings.lineage``), the file being ``lineage/airflow.jsonl``
        in this home; ``transport=none`` disables the provider too."""
        from stockbatch import lineage
        from stockbatch.settings import Settings

        try:
            cfg = Settings(home=self.home).lineage
        except Exception as exc:  # pydantic.ValidationError: a bad STOCKBATCH_* value
            raise ServiceError(f"invalid settings: {exc}") from exc
        if cfg.transport == "none":
            return {"disabled": "True"}
        key = cfg.api_key.get_secret_value() if cfg.api_key else None
        file = self.home / "lineage" / "airflow.jsonl"
        file.parent.mkdir(parents=True, exist_ok=True)  # the provider's file transport won't
        transport = lineage.transport_config(cfg.transport, cfg.url, key, file)
        # airflow.cfg interpolates "%": a literal one is written "%%".
        return {"transport": json.dumps(transport).replace("%", "%%"), "namespace": cfg.namespace}

    @staticmethod
    def _api_tls(state: dict[str, Any]) -> dict[str, Any]:
        """``[api]`` TLS options: the API server's pair, and what the task runners' client
        (``airflow.sdk.api.client``) trusts: ``ssl_ca_file`` (the local CA) and no public
        CAs from certifi, which have no business vouching for a loopback server. (That
        client also loads ``ssl_cert`` as a trust anchor: the same server, harmless.)"""
        if not state.get("tls"):
            return {}
        return {
            "ssl_cert": state["ssl_cert"],
            "ssl_key": state["ssl_key"],
            "ssl_ca_file": state["ca_file"],
            "client_use_public_certs": "False",
        }

    def _airflow_cfg(self, state: dict[str, Any], sync_url: str, async_url: str) -> str:
        scheme = "https" if state.get("tls") else "http"
        url = f"{scheme}://{HOST}:{state['port']}"
        sections: dict[str, dict[str, Any]] = {
            "core": {
                "dags_folder": self.dags_folder,
                "load_examples": "False",
                # LocalExecutor: tasks run as subprocesses of the scheduler (SQLite too in 3.x).
                "executor": "LocalExecutor",
                "parallelism": 2,  # one worker process per core
                "default_timezone": "utc",
                "fernet_key": state["fernet_key"],
                "execution_api_server_url": f"{url}/execution/",
                "auth_manager": (
                    "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
                ),
                "simple_auth_manager_users": f"{ADMIN}:admin",
                "simple_auth_manager_passwords_file": self.passwords_file,
                "hostname_callable": "airflow.utils.net.get_host_ip_address",
            },
            "database": {
                "sql_alchemy_conn": sync_url,
                "sql_alchemy_conn_async": async_url,
                # The project's PostgreSQL allows 40 connections for everyone.
                "sql_alchemy_pool_size": 2,
                "sql_alchemy_max_overflow": 3,
            },
            "api": {
                "host": HOST,
                "port": state["port"],
                "workers": 1,
                "base_url": url,
                "secret_key": state["api_secret_key"],
                "expose_config": "False",
                **self._api_tls(state),
            },
            "api_auth": {"jwt_secret": state["jwt_secret"]},
            "logging": {
                "base_log_folder": self.dir / "logs",
                "worker_log_server_port": state["worker_log_port"],
                "trigger_log_server_port": state["trigger_log_port"],
            },
            "dag_processor": {
                # New and changed DAG files show up within seconds (defaults: 300 s, 30 s).
                "refresh_interval": 5,
                "min_file_process_interval": 10,
                "parsing_processes": 1,
            },
            "openlineage": self._openlineage(),
        }
        lines = [
            "# Generated by stockbatch (src/stockbatch/services/airflow.py) at each start of",
            "# `stockbatch services up airflow`: edits are overwritten. Holds secrets (0600).",
        ]
        for section, options in sections.items():
            lines.append(f"\n[{section}]")
            lines += [f"{key} = {value}" for key, value in options.items()]
        return "\n".join(lines) + "\n"
