"""OpenLineage run events of the stages (START / COMPLETE / FAIL).

Every recorded block of :mod:`stockbatch.runs` (a whole ``run``, a stage command, one
DAG task) goes through :func:`traced`, so the CLI, the DAG tasks and the API all emit
the same events: which job ran (``stockbatch.ingest``, ``.collect``, ``.process``,
``.load``, and ``stockbatch.run`` for a whole run), which datasets it read and wrote
(lake folders, Kafka topics, warehouse tables, search aliases) with their schemas and
row counts, and how it ended. Where they go: ``settings.lineage`` (a JSON-lines file
per run under ``$STOCKBATCH_HOME/lineage``, any OpenLineage HTTP endpoint, or nowhere).
What each event holds: ``docs/design/lineage.md``.

Lineage never fails nor holds up a run: the events are built here from plain values
and sent by one background thread per process (the client's import alone costs about
0.3 s), the wait at the end of a block is bounded, and an endpoint that fails is
reported once, after which that process's events go to the file instead.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pyarrow as pa

from stockbatch import __version__, schema
from stockbatch.results import RunResult
from stockbatch.settings import Settings, mask_secrets

log = logging.getLogger(__name__)

STAGES = ("ingest", "collect", "process", "load")
"""The stage jobs, in the order a run goes through them."""
JOB_PREFIX = "stockbatch"

# Lake datasets: the keys runs.py maps to the layout's folders, with their schemas.
BRONZE, INSTRUMENTS, SILVER, QUARANTINE, GOLD_DAILY, GOLD_QUARTERLY = (
    "bronze",
    "instruments",
    "silver",
    "quarantine",
    "gold_daily",
    "gold_quarterly",
)
LAKE_SCHEMAS: dict[str, pa.Schema] = {
    BRONZE: schema.BRONZE_BARS,
    INSTRUMENTS: schema.INSTRUMENTS,
    SILVER: schema.SILVER_BARS,
    QUARANTINE: schema.QUARANTINE,
    GOLD_DAILY: schema.DAILY_FEATURES,
    GOLD_QUARTERLY: schema.QUARTERLY_FEATURES,
}

RUN_ID_NAMESPACE = uuid.UUID("6f1c2d8e-5b0a-4f57-9a43-3c1e0b7d2a91")
"""uuid5 namespace of the OpenLineage run ids (fixed: the same stockbatch run id always
maps to the same UUID, whichever process emits)."""
PRODUCER = f"urn:stockbatch:{__version__}"
FACET_SCHEMA = "urn:stockbatch:facets:StockbatchRunFacet:1"
HTTP_TIMEOUT_S = 3.0
"""Per request (connect and read); no retries: a failing endpoint costs one timeout."""
FLUSH_TIMEOUT_S = 10.0
"""The longest a block waits, at its end, for its events to be sent."""
RETRY_AFTER_S = 300.0
"""How long a process leaves an endpoint that failed alone (its events go to the file)."""


def run_uuid(run_id: str, stage: str | None = None) -> str:
    """The OpenLineage run id of a stockbatch run (``stage`` None) or of one of its stages."""
    return str(uuid.uuid5(RUN_ID_NAMESPACE, run_id if stage is None else f"{run_id}/{stage}"))


def without_credentials(url: str) -> str:
    """``url`` with no user, password or ``password=`` value: fit for a dataset namespace."""
    try:
        parts = urlsplit(url)
        if "@" in parts.netloc:  # (urlunsplit would also turn sqlite:////abs into sqlite://abs)
            host = parts.netloc.rpartition("@")[2]
            url = urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    except ValueError:
        pass
    return mask_secrets(url)


# ----------------------------------------------------------------------------- plain values


@dataclass(frozen=True)
class Places:
    """Where a run's datasets live: the lake root and each lake dataset's folder relative
    to it (keys of :data:`LAKE_SCHEMAS`), the warehouse URL and the search node's URL
    (when the run loaded them; credentials are stripped here)."""

    lake_root: Path
    lake: Mapping[str, str]
    warehouse: str | None = None
    search: str | None = None


@dataclass(frozen=True)
class Data:
    """One dataset of an event; ``rows`` becomes its input or output statistics."""

    namespace: str
    name: str
    schema: pa.Schema | None = None
    rows: int | None = None


@dataclass(frozen=True)
class Event:
    """One run event, as plain values (the openlineage classes are built by the sender)."""

    state: str  # START | COMPLETE | FAIL
    job: str
    run: str
    time: dt.datetime
    facet: dict[str, Any]
    inputs: tuple[Data, ...] = ()
    outputs: tuple[Data, ...] = ()
    parent: tuple[str, str] | None = None  # (job name, run uuid)
    error: str | None = None


@dataclass(frozen=True)
class Sink:
    """Where one process sends a block's events (from ``settings.lineage``)."""

    transport: str
    file: Path
    namespace: str
    url: str | None = None
    api_key: str | None = None


def sink_of(settings: Settings, run_id: str) -> Sink:
    """The sink of a run's events: the file is ``$STOCKBATCH_HOME/lineage/<run_id>.jsonl``
    (also where an HTTP endpoint's events go once it failed)."""
    cfg = settings.lineage
    return Sink(
        transport=cfg.transport,
        file=settings.home / "lineage" / f"{run_id}.jsonl",
        namespace=cfg.namespace,
        url=cfg.url,
        api_key=cfg.api_key.get_secret_value() if cfg.api_key else None,
    )


# ----------------------------------------------------------------------------- datasets


def _lake(places: Places, key: str, rows: int | None = None) -> Data:
    # Absolute (the default home is relative to where a command ran), percent-encoded.
    root = places.lake_root.resolve().as_uri()
    return Data(root, places.lake[key], LAKE_SCHEMAS[key], rows)


def _kafka(servers: str | None, topic: str, rows: int | None = None) -> Data:
    first = (servers or "").split(",")[0].strip() or "unknown"
    return Data(f"kafka://{first}", topic, schema.BRONZE_BARS, rows)


def datasets(
    stage: str, result: Any, places: Places, settings: Settings
) -> tuple[tuple[Data, ...], tuple[Data, ...]]:
    """The inputs and outputs of ``stage``: with its ``result`` (None at its start: only
    the lake datasets, known in advance) the source, Kafka, warehouse and search ones too,
    and the row counts the run manifest records."""
    done = result is not None
    if stage == "ingest":
        if settings.transport == "kafka":
            kafka = getattr(result, "kafka", None) or {}
            rows = result.rows if done else None
            outs = [_kafka(kafka.get("bootstrap_servers"), kafka["topic"], rows)] if kafka else []
        else:
            outs = [_lake(places, BRONZE, result.rows if done else None)]
            if done and result.instruments:
                outs.append(_lake(places, INSTRUMENTS, result.instruments))
        ins: list[Data] = []
        if done:  # one input per source layout (kaggle-huge, kaggle-sp500, ..., yahoo)
            per: dict[str, int] = {}
            for unit in result.units:
                name = str(unit.get("source") or result.source)
                per[name] = per.get(name, 0) + int(unit.get("rows") or 0)
            ins = [Data(f"source://{result.source}", n, None, r) for n, r in sorted(per.items())]
        return tuple(ins), tuple(outs)
    if stage == "collect":
        st = getattr(result, "stats", None)
        topic = getattr(st, "topic", None) or settings.kafka.topic
        ins = [_kafka(getattr(st, "bootstrap_servers", None), topic)] if done else []
        outs = [_lake(places, BRONZE, getattr(st, "rows", None) if done else None)]
        instruments = int(getattr(st, "instruments", 0) or 0)
        if done and instruments:
            outs.append(_lake(places, INSTRUMENTS, instruments))
        return tuple(ins), tuple(outs)
    if stage == "process":
        counted = done and not result.skipped  # a skipped run wrote nothing
        c = result.counts if counted else {}

        def n(value: Any) -> int | None:
            return int(value) if counted and value is not None else None

        return (
            (_lake(places, BRONZE, n(c.get("rows_in"))),),
            (
                _lake(places, SILVER, n(c.get("rows_clean"))),
                _lake(places, QUARANTINE, n(c.get("rows_quarantined"))),
                _lake(places, GOLD_DAILY, n(result.daily_rows if counted else None)),
                _lake(places, GOLD_QUARTERLY, n(result.quarterly_rows if counted else None)),
            ),
        )
    if stage == "load":
        ins = [_lake(places, k) for k in (GOLD_DAILY, GOLD_QUARTERLY, QUARANTINE, INSTRUMENTS)]
        outs = []
        if done and places.warehouse and not result.warehouse_skipped:
            ns = without_credentials(places.warehouse)
            for table, t in sorted(result.tables.items()):
                outs.append(Data(ns, table, None, int(t.get("inserted", 0) + t.get("updated", 0))))
        search = result.search if done else None
        if search and not search.get("stale"):
            ns = without_credentials(places.search or f"{search.get('kind', 'search')}://unknown")
            prefix = settings.search.index_prefix
            for name, s in sorted((search.get("indices") or {}).items()):
                # The alias readers query (search.indices.Dataset.alias), stable across reindexes.
                outs.append(Data(ns, f"{prefix}-{name}", None, int(s.get("docs", 0))))
        return tuple(ins), tuple(outs)
    return (), ()


# ----------------------------------------------------------------------------- the trail


def job_of(command: str) -> str:
    """The job name of a command: ``stockbatch.<stage>``, ``stockbatch.run``, and
    ``stockbatch.dag.<dag_id>`` for a DAG run."""
    return f"{JOB_PREFIX}.{command.replace(':', '.')}"


def _result(run: RunResult, stage: str) -> Any:
    return getattr(run, stage, None)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class Trail:
    """The events of one recorded block.

    ``stage``: the block is that stage command (its job is the run's own). Otherwise the
    block's job is the run (``stockbatch.run``, or the DAG's), START when ``opens`` and
    COMPLETE / FAIL when ``closes`` or when it fails; every stage whose result the block
    filled in is a child run (START and COMPLETE, or FAIL) with the run as its parent.
    ``graph``: the stages a whole run goes through, to name the one that failed.
    """

    settings: Settings
    run: RunResult
    places: Callable[[RunResult | None], Places]
    stage: str | None = None
    opens: bool = True
    closes: bool = True
    graph: tuple[str, ...] = ()
    entered: dt.datetime = field(default_factory=_now)

    def _facet(self, stage: str | None, status: str | None = None) -> dict[str, Any]:
        facet = {"runId": self.run.run_id, "command": self.run.command}
        if stage:
            facet["stage"] = stage
        if status:
            facet["status"] = status
        return facet

    def start(self) -> list[Event]:
        """The events of the block's start."""
        places = self.places(None)
        if self.stage is not None:
            ins, outs = datasets(self.stage, None, places, self.settings)
            job, rid = job_of(self.stage), run_uuid(self.run.run_id)
            return [Event("START", job, rid, self.entered, self._facet(self.stage), ins, outs)]
        if self.opens:
            job, rid = job_of(self.run.command), run_uuid(self.run.run_id)
            return [Event("START", job, rid, self.entered, self._facet(None))]
        return []

    def finish(self, error: str | None) -> list[Event]:
        """The events of the block's end (``error``: it failed)."""
        places = self.places(self.run)
        now = _now()
        state = "FAIL" if error else "COMPLETE"
        status = self.run.status
        if self.stage is not None:
            ins, outs = datasets(self.stage, _result(self.run, self.stage), places, self.settings)
            job, rid = job_of(self.stage), run_uuid(self.run.run_id)
            facet = self._facet(self.stage, status)
            return [Event(state, job, rid, now, facet, ins, outs, error=error)]
        parent = (job_of(self.run.command), run_uuid(self.run.run_id))
        events: list[Event] = []
        done = [s for s in STAGES if _result(self.run, s) is not None]
        failed = None
        if error:
            failed = next((s for s in self.graph if s not in done), None)
        # A whole run: each stage's times follow from its duration; a DAG task: its own.
        at = self.entered
        for stage in [*done, *([failed] if failed else [])]:
            result = _result(self.run, stage)
            if self.graph:
                took = dt.timedelta(seconds=float(getattr(result, "duration_s", 0.0) or 0.0))
                end = min(at + took, now) if result is not None else now
            else:
                end = now
            rid = run_uuid(self.run.run_id, stage)
            ins, outs = datasets(stage, result, places, self.settings)
            started = Event("START", job_of(stage), rid, at, self._facet(stage), parent=parent)
            ended = Event(
                "COMPLETE" if result is not None else "FAIL",
                job_of(stage),
                rid,
                end,
                self._facet(stage),
                ins,
                outs,
                parent,
                None if result is not None else error,
            )
            events += [started, ended]
            if self.graph:
                at = end
        if self.closes or error:
            events.append(Event(state, *parent, now, self._facet(None, status), error=error))
        return events


@contextlib.contextmanager
def traced(
    settings: Settings,
    run: RunResult,
    places: Callable[[RunResult | None], Places],
    *,
    stage: str | None = None,
    opens: bool = True,
    closes: bool = True,
    graph: tuple[str, ...] = (),
) -> Iterator[None]:
    """Emit the block's START on entry and its COMPLETE or FAIL (with the error) on exit
    (see :class:`Trail`); nothing with ``settings.lineage.transport == "none"``. Never
    raises: a lineage problem is logged and the block goes on."""
    if settings.lineage.transport == "none":
        yield
        return
    sink = sink_of(settings, run.run_id)
    trail = Trail(settings, run, places, stage, opens, closes, graph)
    _send(sink, trail.start)
    error: str | None = None
    try:
        yield
    except BaseException as exc:
        error = run.error or str(exc) or type(exc).__name__
        raise
    finally:
        _send(sink, lambda: trail.finish(error or run.error))
        flush(FLUSH_TIMEOUT_S)


def _send(sink: Sink, build: Callable[[], list[Event]]) -> None:
    try:
        events = build()
    except Exception as exc:  # lineage must never fail a run
        _warn_once(f"build:{type(exc).__name__}", f"lineage events not built: {exc!r}")
        return
    for event in events:
        _sender().put(sink, event)


# ----------------------------------------------------------------------------- the sender

_warned: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning(mask_secrets(message))


class _Sender:
    """One daemon thread per process sends the events in order: the openlineage client is
    imported there (never on the run's path), and a slow endpoint only costs the bounded
    wait of :func:`flush`."""

    def __init__(self) -> None:
        self.queue: queue.Queue[tuple[Sink, Event] | threading.Event] = queue.Queue()
        self.clients: dict[tuple[str, str], Any] = {}
        self.failed: dict[str, float] = {}  # endpoint -> when it failed (time.monotonic)
        threading.Thread(target=self._work, name="stockbatch-lineage", daemon=True).start()

    def put(self, sink: Sink, event: Event) -> None:
        self.queue.put((sink, event))

    def _work(self) -> None:
        while True:
            item = self.queue.get()
            if isinstance(item, threading.Event):
                item.set()
                continue
            try:
                self._emit(*item)
            except Exception as exc:  # a file that cannot be written, a bad config
                _warn_once(f"emit:{type(exc).__name__}", f"lineage event not sent: {exc!r}")

    def _emit(self, sink: Sink, event: Event) -> None:
        built = _build(sink, event)
        url = sink.url
        # An endpoint that failed is left alone for a while (a long-lived process, the API,
        # tries it again later): until then its events go to the file.
        failed_at = self.failed.get(url or "")
        resting = failed_at is not None and time.monotonic() - failed_at < RETRY_AFTER_S
        if sink.transport == "http" and url and not resting:
            try:
                self._client("http", sink).emit(built)
                return
            except Exception as exc:
                self.failed[url] = time.monotonic()
                _warn_once(
                    f"http:{url}",
                    f"lineage endpoint {without_credentials(url)} failed ({exc}); this "
                    f"process writes its lineage events to {sink.file.parent} for now",
                )
        sink.file.parent.mkdir(parents=True, exist_ok=True)
        self._client("file", sink).emit(built)

    def _client(self, kind: str, sink: Sink) -> Any:
        key = (kind, str(sink.url if kind == "http" else sink.file))
        if key not in self.clients:
            if len(self.clients) > 32:  # a long-lived process (the API) runs many runs
                self.clients.clear()
            self.clients[key] = _client(kind, sink)
        return self.clients[key]


_the_sender: _Sender | None = None
_sender_lock = threading.Lock()


def _sender() -> _Sender:
    global _the_sender
    with _sender_lock:
        if _the_sender is None:
            _the_sender = _Sender()
        return _the_sender


def _forget_after_fork() -> None:
    # A forked child has no sender thread, and a lock another thread held stays held.
    global _the_sender, _sender_lock
    _the_sender, _sender_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)


def flush(timeout: float = FLUSH_TIMEOUT_S) -> bool:
    """Wait (at most ``timeout`` seconds) until every event put so far is sent or dropped."""
    sender = _the_sender
    if sender is None:
        return True
    done = threading.Event()
    sender.queue.put(done)
    return done.wait(timeout)


# ----------------------------------------------------------------------------- openlineage


NO_RETRY = {"total": 0, "connect": 0, "read": 0, "status": 0, "redirect": 0}


def transport_config(
    transport: str, url: str | None, api_key: str | None, file: Path
) -> dict[str, Any]:
    """The openlineage client's transport configuration (its dict form) for ``http`` to
    ``url`` or a JSON-lines ``file``: the one place both stockbatch's sender and Airflow's
    OpenLineage provider (``services/airflow.py``) get it from. A ``url`` with a path is
    the endpoint itself; a bare ``scheme://host:port`` gets OpenLineage's ``api/v1/lineage``."""
    if transport == "http" and url:
        parts = urlsplit(url)
        base, endpoint = url, "api/v1/lineage"
        if parts.path.strip("/"):
            base = urlunsplit((parts.scheme, parts.netloc, "/", "", ""))
            endpoint = parts.path.lstrip("/") + (f"?{parts.query}" if parts.query else "")
        conf: dict[str, Any] = {
            "type": "http",
            "url": base,
            "endpoint": endpoint,
            "timeout": HTTP_TIMEOUT_S,
            "retry": NO_RETRY,
        }
        if api_key:
            conf["auth"] = {"type": "api_key", "apiKey": api_key}
        return conf
    return {"type": "file", "log_file_path": str(file), "append": True}


def _client(kind: str, sink: Sink) -> Any:
    from openlineage.client import OpenLineageClient
    from openlineage.client.transport import get_default_factory

    conf = transport_config(kind, sink.url, sink.api_key, sink.file)
    transport = get_default_factory().create(conf)
    # The explicit config keeps the client from running git (sourceCodeLocation facet).
    config = {"facets": {"source_code_location": {"disabled": True}}}
    return OpenLineageClient(transport=transport, config=config)


def _build(sink: Sink, event: Event) -> Any:
    from openlineage.client.event_v2 import (
        InputDataset,
        Job,
        OutputDataset,
        Run,
        RunEvent,
        RunState,
    )
    from openlineage.client.facet_v2 import (
        error_message_run,
        input_statistics_input_dataset,
        job_type_job,
        output_statistics_output_dataset,
        parent_run,
        processing_engine_run,
        schema_dataset,
    )

    def fields(s: pa.Schema) -> dict[str, Any]:
        return {
            "schema": schema_dataset.SchemaDatasetFacet(
                fields=[
                    schema_dataset.SchemaDatasetFacetFields(name=f.name, type=str(f.type))
                    for f in s
                ],
                producer=PRODUCER,
            )
        }

    def inp(d: Data) -> InputDataset:
        facets = fields(d.schema) if d.schema is not None else {}
        stats: dict[str, Any] = {}
        if d.rows is not None:
            stats["inputStatistics"] = (
                input_statistics_input_dataset.InputStatisticsInputDatasetFacet(
                    rowCount=d.rows, producer=PRODUCER
                )
            )
        return InputDataset(namespace=d.namespace, name=d.name, facets=facets, inputFacets=stats)

    def out(d: Data) -> OutputDataset:
        facets = fields(d.schema) if d.schema is not None else {}
        stats: dict[str, Any] = {}
        if d.rows is not None:
            stats["outputStatistics"] = (
                output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(
                    rowCount=d.rows, producer=PRODUCER
                )
            )
        return OutputDataset(namespace=d.namespace, name=d.name, facets=facets, outputFacets=stats)

    run_facets: dict[str, Any] = {
        "stockbatch": _StockbatchFacet.make(event.facet),
        "processing_engine": processing_engine_run.ProcessingEngineRunFacet(
            version=__version__, name="stockbatch", producer=PRODUCER
        ),
    }
    if event.parent is not None:
        run_facets["parent"] = parent_run.ParentRunFacet(
            run=parent_run.Run(runId=event.parent[1]),
            job=parent_run.Job(namespace=sink.namespace, name=event.parent[0]),
            producer=PRODUCER,
        )
    if event.error:
        run_facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(
            message=mask_secrets(event.error), programmingLanguage="python", producer=PRODUCER
        )
    job_facets: dict[str, Any] = {
        "jobType": job_type_job.JobTypeJobFacet(
            processingType="BATCH",
            integration="STOCKBATCH",
            jobType="TASK" if event.parent else "JOB",
            producer=PRODUCER,
        )
    }
    return RunEvent(
        eventType=RunState[event.state],
        eventTime=event.time.isoformat(),
        run=Run(runId=event.run, facets=run_facets),
        job=Job(namespace=sink.namespace, name=event.job, facets=job_facets),
        inputs=[inp(d) for d in event.inputs],
        outputs=[out(d) for d in event.outputs],
        producer=PRODUCER,
    )


class _StockbatchFacet:
    """The custom run facet ``stockbatch``: the stockbatch run id (the manifest's name),
    the command, the stage and the run's status when it ended."""

    _cls: Any = None

    @classmethod
    def make(cls, values: dict[str, Any]) -> Any:
        if cls._cls is None:
            import attr
            from openlineage.client.facet_v2 import RunFacet

            @attr.define
            class StockbatchRunFacet(RunFacet):
                runId: str
                command: str
                stage: str | None = attr.field(default=None)
                status: str | None = attr.field(default=None)

                @staticmethod
                def _get_schema() -> str:
                    return FACET_SCHEMA

            cls._cls = StockbatchRunFacet
        return cls._cls(producer=PRODUCER, **values)
