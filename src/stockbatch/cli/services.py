"""``stockbatch services up|down|status``: run the real services on loopback.

Registered in the main CLI as ``stockbatch services``; also runnable alone:
``python -m stockbatch.cli.services`` (scripts/services.sh).

``services up`` makes the home's certificate authority first (once:
``services/tls/ca.pem``, see :mod:`stockbatch.services.tls`); every service then
serves TLS (with authentication) only, unless ``--insecure``.

Exit codes: 0 success; 1 a service failed (the message says why, with the tail of
its log); 2 bad usage (unknown service); 3 ``status``: some service is degraded
(alive but not answering, or gone while recorded as up). A service that was never
started, or stopped with ``services down``, is not degraded.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from stockbatch.services import tls
from stockbatch.services.base import ServiceStatus
from stockbatch.services.kafka import KAFKA_VERSION, ensure_kafka_jars, kafka_libs_dir
from stockbatch.services.registry import SERVICES, get_service, service_names
from stockbatch.services.system import ServiceError

app = typer.Typer(
    name="services",
    help="Provision and run real services (Kafka, PostgreSQL, OpenSearch, Elasticsearch, "
    "Spark, Airflow) on 127.0.0.1, data under STOCKBATCH_HOME.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
services_app = app  # the name the main CLI imports

# soft_wrap: one line per service even when piped (paths must stay copy-pasteable).
console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)

EXIT_DEGRADED = 3

NamesArg = Annotated[
    list[str] | None,
    typer.Argument(help=f"Services (default: all): {', '.join(SERVICES)}.", show_default=False),
]
HomeOpt = Annotated[
    Path | None,
    typer.Option(
        "--home",
        help="Folder holding services/ and services.json (env STOCKBATCH_HOME).",
        show_default=False,
    ),
]


def _home(home: Path | None) -> Path:
    if home is not None:
        return home
    from stockbatch.settings import Settings

    return Settings().home


def _names(names: list[str] | None) -> list[str]:
    chosen = names or service_names()
    unknown = [n for n in chosen if n not in SERVICES]
    if unknown:
        console.print(
            f"[bold red]error:[/] unknown service(s) {', '.join(unknown)}; "
            f"known: {', '.join(SERVICES)}"
        )
        raise typer.Exit(2)
    return chosen


def _describe(status: ServiceStatus) -> str:
    ep = status.endpoint
    where = ep.get("bootstrap_servers") or ep.get("master_url") or ep.get("url") or ""
    extra = []
    if ep.get("master_url") and ep.get("workers"):
        extra.append(
            f"{ep['workers']} worker(s) x {ep.get('worker_cores')} core(s), "
            f"{ep.get('worker_memory')}; UI {ep.get('web_ui')}"
        )
    if ep.get("security_protocol"):
        extra.append(str(ep["security_protocol"]))
    if "tls" in ep:  # PostgreSQL: say which of the two listeners runs
        extra.append("TLS, verify with ca_file" if ep["tls"] else "NO TLS (--insecure)")
    if ep.get("sasl_username") or ep.get("username"):
        user = ep.get("sasl_username") or ep.get("username")
        extra.append(f"user {user}, password in services.json")
    if status.pid:
        extra.append(f"pid {status.pid}")
    suffix = f" ({', '.join(extra)})" if extra else ""
    return f"{status.state} at {where}{suffix}" if where else status.state


@app.command("up")
def up(
    names: NamesArg = None,
    home: HomeOpt = None,
    port: Annotated[
        int | None,
        typer.Option(
            "--port",
            help="Port on 127.0.0.1 for kafka (client), postgresql or airflow (API server) "
            "(default: last or free).",
        ),
    ] = None,
    scram: Annotated[
        bool | None,
        typer.Option(
            "--scram/--no-scram",
            help="Kafka with --insecure: SASL/SCRAM-SHA-512 on the plain listener "
            "(SASL_PLAINTEXT); the default TLS listener always uses SCRAM (default: as last "
            "time).",
            show_default=False,
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            min=1,
            help="Spark: number of workers (default: as last time, else 2).",
            show_default=False,
        ),
    ] = None,
    worker_cores: Annotated[
        int | None,
        typer.Option(
            "--worker-cores",
            min=1,
            help="Spark: cores each worker offers (default: as last time, else 1).",
            show_default=False,
        ),
    ] = None,
    worker_memory: Annotated[
        str | None,
        typer.Option(
            "--worker-memory",
            help="Spark: memory each worker offers, e.g. 512m, 2g; its executor gets all of "
            "it (default: as last time, else 1g).",
            show_default=False,
        ),
    ] = None,
    brokers: Annotated[
        int | None,
        typer.Option(
            "--brokers",
            min=1,
            help="Kafka: 1 runs a single broker; 3 or more a KRaft cluster of that many "
            "broker+controller nodes (topics replicated 3 times, min.insync.replicas 2) "
            "(default: as last time, else 1).",
            show_default=False,
        ),
    ] = None,
    insecure: Annotated[
        bool,
        typer.Option(
            "--insecure",
            help="Plain listeners without TLS (and, where TLS brings it, without "
            "authentication): for old clients only; each service says so in a warning.",
        ),
    ] = False,
) -> None:
    """Provision (first time: download, format), start, wait until healthy, record endpoints."""
    root = _home(home)
    failed = False
    try:
        ca = tls.ensure_ca(root)
    except (OSError, ServiceError) as exc:
        console.print(f"[bold red]error:[/] the local certificate authority: {exc}")
        raise typer.Exit(1) from exc
    console.print(f"TLS: certificates from the local CA {ca.cert_file} (clients trust this file)")
    for name in _names(names):
        t0 = time.monotonic()
        try:
            if name == "kafka" and not (kafka_libs_dir().parent / "COMPLETE").exists():
                console.print(
                    f"kafka: resolving Apache Kafka {KAFKA_VERSION} jars from Maven Central "
                    f"into {kafka_libs_dir().parent} (first time only) ..."
                )
                ensure_kafka_jars()
            console.print(f"{name}: starting under {root.resolve() / 'services' / name} ...")
            service = get_service(
                name,
                root,
                port=port,
                scram=scram,
                workers=workers,
                worker_cores=worker_cores,
                worker_memory=worker_memory,
                brokers=brokers,
                insecure=insecure,
            )
            status = service.up()
        except ServiceError as exc:
            console.print(f"[bold red]error:[/] {name}: {exc}")
            failed = True
            continue
        for warning in getattr(service, "warnings", ()):
            console.print(f"[bold yellow]WARNING:[/] {name}: {warning}")
        out.print(f"{name}: {_describe(status)}, ready in {time.monotonic() - t0:.1f} s")
    if failed:
        raise typer.Exit(1)
    out.print(f"endpoints recorded in {root.resolve() / 'services.json'}")


@app.command("down")
def down(
    names: NamesArg = None,
    home: HomeOpt = None,
    purge: Annotated[
        bool, typer.Option("--purge", help="Also delete the data, logs and credentials.")
    ] = False,
) -> None:
    """Stop services (SIGTERM, then SIGKILL after a timeout); data is kept unless --purge."""
    root = _home(home)
    failed = False
    # Reverse start order: later services may depend on earlier ones.
    for name in reversed(_names(names)):
        t0 = time.monotonic()
        service = get_service(name, root)
        try:
            pid = service.status().pid
            was_running = service.down()
            if purge:
                service.purge()
        except ServiceError as exc:
            console.print(f"[bold red]error:[/] {name}: {exc}")
            failed = True
            continue
        what = (
            f"stopped (pid {pid}) in {time.monotonic() - t0:.1f} s"
            if was_running
            else ("was not running")
        )
        out.print(f"{name}: {what}" + ("; data deleted" if purge else ""))
    if failed:
        raise typer.Exit(1)


@app.command("status")
def status(
    names: NamesArg = None,
    home: HomeOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show each service's state and endpoint; exit 3 if any is degraded (not answering,
    or died while recorded as up)."""
    root = _home(home)
    statuses = {name: get_service(name, root).status() for name in _names(names)}
    if as_json:
        out.print_json(json.dumps({n: s.to_dict() for n, s in statuses.items()}))
    else:
        for name, st in statuses.items():
            out.print(f"{name}: {_describe(st)}  [dim]data {st.data_dir}, log {st.log_file}[/]")
    if any(s.degraded for s in statuses.values()):
        raise typer.Exit(EXIT_DEGRADED)


if __name__ == "__main__":
    app()
