"""The one settings tree of stockbatch.

Every field is also an environment variable: prefix ``STOCKBATCH_``, nested
levels joined by ``__`` (``STOCKBATCH_PROCESS__ENGINE=polars``). CLI options
override the environment, which overrides the defaults below.

Secrets (:data:`SECRET_SETTINGS`: every ``SecretStr`` field and the URLs that hold
passwords) may also come from a file named by ``<VARIABLE>_FILE``, the Docker
secrets convention: ``STOCKBATCH_WAREHOUSE__URL_FILE=/run/secrets/wh_url`` reads
the URL from that file (its final newline dropped). No CLI option takes a secret.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

Engine = Literal["polars", "spark"]
Transport = Literal["direct", "kafka"]
WarehouseKind = Literal["sqlite", "postgresql"]
SearchKind = Literal["none", "opensearch", "elasticsearch"]

DEFAULT_SOURCE_PRIORITY = ["yahoo", "kaggle-nasdaq", "kaggle-huge", "kaggle-sp500"]

_URL_PASSWORD = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:/?#@\s]*):[^@/?#\s]*@"
)
_KEY_VALUE_PASSWORD = re.compile(
    r"(?i)\b(password|passwd|pwd)(\s*[=:]\s*)('[^']*'|\"[^\"]*\"|[^\s,;&)]+)"
)
MASK = "***"


def mask_secrets(text: str) -> str:
    """``text`` with the password of every URL (``scheme://user:***@host``) and every
    ``password=...`` pair masked: for anything stockbatch records or prints."""
    text = _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    return _KEY_VALUE_PASSWORD.sub(lambda m: f"{m[1]}{m[2]}{MASK}", text)


def _masked(value: Any) -> Any:
    if isinstance(value, str):
        return mask_secrets(value)
    if isinstance(value, dict):
        return {k: _masked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v) for v in value]
    return value


class LakeSettings(BaseModel):
    """Where and how the Parquet lake is written."""

    path: Path | None = Field(None, description="Lake root; default: $STOCKBATCH_HOME/lake.")
    buckets: int = Field(
        8,
        ge=1,
        le=1024,
        description="Symbol hash buckets; a bucket holds every row of its symbols, so the "
        "engines process one bucket at a time in bounded memory.",
    )
    flush_rows: int = Field(
        1_000_000,
        ge=1_000,
        description="Ingest buffers at most this many rows before writing a bronze part.",
    )
    compression: Literal["zstd", "snappy", "lz4", "none"] = "zstd"


class ProcessSettings(BaseModel):
    """The process stage (bronze -> silver -> gold)."""

    engine: Engine = Field("polars", description="Feature engine: polars (one machine) or spark.")
    source_priority: list[str] = Field(
        default_factory=lambda: list(DEFAULT_SOURCE_PRIORITY),
        description="FEATURES.md section 5: per symbol, the first source here that has it wins.",
    )
    calendar: str = Field("XNYS", description="exchange_calendars code for sessions.")
    spark_master: str = Field(
        "local[*]",
        description="Spark master for engine=spark: local[*] (all cores of this machine) or a "
        "cluster URL (spark://host:7077, yarn, k8s://...). Ignored under spark-submit, "
        "which sets it.",
    )
    spark_conf: dict[str, str] = Field(
        default_factory=dict,
        description='Extra Spark settings, e.g. {"spark.driver.memory": "4g"}.',
    )


class WarehouseSettings(BaseModel):
    """The relational warehouse.

    PostgreSQL has three roles (owner: migrations; loader: writes; reader: reads);
    :func:`stockbatch.warehouse.db.resolve_urls` picks the URL of each. Unset URLs
    of ``kind=postgresql`` come from what ``stockbatch services up postgresql``
    recorded in ``$STOCKBATCH_HOME/services.json``; explicit ones always win.
    """

    kind: WarehouseKind = "sqlite"
    url: str | None = Field(
        None,
        repr=False,  # it holds a password: not in reprs, tracebacks, debug prints
        description="SQLAlchemy URL the loads use; default: sqlite file "
        "$STOCKBATCH_HOME/warehouse.db, or the recorded PostgreSQL loader role.",
    )
    owner_url: str | None = Field(
        None,
        repr=False,  # it holds a password: not in reprs, tracebacks, debug prints
        description="URL of the role that runs migrations (owns the schema); default: "
        "the recorded owner role, else ``url``.",
    )
    reader_url: str | None = Field(
        None,
        repr=False,  # it holds a password: not in reprs, tracebacks, debug prints
        description="URL of the read-only role (API, exports); default: the recorded "
        "reader role, else ``url``.",
    )


class SearchSettings(BaseModel):
    """The search index (OpenSearch or Elasticsearch): where it is and how the pipeline
    loads it.

    ``url`` unset means: use the node that ``stockbatch services up <kind>``
    recorded under ``$STOCKBATCH_HOME`` (explicit settings win).
    """

    kind: SearchKind = Field(
        "none",
        description="none (SQL search in the warehouse), opensearch or elasticsearch.",
    )
    url: str | None = Field(
        None, description="http(s)://host:port of the search node (or the cluster's endpoint)."
    )
    username: str | None = Field(None, description="HTTP basic user (a secured cluster).")
    password: SecretStr | None = Field(None, description="HTTP basic password.")
    api_key: SecretStr | None = Field(
        None,
        description="Elasticsearch API key (the encoded id:key, as Kibana shows it); "
        "instead of username/password.",
    )
    ca_file: Path | None = Field(
        None, description="PEM file of the CA that signed the cluster's certificate (https)."
    )
    verify_certs: bool = Field(True, description="Verify TLS certificates (https URLs).")
    index_prefix: str = Field(
        "stockbatch",
        pattern=r"^[a-z0-9][a-z0-9_-]*$",
        description="Prefix of every index, alias and template name (several projects can "
        "share one cluster).",
    )
    bulk_docs: int = Field(2_000, ge=1, description="Documents per _bulk request.")
    bulk_threads: int = Field(2, ge=1, description="Concurrent _bulk requests during a load.")
    max_retries: int = Field(5, ge=0, description="Retries of a document rejected with 429.")
    timeout_s: float = Field(
        30.0, gt=0, description="Request timeout; also how long an unreachable node is retried."
    )
    replicas: int = Field(
        0,
        ge=0,
        description="Replicas per index once loaded (0 on a single node: 1 never "
        "gets allocated there and the cluster stays yellow).",
    )
    keep_previous: bool = Field(
        True,
        description="Keep the index the alias pointed at before the last swap (one step of "
        "rollback); older ones are deleted.",
    )


class KafkaSettings(BaseModel):
    """Kafka transport: where the broker is, how to authenticate, how to batch.

    ``bootstrap_servers`` unset means: use the broker that ``stockbatch services
    up kafka`` recorded under ``$STOCKBATCH_HOME`` (explicit settings win).
    """

    bootstrap_servers: str | None = Field(None, description="host:port[,host:port]")
    topic: str = Field("stockbatch.bars.raw.v1", description="Raw bars topic.")
    dead_letter_topic: str = Field(
        "stockbatch.bars.dlq.v1", description="Undecodable messages, with a reason header."
    )
    partitions: int = Field(6, ge=1, description="Partitions when the topic is created.")
    replication_factor: int = Field(1, ge=1, description="Replicas when the topic is created.")
    min_insync_replicas: int | None = Field(
        None,
        ge=1,
        description="min.insync.replicas of a topic when created (None: the broker's default).",
    )
    consumer_group: str = Field("stockbatch-collector", description="Collector group id.")
    compression: Literal["zstd", "lz4", "snappy", "gzip", "none"] = Field(
        "lz4",
        description="Producer batch compression. lz4 by default: on the Huge sample's "
        "216 MiB of Arrow batches it cost the producer ~0.5 s and the collector ~0.2 s "
        "less CPU than zstd (the broker, which validates batches, less too); zstd saves "
        "network and broker disk.",
    )
    linger_ms: int = Field(20, ge=0, description="Producer batching delay.")
    batch_rows: int = Field(
        5_000, ge=1, description="Bars per message (a columnar batch of one symbol)."
    )
    timeout_s: float = Field(
        30.0, gt=0, description="Give up on an unreachable broker after this long."
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = "SCRAM-SHA-512"
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = Field(None, description="CA bundle to verify the broker.")
    ssl_certfile: Path | None = Field(None, description="Client certificate (mutual TLS).")
    ssl_keyfile: Path | None = Field(None, description="Client key (mutual TLS).")


class YahooSettings(BaseModel):
    """Yahoo Finance (yfinance) source."""

    max_retries: int = Field(5, ge=0, description="Retries on HTTP 429 / transient errors.")
    backoff_seconds: float = Field(1.0, ge=0, description="First backoff; doubles per retry.")
    default_start: dt.date = Field(dt.date(2000, 1, 1), description="Start when nothing is stored.")


class ApiSettings(BaseModel):
    """The API and dashboard (``stockbatch serve``)."""

    host: str = Field("127.0.0.1", description="Address to listen on (loopback by default).")
    port: int = Field(8000, ge=1, le=65535, description="Port to listen on.")
    auth_url: str | None = Field(
        None,
        repr=False,  # it holds a password: not in reprs, tracebacks, debug prints
        description="SQLAlchemy URL of the store of users, tokens and the audit log (written "
        "by the API); default: the warehouse's loader URL. Data is always read through the "
        "warehouse's reader role.",
    )
    session_secret: SecretStr | None = Field(
        None,
        description="Key that signs dashboard session cookies; default: a random key kept in "
        "$STOCKBATCH_HOME/api-session.key (0600).",
    )
    session_hours: float = Field(8.0, gt=0, description="A dashboard login lasts this long.")
    tls: bool = Field(
        False,
        description="Served over TLS (directly or behind a proxy): session cookies get Secure. "
        "`stockbatch serve` then speaks HTTPS itself, with cert_file/key_file or else a "
        "certificate from the home's CA ($STOCKBATCH_HOME/services/tls/ca.pem).",
    )
    cert_file: Path | None = Field(
        None,
        description="PEM certificate (chain) `stockbatch serve` presents when tls is on; "
        "default: one issued by the home's CA for 127.0.0.1 and localhost.",
    )
    key_file: Path | None = Field(
        None, description="PEM private key of cert_file (both or neither)."
    )
    metrics_public: bool = Field(
        False, description="Serve /metrics without authentication (otherwise: admin)."
    )
    max_symbols: int = Field(200, ge=1, description="Most symbols one data request may name.")
    page_rows: int = Field(5_000, ge=1, description="Default rows per JSON page.")
    max_page_rows: int = Field(50_000, ge=1, description="Largest JSON page a client may ask.")
    login_lock_after: int = Field(
        5, ge=1, description="Failed logins in a row that lock an account for a while."
    )
    login_lock_minutes: float = Field(5.0, gt=0, description="How long a locked account waits.")
    stale_search_hours: float = Field(
        36.0, gt=0, description="The search index is stale when its last load is older."
    )


class AirflowSettings(BaseModel):
    """The local Airflow (``stockbatch services up airflow``) and how the CLI reaches an
    Airflow (``stockbatch orchestrate``): this machine's, or an existing deployment."""

    url: str | None = Field(
        None,
        description="Base URL of the Airflow API server; default: the one `services up "
        "airflow` recorded.",
    )
    username: str | None = Field(None, description="Airflow user (default: the recorded admin).")
    password: SecretStr | None = Field(
        None, description="Its password (default: the recorded, generated one)."
    )
    port: int | None = Field(
        None, ge=1, le=65535, description="API server port for `services up` (default: free)."
    )
    dags_folder: Path | None = Field(
        None, description="DAG files the local Airflow reads; default: the project's dags/."
    )
    metadata_db: Literal["auto", "postgresql", "sqlite"] = Field(
        "auto",
        description="Airflow's metadata database: its own database and role in the project's "
        "PostgreSQL (auto: when it is up), or SQLite (for trying only).",
    )


class ScheduleSettings(BaseModel):
    """What the scheduled DAGs run (``dags/``): the daily source and the quality gate."""

    source: Literal["yahoo", "kaggle"] = Field(
        "yahoo", description="What the daily DAG ingests (a DAG run's conf may override)."
    )
    path: Path | None = Field(
        None, description="Kaggle landing folder of the daily DAG (source kaggle)."
    )
    symbols: list[str] = Field(
        default_factory=lambda: ["AAPL", "MSFT", "SPY"],
        description="Yahoo symbols of the daily DAG (source yahoo).",
    )
    max_quarantine_rate: float = Field(
        0.05,
        ge=0,
        le=1,
        description="The quality gate fails a run whose quarantined / rows in is above this.",
    )
    max_missing_rate: float = Field(
        0.05,
        ge=0,
        le=1,
        description="The quality gate fails a run when more than this share of the symbols "
        "that traded in the 5 sessions before its session have no bar on it (a count would "
        "not scale: thinly traded names skip days).",
    )
    missing_allowed: int = Field(
        5,
        ge=0,
        description="Missing bars the gate always allows, whatever the rate (a few quiet "
        "names are normal in a small universe).",
    )
    retries: int = Field(3, ge=0, description="Retries of a failed task.")
    retry_delay_s: float = Field(
        30.0, gt=0, description="First retry delay; doubles per retry (exponential backoff)."
    )
    task_timeout_min: float = Field(60.0, gt=0, description="A task running longer fails.")


class LineageSettings(BaseModel):
    """OpenLineage run events (START / COMPLETE / FAIL) of every stage."""

    transport: Literal["file", "http", "none"] = Field(
        "file", description="file: JSON lines under $STOCKBATCH_HOME/lineage; http: POST to url."
    )
    url: str | None = Field(None, description="OpenLineage endpoint (http transport).")
    api_key: SecretStr | None = Field(None, description="Bearer key of the endpoint, if any.")
    namespace: str = Field("stockbatch", description="Job namespace of the events.")


class QualitySettings(BaseModel):
    """Thresholds of the quality history (``stockbatch quality``, the dashboard's quality
    page): a run past one is marked with the threshold, its value and the limit. Rates
    are shares of the run's rows in, so one limit fits a 20-row day and a 17 M-row backfill.
    """

    max_quarantine_rate: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Quarantined / rows in above this marks a run. Unset: "
        "schedule.max_quarantine_rate, the Airflow quality gate's limit (one limit for both; "
        "set here, it is the gate's too).",
    )
    max_reason_rate: dict[str, float] = Field(
        default_factory=lambda: {
            "unparseable": 0.01,
            "duplicate": 0.01,
            "implausible_value": 0.001,
        },
        description="Per reason code: rows refused for it / rows in above this marks a run "
        "(a jump in one reason is a changed source format or a broken feed, even when the "
        "total stays low). JSON, e.g. '{\"unparseable\": 0.01}'.",
    )
    max_health_rate: dict[str, float] = Field(
        default_factory=lambda: {"suspect_jump": 0.001, "off_calendar": 0.001},
        description="Per health flag: kept-but-flagged rows / rows in above this marks a run. "
        "No default for zero_volume and open_missing: old and thin listings carry many.",
    )


# ----------------------------------------------------------------------------- secrets from files

SECRET_URLS: tuple[tuple[str, str], ...] = (
    ("warehouse", "url"),
    ("warehouse", "owner_url"),
    ("warehouse", "reader_url"),
    ("api", "auth_url"),
)
"""URL settings that carry a password (``postgresql+psycopg://user:pw@...``)."""


class SecretFileError(ValueError):
    """A ``*_FILE`` variable names a file that cannot be used; the message names the variable."""


def _is_secret(field: FieldInfo) -> bool:
    return field.annotation is SecretStr or SecretStr in typing.get_args(field.annotation)


def secret_settings() -> list[tuple[str, str]]:
    """``(section, field)`` of every setting that may come from a ``*_FILE`` variable:
    every ``SecretStr`` field of the tree (found, so a new one is covered) and
    :data:`SECRET_URLS`."""
    found = []
    for section, info in Settings.model_fields.items():
        model = info.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):
            found += [(section, n) for n, f in model.model_fields.items() if _is_secret(f)]
    return found + [p for p in SECRET_URLS if p not in found]


def read_secret_file(variable: str, path: str) -> str:
    """The content of ``path`` without its final newline; errors name ``variable``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise SecretFileError(f"{variable}={path}: cannot read the file ({reason})") from None
    value = text.removesuffix("\n").removesuffix("\r")
    if not value:
        raise SecretFileError(f"{variable}={path}: the file is empty")
    return value


class SecretFilesSource(PydanticBaseSettingsSource):
    """Reads every secret setting named by ``<VARIABLE>_FILE`` (the Docker secrets
    convention). Setting both ``<VARIABLE>`` and ``<VARIABLE>_FILE`` is an error, since
    which one wins would be a guess."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        """Unused: :meth:`__call__` reads the nested secrets at once."""
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        prefix = str(self.config.get("env_prefix", "")).upper()
        delimiter = str(self.config.get("env_nested_delimiter") or "__")
        # Variable names are case-insensitive, as for pydantic-settings' own env source.
        env = {k.upper(): v for k, v in os.environ.items()}
        values: dict[str, dict[str, str]] = {}
        for section, name in secret_settings():
            variable = f"{prefix}{section}{delimiter}{name}".upper()
            path = env.get(f"{variable}_FILE")
            if path is None:
                continue
            if variable in env:
                raise SecretFileError(
                    f"both {variable} and {variable}_FILE are set: set only one of them"
                )
            values.setdefault(section, {})[name] = read_secret_file(f"{variable}_FILE", path)
        return values


class Settings(BaseSettings):
    """All of stockbatch's configuration."""

    model_config = SettingsConfigDict(
        env_prefix="STOCKBATCH_", env_nested_delimiter="__", extra="ignore"
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """The defaults' order, with ``*_FILE`` secrets right after the environment."""
        return (
            init_settings,
            env_settings,
            SecretFilesSource(settings_cls),
            dotenv_settings,
            file_secret_settings,
        )

    home: Path = Field(Path(".stockbatch"), description="Holds the lake and embedded warehouse.")
    transport: Transport = "direct"
    lake: LakeSettings = Field(default_factory=LakeSettings)
    process: ProcessSettings = Field(default_factory=ProcessSettings)
    warehouse: WarehouseSettings = Field(default_factory=WarehouseSettings)
    search: SearchSettings = Field(default_factory=SearchSettings)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    yahoo: YahooSettings = Field(default_factory=YahooSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    airflow: AirflowSettings = Field(default_factory=AirflowSettings)
    schedule: ScheduleSettings = Field(default_factory=ScheduleSettings)
    lineage: LineageSettings = Field(default_factory=LineageSettings)
    quality: QualitySettings = Field(default_factory=QualitySettings)
    progress: bool = Field(True, description="Show progress bars (off when not a terminal).")

    def safe_dump(self) -> dict[str, Any]:
        """The settings as JSON values, fit to record or print: secrets masked (SecretStr
        fields and the passwords inside URLs)."""
        return dict(_masked(json.loads(self.model_dump_json())))

    @property
    def lake_path(self) -> Path:
        """Resolved lake root."""
        return self.lake.path if self.lake.path is not None else self.home / "lake"
