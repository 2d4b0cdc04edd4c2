"""The pipeline commands: ``run`` and the single stages, recorded by :mod:`stockbatch.runs`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from stockbatch import pipeline
from stockbatch.cli.common import (
    AsOfOpt,
    DatasetOpt,
    EngineOpt,
    ForceOpt,
    FullOpt,
    HomeOpt,
    NoWaitOpt,
    PathOpt,
    QuietOpt,
    SearchOpt,
    SourceOpt,
    StartOpt,
    SymbolsOpt,
    TransportOpt,
    VerifyOpt,
    WarehouseOpt,
    app,
    cli_settings,
    console,
    exit_for,
    fail,
    guard,
    out,
    parse_date,
    progress_bars,
    recorded,
    report_rejected,
    waiting,
)
from stockbatch.results import Progress as StageProgress
from stockbatch.results import RunResult
from stockbatch.settings import Settings


def _make_source(
    settings: Settings,
    source: str,
    path: Path | None,
    symbols: str | None,
    start: str | None,
    dataset: str | None = None,
) -> Any:
    if source == "kaggle":
        from stockbatch.sources.kaggle import KaggleSource, kaggle_download

        if dataset is not None:
            console.print(f"downloading Kaggle dataset {dataset} (kagglehub cache) ...")
            path = guard(lambda: kaggle_download(dataset))
        if path is None:
            fail(
                "--source kaggle needs --path DIR (a folder of the Kaggle dataset's files) "
                "or --dataset OWNER/NAME",
                2,
            )
        assert path is not None
        if not path.exists():
            fail(f"--path {path} does not exist")
        if not path.is_dir():
            fail(f"--path {path} is not a folder; point it at the dataset's folder")
        return KaggleSource(path)
    if source == "yahoo":
        from stockbatch.lake import bronze
        from stockbatch.sources.yahoo import YahooSource

        if not symbols:
            fail("--source yahoo needs --symbols, e.g. --symbols AAPL,MSFT", 2)
        assert symbols is not None
        syms = [s.strip().upper() for s in symbols.split(",") if s.strip()]
        return YahooSource(
            syms,
            start=parse_date(start, "--start"),
            end=None,
            last_dates=bronze.last_dates(settings),
            settings=settings.yahoo,
        )
    fail(f"unknown --source {source!r}: use kaggle or yahoo", 2)
    raise AssertionError


@app.command()
def run(
    source: SourceOpt = "kaggle",
    path: PathOpt = None,
    dataset: DatasetOpt = None,
    symbols: SymbolsOpt = None,
    start: StartOpt = None,
    as_of: AsOfOpt = None,
    force: ForceOpt = False,
    full: FullOpt = False,
    verify: VerifyOpt = False,
    home: HomeOpt = None,
    engine: EngineOpt = None,
    transport: TransportOpt = None,
    warehouse: WarehouseOpt = None,
    search: SearchOpt = None,
    quiet: QuietOpt = False,
    no_wait: NoWaitOpt = False,
) -> None:
    """Run the whole pipeline: ingest -> process -> load.

    With --transport kafka: ingest -> Kafka -> collect -> process -> load.
    """
    s = cli_settings(home, engine, transport, warehouse, search, quiet)
    guard(lambda: pipeline.check_backends(s))
    src = _make_source(s, source, path, symbols, start, dataset)
    with progress_bars(s.progress) as prog:
        res: RunResult = guard(
            lambda: pipeline.run(
                s,
                src,
                as_of=parse_date(as_of, "--as-of"),
                force=force,
                full=full,
                verify=verify,
                progress=prog,
                wait=not no_wait,
                on_wait=waiting,
            )
        )
    assert res.ingest and res.process and res.load
    report_rejected(res.ingest.rejected)
    console.print(res.ingest.summary())
    if res.collect is not None:
        console.print(res.collect.summary())
    console.print(res.process.summary())
    console.print(res.load.summary())
    verdict = "changed" if res.changed else "nothing changed (inputs already processed)"
    out.print(
        f"run {res.run_id} {res.status}: {verdict}; manifest {res.manifest_path} "
        f"({res.duration_s:.1f}s)"
    )
    exit_for(res.status)


@app.command()
def ingest(
    source: SourceOpt = "kaggle",
    path: PathOpt = None,
    dataset: DatasetOpt = None,
    symbols: SymbolsOpt = None,
    start: StartOpt = None,
    force: ForceOpt = False,
    verify: VerifyOpt = False,
    as_of: AsOfOpt = None,
    home: HomeOpt = None,
    transport: TransportOpt = None,
    quiet: QuietOpt = False,
    no_wait: NoWaitOpt = False,
) -> None:
    """Land a source's data in the lake's bronze layer (as arrived).

    With --transport kafka: publish it to the Kafka topic instead (the producer
    service); `stockbatch collect` then lands it in bronze.
    """
    s = cli_settings(home, transport=transport, quiet=quiet)
    guard(lambda: pipeline.check_backends(s))
    src = _make_source(s, source, path, symbols, start, dataset)

    def work(rec: RunResult, prog: StageProgress) -> None:
        rec.ingest = pipeline.ingest(
            s, src, run_id=rec.run_id, force=force, verify=verify, progress=prog
        )

    rec = recorded(s, "ingest", work, params={"source": source}, wait=not no_wait)
    assert rec.ingest is not None
    report_rejected(rec.ingest.rejected)
    out.print(rec.ingest.summary())
    exit_for(rec.status)


@app.command()
def collect(
    group: Annotated[
        str | None,
        typer.Option(
            "--group",
            help="Consumer group (env STOCKBATCH_KAFKA__CONSUMER_GROUP); collectors of one "
            "group split the partitions.",
        ),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            "--timeout",
            help="Seconds without progress before giving up (env STOCKBATCH_KAFKA__TIMEOUT_S).",
        ),
    ] = None,
    join_grace: Annotated[
        float,
        typer.Option(
            "--join-grace",
            help="When starting several collectors together: stay in the group at least "
            "this many seconds so each gets its share of the partitions.",
        ),
    ] = 0.0,
    home: HomeOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Land what the Kafka topic holds in bronze (the batch consumer; one bounded batch).

    Reads up to the end offsets seen at start, writes bronze, then commits.
    Exit code 3 when some records were undecodable (sent to the dead-letter topic).
    """
    s = cli_settings(home, transport="kafka", quiet=quiet)
    guard(lambda: pipeline.check_backends(s))

    def work(rec: RunResult, prog: StageProgress) -> None:
        rec.collect = pipeline.collect(
            s, run_id=rec.run_id, group=group, timeout_s=timeout, join_grace_s=join_grace
        )
        rec.params["group"] = rec.collect.stats.group

    # Collectors of one group run in parallel on purpose: no home lock (Kafka + bronze lock).
    rec = recorded(s, "collect", work, lock=False)
    assert rec.collect is not None
    out.print(rec.collect.summary())
    exit_for(rec.status)


@app.command()
def process(
    as_of: AsOfOpt = None,
    force: ForceOpt = False,
    full: FullOpt = False,
    home: HomeOpt = None,
    engine: EngineOpt = None,
    quiet: QuietOpt = False,
    no_wait: NoWaitOpt = False,
) -> None:
    """Validate bronze into silver (clean + quarantine) and compute the gold features.

    Incremental: only what new bronze rows affect is recomputed (a symbol's new
    days from its recent rows and carried state; a late correction rebuilds its
    bucket). --full rebuilds everything.
    """
    s = cli_settings(home, engine=engine, quiet=quiet)
    guard(lambda: pipeline.check_backends(s))
    day = parse_date(as_of, "--as-of")

    def work(rec: RunResult, prog: StageProgress) -> None:
        rec.process = pipeline.process(
            s, run_id=rec.run_id, as_of=day, force=force, full=full, progress=prog
        )

    rec = recorded(s, "process", work, wait=not no_wait)
    assert rec.process is not None
    out.print(rec.process.summary())


@app.command()
def load(
    force: ForceOpt = False,
    search_only: Annotated[
        bool,
        typer.Option(
            "--search-only",
            help="Only bring the search index up to date (after the search node was down).",
        ),
    ] = False,
    home: HomeOpt = None,
    warehouse: WarehouseOpt = None,
    search: SearchOpt = None,
    quiet: QuietOpt = False,
    no_wait: NoWaitOpt = False,
) -> None:
    """Upsert the gold layer into the warehouse (only what changed), then sync the search
    index when one is configured. Exit code 3 when the search index stayed stale."""
    s = cli_settings(home, warehouse=warehouse, search=search, quiet=quiet)
    guard(lambda: pipeline.check_backends(s))

    def work(rec: RunResult, prog: StageProgress) -> None:
        from stockbatch.pipeline.load import load as load_stage

        rec.load = load_stage(
            s, run_id=rec.run_id, force=force, search_only=search_only, progress=prog
        )

    rec = recorded(s, "load", work, wait=not no_wait)
    assert rec.load is not None
    out.print(rec.load.summary())
    exit_for(rec.status)
