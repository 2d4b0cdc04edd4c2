"""The run graph: ingest -> [Kafka -> collect ->] process -> load, as one recorded run."""

from __future__ import annotations

import datetime as dt
import os
import shutil
from collections.abc import Callable

from stockbatch import runs
from stockbatch.errors import PipelineError
from stockbatch.pipeline.collect import collect
from stockbatch.pipeline.ingest import ingest
from stockbatch.process import process
from stockbatch.results import Progress, RunResult, no_progress, today_utc
from stockbatch.settings import Settings
from stockbatch.sources.base import Source


def check_backends(settings: Settings) -> None:
    """Refuse backends this version does not ship yet, with a clear message."""
    missing = []
    if settings.transport not in ("direct", "kafka"):
        missing.append(f"transport={settings.transport}")
    if settings.process.engine == "spark":
        import importlib.util

        if importlib.util.find_spec("pyspark") is None:
            raise PipelineError(
                "engine=spark needs PySpark: install stockbatch with the spark extra "
                "(pip install 'stockbatch[spark]', or run scripts/setup.sh)."
            )
        if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
            raise PipelineError(
                "engine=spark needs Java 17+: install it (apt-get install "
                "openjdk-17-jre-headless) or set JAVA_HOME."
            )
    if settings.warehouse.kind != "sqlite":
        # PostgreSQL: explicit or recorded by `services up` (SQLite's URL cannot be
        # missing). Imported here: SQLAlchemy and Alembic cost ~0.3 s of every command.
        from stockbatch.warehouse.db import resolve_urls

        resolve_urls(settings)
    if settings.search.kind != "none":
        import importlib.util

        module, extra = {
            "opensearch": ("opensearchpy", "opensearch"),
            "elasticsearch": ("elasticsearch", "elasticsearch"),
        }[settings.search.kind]
        if importlib.util.find_spec(module) is None:
            raise PipelineError(
                f"search={settings.search.kind} needs its client: install the {extra} "
                "extra (scripts/setup.sh does)."
            )
    if missing:
        raise PipelineError(
            "not available in this version: "
            + ", ".join(missing)
            + ". Use the embedded defaults (--engine polars --transport direct|kafka "
            "--warehouse sqlite --search none)."
        )


def run(
    settings: Settings,
    source: Source,
    *,
    as_of: dt.date | None = None,
    force: bool = False,
    full: bool = False,
    verify: bool = False,
    progress: Progress = no_progress,
    command: str = "run",
    wait: bool = True,
    on_wait: Callable[[str], None] | None = None,
) -> RunResult:
    """ingest -> [Kafka -> collect ->] process -> load, as one run with one manifest.

    One run at a time per home: ``wait`` (or :class:`stockbatch.runs.HomeBusy`) and
    ``on_wait`` as in :func:`stockbatch.runs.recording`. A failing stage is recorded
    (status ``failed``, with its error) and raised. ``verify``: the ingest hashes
    every file in full (:func:`ingest`).
    """
    check_backends(settings)
    params = {"source": source.name, "as_of": (as_of or today_utc()).isoformat()}
    with runs.recording(settings, command, params=params, wait=wait, on_wait=on_wait) as rec:
        rid = rec.run_id
        rec.ingest = ingest(
            settings, source, run_id=rid, force=force, verify=verify, progress=progress
        )
        if settings.transport == "kafka":
            rec.collect = collect(settings, run_id=rid)
        rec.process = process(
            settings, run_id=rid, as_of=as_of, force=force, full=full, progress=progress
        )
        from stockbatch.pipeline.load import load  # SQLAlchemy: only the commands that load

        rec.load = load(settings, run_id=rid, force=force, progress=progress)
    return rec
