"""Where is service X: ``$STOCKBATCH_HOME/services.json`` and the settings that win over it.

``stockbatch services up`` records one entry per service it started, for example::

    {"kafka": {"bootstrap_servers": "127.0.0.1:40123", "pid": 4242,
               "security_protocol": "PLAINTEXT", ...}}

and ``services down`` removes it, so every later command run with the same
``STOCKBATCH_HOME`` finds the services without configuration. Explicit settings
always win over the record (:func:`effective_kafka_settings`,
:func:`effective_search_url`, :func:`effective_spark_settings`; the warehouse URLs:
``stockbatch.warehouse.db``).
The file holds generated passwords, so it is written owner-readable only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import SecretStr

from stockbatch.services.system import ServiceError, file_lock, write_private

if TYPE_CHECKING:
    from stockbatch.settings import KafkaSettings, ProcessSettings, SearchSettings, Settings

FILE_NAME = "services.json"


def services_file(home: Path) -> Path:
    """Path of the endpoints file under ``home``."""
    return Path(home) / FILE_NAME


def _lock_file(home: Path) -> Path:
    # A separate lock file: services.json itself is replaced atomically (a new inode).
    return Path(home) / f".{FILE_NAME}.lock"


def recorded_endpoints(home: Path) -> dict[str, dict[str, Any]]:
    """Every recorded service endpoint under ``home`` ({} when none is recorded)."""
    path = services_file(home)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    try:
        data = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as exc:
        raise ServiceError(
            f"{path} is not valid JSON ({exc}); delete it and run `stockbatch services up` again"
        ) from exc
    if not isinstance(data, dict):
        raise ServiceError(f"{path} must hold a JSON object, found {type(data).__name__}")
    return data


def record_endpoint(home: Path, name: str, endpoint: dict[str, Any]) -> None:
    """Record (or replace) the endpoint of service ``name``."""
    path = services_file(home)
    with file_lock(_lock_file(home)):
        data = recorded_endpoints(home)
        data[name] = endpoint
        write_private(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def forget_endpoint(home: Path, name: str) -> None:
    """Remove the entry of service ``name``; the file goes when it is empty."""
    path = services_file(home)
    if not path.exists():
        return
    with file_lock(_lock_file(home)):
        data = recorded_endpoints(home)
        if name not in data:
            return
        del data[name]
        if data:
            write_private(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
        else:
            path.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- settings first


_RECORDED_KAFKA_FIELDS = (
    "security_protocol",
    "sasl_mechanism",
    "sasl_username",
    "sasl_password",
    # A TLS listener's: the local CA that signed the brokers' certificates.
    "ssl_cafile",
    # A cluster's record: topics the pipeline creates get its replication (3, 2 in sync).
    "replication_factor",
    "min_insync_replicas",
)


def effective_kafka_settings(settings: Settings) -> KafkaSettings:
    """``settings.kafka`` completed from ``$STOCKBATCH_HOME/services.json``.

    Explicit settings win: when ``kafka.bootstrap_servers`` is set, the record is
    ignored entirely (it describes another cluster). Otherwise the recorded
    bootstrap servers are used, and the recorded security fields (and a cluster's
    ``replication_factor`` and ``min_insync_replicas``) fill in every field still at
    its default. With nothing recorded, ``settings.kafka`` is
    returned unchanged (``bootstrap_servers`` stays None: the caller says how to
    start a broker).
    """
    kafka = settings.kafka
    if kafka.bootstrap_servers:
        return kafka
    record = recorded_endpoints(settings.home).get("kafka")
    if not record or not record.get("bootstrap_servers"):
        return kafka
    servers = record["bootstrap_servers"]
    if isinstance(servers, list):  # a hand-written record may list the nodes
        servers = ",".join(map(str, servers))
    update: dict[str, Any] = {"bootstrap_servers": servers}
    fields = type(kafka).model_fields
    for name in _RECORDED_KAFKA_FIELDS:
        value = record.get(name)
        if value is None or getattr(kafka, name) != fields[name].default:
            continue
        if name == "sasl_password":
            value = SecretStr(value)
        elif name == "ssl_cafile":
            value = Path(value)
        update[name] = value
    return kafka.model_copy(update=update)


def effective_search_url(settings: Settings) -> str | None:
    """The search node's URL: ``settings.search.url`` if set (explicit wins), else the
    one ``stockbatch services up <search.kind>`` recorded under ``settings.home``,
    else None (the caller says how to start a node)."""
    if settings.search.url:
        return settings.search.url
    kind = settings.search.kind if settings.search.kind != "none" else "opensearch"
    record = recorded_endpoints(settings.home).get(kind) or {}
    url = record.get("url")
    return str(url) if url else None


# What a search node's record may carry besides its URL (a secured node: the user
# stockbatch loads with, its password and the CA file that signed the node's cert).
_RECORDED_SEARCH_FIELDS = ("username", "password", "ca_file")


def effective_search_settings(
    settings: Settings, role: Literal["loader", "reader"] = "loader"
) -> SearchSettings:
    """``settings.search`` completed from the node ``services up <kind>`` recorded.

    Explicit settings win: with ``search.url`` set the record is ignored entirely (it
    describes another node). Otherwise the recorded URL is used and the recorded
    ``username``/``password``/``ca_file`` fill the fields still unset; ``role="reader"``
    takes the read-only user (``reader_username``/``reader_password``: the API and
    dashboard) when the record has one. Nothing recorded: ``settings.search`` unchanged.
    """
    search = settings.search
    if search.url:
        return search
    kind = search.kind if search.kind != "none" else "opensearch"
    record = recorded_endpoints(settings.home).get(kind) or {}
    if not record.get("url"):
        return search
    update: dict[str, Any] = {"url": str(record["url"])}
    if role == "reader" and record.get("reader_username") and record.get("reader_password"):
        record = {
            **record,
            "username": record["reader_username"],
            "password": record["reader_password"],
        }
    for name in _RECORDED_SEARCH_FIELDS:
        value = record.get(name)
        if value is None or getattr(search, name) is not None:
            continue
        if name == "password":
            update[name] = SecretStr(str(value))
        elif name == "ca_file":
            update[name] = Path(str(value))
        else:
            update[name] = str(value)
    return search.model_copy(update=update)


def effective_spark_settings(settings: Settings) -> ProcessSettings:
    """``settings.process`` with the Spark master ``stockbatch services up spark`` recorded.

    ``process.spark_master`` at its default (``local[*]``) counts as not set: with a
    cluster recorded under ``settings.home``, its master URL is used, and the
    recorded ``app_conf`` (executor cores and memory that fit the workers, every
    core) fills in the Spark settings ``process.spark_conf`` does not set. Any other
    master (``spark://host:7077``, ``yarn``, ``k8s://...``, ``local[2]``) wins and
    the record is ignored, as is a record without a master URL.
    """
    process = settings.process
    if process.spark_master != type(process).model_fields["spark_master"].default:
        return process
    record = recorded_endpoints(settings.home).get("spark") or {}
    master = record.get("master_url")
    if not master:
        return process
    conf = {str(k): str(v) for k, v in (record.get("app_conf") or {}).items()}
    return process.model_copy(
        update={"spark_master": str(master), "spark_conf": {**conf, **process.spark_conf}}
    )
