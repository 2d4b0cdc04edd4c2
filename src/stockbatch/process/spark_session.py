"""Starting Spark for the process stage: a local (or cluster) session, or spark-submit's.

The master comes from the settings, else from the cluster ``stockbatch services up
spark`` recorded (:func:`stockbatch.services.endpoints.effective_spark_settings`).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from stockbatch.services.endpoints import effective_spark_settings
from stockbatch.settings import Settings


class SparkUnavailableError(RuntimeError):
    """No Java runtime, or the Spark session could not start."""


JAVA_HINT = (
    "the Spark engine needs a Java 17 runtime (Debian/Ubuntu: `apt-get install "
    "openjdk-17-jre-headless`; or set JAVA_HOME) and PySpark (`pip install -e '.[spark]'`, "
    "pinned in requirements.lock)"
)


def spark_session(
    master: str = "local[*]",
    app_name: str = "stockbatch",
    conf: Mapping[str, str] | None = None,
) -> Any:
    """A SparkSession for the Spark engine (local by default; a cluster URL works too).

    Python workers run this interpreter (``PYSPARK_PYTHON``/``PYSPARK_DRIVER_PYTHON``
    are set to ``sys.executable`` when unset: the ``spark.pyspark.python``
    setting alone is not honoured outside spark-submit, measured; on a cluster the
    executors start that same path, so it must exist on every node). Arrow
    transfers on, UTC session time zone (dates must not shift), UI off, shuffle
    partitions ``2 * cores`` in local mode, quiet logs; the driver binds to
    127.0.0.1 in local mode and for a master on loopback (the local cluster's
    executors connect back to it there). ``conf`` overrides any of these
    (e.g. ``spark.driver.memory``, which only applies to a new JVM). Raises
    :class:`SparkUnavailableError` with what to install when Java is missing
    or the session does not start.
    """
    from pyspark.sql import SparkSession  # ImportError without PySpark, before the Java check

    if not os.environ.get("JAVA_HOME") and shutil.which("java") is None:
        raise SparkUnavailableError(f"no `java` on PATH and JAVA_HOME unset: {JAVA_HINT}")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    settings: dict[str, str] = {
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.pyspark.python": sys.executable,
        "spark.pyspark.driver.python": sys.executable,
    }
    if master.startswith("local"):
        cores = _local_cores(master)
        settings.update(
            {
                "spark.sql.shuffle.partitions": str(2 * cores),
                "spark.default.parallelism": str(cores),
            }
        )
    if master.startswith("local") or _on_loopback(master):
        settings.update({"spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1"})
    settings.update(conf or {})
    _read_secret_file(settings, master)
    builder = SparkSession.builder.master(master).appName(app_name)
    for k, v in settings.items():
        builder = builder.config(k, v)
    try:
        _launch_gateway_without_secrets(settings)
        session = builder.getOrCreate()
    except Exception as e:  # the JVM gateway raises plain Exceptions/RuntimeErrors
        raise SparkUnavailableError(f"could not start Spark ({e}); {JAVA_HINT}") from e
    session.sparkContext.setLogLevel("ERROR")
    return session


def session_for(settings: Settings) -> Any:
    """The session for ``settings.process`` (master, extra conf), or for the cluster
    ``services up spark`` recorded when the master is left at ``local[*]``; under
    ``spark-submit`` (:mod:`stockbatch.spark_submit`), the session it made, with its
    master and resources."""
    if os.environ.get("STOCKBATCH_SPARK_SUBMIT"):
        from pyspark.sql import SparkSession

        return SparkSession.builder.getOrCreate()
    p = effective_spark_settings(settings)
    return spark_session(master=p.spark_master, conf=p.spark_conf)


SECRET_FILE = "spark.authenticate.secret.file"


def _read_secret_file(settings: dict[str, str], master: str) -> None:
    """``spark.authenticate.secret.file`` becomes ``spark.authenticate.secret``, except
    on Kubernetes: Spark 4 reads secret files there only, and a standalone master
    needs the secret itself in the driver's conf (the cluster ``services up spark``
    records gives a file's path, not the secret)."""
    path = settings.get(SECRET_FILE)
    if not path or master.startswith("k8s://") or "spark.authenticate.secret" in settings:
        return
    try:
        secret = Path(path).read_text().strip()
    except OSError as exc:
        raise SparkUnavailableError(
            f"cannot read the Spark secret file {path} ({exc.strerror}): run `stockbatch "
            "services up spark` again, or set spark.authenticate.secret another way"
        ) from exc
    del settings[SECRET_FILE]
    settings["spark.authenticate.secret"] = secret


def _is_secret(key: str) -> bool:
    return key == "spark.authenticate.secret" or key.lower().endswith("password")


def _launch_gateway_without_secrets(settings: dict[str, str]) -> None:
    """Start the JVM with the settings that are not secrets, when some are.

    PySpark hands a new JVM its conf as ``spark-submit --conf key=value`` arguments,
    which any local user sees in ``ps``; started here first, the secret settings
    reach the driver's conf over the py4j gateway instead."""
    from pyspark import SparkConf
    from pyspark.core.context import SparkContext

    if SparkContext._gateway is not None or not any(map(_is_secret, settings)):
        return
    public = SparkConf(loadDefaults=False)
    public.setAll([(k, v) for k, v in settings.items() if not _is_secret(k)])
    SparkContext._ensure_initialized(conf=public)


def _on_loopback(master: str) -> bool:
    """True for a standalone master on this machine's loopback (``spark://127.0.0.1:N``)."""
    if not master.startswith("spark://"):
        return False
    hosts = [urlsplit(f"spark://{url}").hostname for url in master[8:].split(",")]
    return bool(hosts) and all(h in ("127.0.0.1", "localhost", "::1") for h in hosts)


def _local_cores(master: str) -> int:
    inner = master[len("local") :].strip("[]").split(",")[0]
    if inner in ("", "*"):
        return os.cpu_count() or 1
    try:
        return max(1, int(inner))
    except ValueError:
        return os.cpu_count() or 1
