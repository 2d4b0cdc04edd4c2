"""One client of an Airflow 3's REST API (``/api/v2``), for ``stockbatch orchestrate``.

Where and who: :func:`resolve_target` (``STOCKBATCH_AIRFLOW__URL`` / ``__USERNAME`` /
``__PASSWORD`` win; else what ``stockbatch services up airflow`` recorded in
``$STOCKBATCH_HOME/services.json``, with the CA file that verifies its https). Login:
``POST /auth/token`` gives a JWT sent as a bearer token (renewed once when a call gets
401). Every failure is an :class:`AirflowError` whose message says what to do; the CLI
prints it as one line.
"""

from __future__ import annotations

import datetime as dt
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from stockbatch.services.endpoints import recorded_endpoints
from stockbatch.settings import Settings

START_HINT = "start it with `stockbatch services up airflow`"

RUN_DONE = ("success", "failed")
"""DAG run states after which nothing changes any more."""
TASK_FAILED = ("failed", "upstream_failed")


class AirflowError(RuntimeError):
    """Airflow could not be reached, refused a call, or answered unexpectedly."""


class AirflowUnavailable(AirflowError):
    """No Airflow is configured or recorded, or it does not answer."""


class DagNotFound(AirflowError):
    """The DAG is not known to Airflow (the message lists the DAGs that are)."""

    def __init__(self, dag_id: str, known: list[str]) -> None:
        self.dag_id = dag_id
        self.known = known
        listed = ", ".join(known) if known else "none yet"
        super().__init__(
            f"Airflow has no DAG {dag_id!r}; DAGs it knows: {listed} (a new DAG file is "
            "picked up by the DAG processor within seconds; a DAG with an import error is "
            "listed under Import Errors in the UI)"
        )


@dataclass(frozen=True)
class AirflowTarget:
    """Which Airflow, and who logs in."""

    url: str
    username: str
    password: str
    source: str
    """Where it came from: ``settings`` or the services.json path."""
    ca_file: str | None = None
    """The CA that verifies an https server (the local CA ``services up`` recorded);
    None: the system's CAs."""


def resolve_target(settings: Settings) -> AirflowTarget:
    """The Airflow of ``settings.airflow`` (explicit values win) or the recorded one."""
    af = settings.airflow
    record = recorded_endpoints(settings.home).get("airflow") or {}
    url = af.url or record.get("url")
    if not url:
        raise AirflowUnavailable(
            f"no Airflow is recorded under {settings.home} and STOCKBATCH_AIRFLOW__URL is not "
            f"set: {START_HINT}"
        )
    explicit_url = bool(af.url)
    username = af.username or (None if explicit_url else record.get("username"))
    password = (
        af.password.get_secret_value()
        if af.password is not None
        else (None if explicit_url else record.get("password"))
    )
    if not username or password is None:
        raise AirflowError(
            f"no credentials for the Airflow at {url}: set STOCKBATCH_AIRFLOW__USERNAME and "
            "STOCKBATCH_AIRFLOW__PASSWORD"
        )
    ca_file = None if explicit_url else record.get("ca_file")
    return AirflowTarget(
        url=str(url).rstrip("/"),
        username=str(username),
        password=str(password),
        source="settings" if explicit_url else str(settings.home / "services.json"),
        ca_file=str(ca_file) if ca_file else None,
    )


def parse_logical_date(value: str) -> dt.datetime:
    """``2024-03-28`` (midnight UTC) or an ISO date-time (naive means UTC)."""
    try:
        if len(value) == 10:
            day = dt.date.fromisoformat(value)
            return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"--logical-date must be a date like 2024-03-28 or a date-time like "
            f"2024-03-28T21:00:00+00:00, got {value[:40]!r}"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def format_log_entry(entry: Any) -> list[str]:
    """One entry of Airflow 3's structured task log as text lines (its exception included)."""
    if not isinstance(entry, dict):
        return [str(entry)]
    stamp = str(entry.get("timestamp") or "")[:19].replace("T", " ")
    level = str(entry.get("level") or "").upper()
    head = " ".join(p for p in (stamp, level, str(entry.get("event", ""))) if p)
    lines = [head]
    for error in entry.get("error_detail") or []:
        if not isinstance(error, dict):
            continue
        frames = error.get("frames") or []
        if frames and isinstance(frames[-1], dict):
            last = frames[-1]
            lines.append(f"  at {last.get('filename')}:{last.get('lineno')} in {last.get('name')}")
        lines.append(f"  {error.get('exc_type', 'Error')}: {error.get('exc_value', '')}")
    return lines


class AirflowClient:
    """The REST API of one Airflow (``url``), logged in as ``username``."""

    def __init__(
        self,
        url: str,
        username: str,
        password: str,
        *,
        timeout: float = 30.0,
        ca_file: str | Path | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.username = username
        self._password = password
        self.ca_file = str(ca_file) if ca_file else None
        # https: the server is verified against ca_file alone (the local CA), else the
        # system's CAs.
        verify = ssl.create_default_context(cafile=self.ca_file) if self.ca_file else True
        self._http = httpx.Client(base_url=self.url, timeout=timeout, verify=verify)
        self._token: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> AirflowClient:
        """The client of :func:`resolve_target`."""
        target = resolve_target(settings)
        return cls(target.url, target.username, target.password, ca_file=target.ca_file)

    def close(self) -> None:
        """Close the HTTP connections."""
        self._http.close()

    def __enter__(self) -> AirflowClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport ---------------------------------------------------------------

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            if (untrusted := _cert_error(exc)) is not None:
                trusted = self.ca_file or "the system's CAs"
                raise AirflowError(
                    f"Airflow at {self.url}: its TLS certificate is not trusted by {trusted} "
                    f"({untrusted.verify_message}): for the local Airflow use the URL and "
                    "ca_file recorded in services.json (unset STOCKBATCH_AIRFLOW__URL)"
                ) from exc
            raise AirflowUnavailable(
                f"Airflow at {self.url} does not answer ({type(exc).__name__}: {exc}): {START_HINT}"
            ) from exc

    def login(self) -> str:
        """A fresh JWT for the user (``POST /auth/token``)."""
        response = self._send(
            "POST", "/auth/token", json={"username": self.username, "password": self._password}
        )
        if response.status_code in (401, 403):
            raise AirflowError(
                f"Airflow at {self.url} refused the login of {self.username!r} (HTTP "
                f"{response.status_code}): check STOCKBATCH_AIRFLOW__USERNAME/__PASSWORD or "
                "the password recorded in services.json"
            )
        if response.status_code not in (200, 201):
            raise AirflowError(
                f"Airflow at {self.url}: login answered HTTP {response.status_code}: "
                f"{response.text[:300]}"
            )
        token = response.json().get("access_token")
        if not token:
            raise AirflowError(f"Airflow at {self.url}: login answered without a token")
        self._token = str(token)
        return self._token

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """An authenticated call; a 401 (expired token) logs in again once."""
        extra = kwargs.pop("headers", {})
        for attempt in (1, 2):
            token = self._token or self.login()
            headers = {"Authorization": f"Bearer {token}", **extra}
            response = self._send(method, path, headers=headers, **kwargs)
            if response.status_code != 401 or attempt == 2:
                return response
            self._token = None
        raise AssertionError("unreachable")

    def _json(self, method: str, path: str, what: str, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise AirflowError(
                f"Airflow at {self.url}: {what} answered HTTP {response.status_code}: "
                f"{_detail(response)}"
            )
        return response.json()

    # -- DAGs ----------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """``/api/v2/monitor/health`` (metadatabase, scheduler, DAG processor, triggerer)."""
        body: dict[str, Any] = self._json("GET", "/api/v2/monitor/health", "health")
        return body

    def dag_ids(self) -> list[str]:
        """Every DAG Airflow knows (paused or not), sorted."""
        ids: list[str] = []
        offset = 0
        while True:
            page = self._json(
                "GET", "/api/v2/dags", "list DAGs", params={"limit": 100, "offset": offset}
            )
            dags = page.get("dags") or []
            ids += [d["dag_id"] for d in dags]
            offset += len(dags)
            if not dags or offset >= int(page.get("total_entries") or 0):
                return sorted(ids)

    def dag(self, dag_id: str) -> dict[str, Any]:
        """The DAG's details; :class:`DagNotFound` (listing the known DAGs) when missing."""
        response = self.request("GET", f"/api/v2/dags/{dag_id}")
        if response.status_code == 404:
            raise DagNotFound(dag_id, self.dag_ids())
        if response.status_code >= 400:
            raise AirflowError(
                f"Airflow at {self.url}: DAG {dag_id} answered HTTP {response.status_code}: "
                f"{_detail(response)}"
            )
        body: dict[str, Any] = response.json()
        return body

    def unpause(self, dag_id: str) -> bool:
        """Unpause the DAG; True if it was paused (new DAGs start paused)."""
        if not self.dag(dag_id).get("is_paused"):
            return False
        self._json("PATCH", f"/api/v2/dags/{dag_id}", "unpause", json={"is_paused": False})
        return True

    # -- runs ------------------------------------------------------------------------

    def trigger(
        self,
        dag_id: str,
        conf: dict[str, Any] | None = None,
        logical_date: dt.datetime | None = None,
    ) -> dict[str, Any]:
        """Create a DAG run (``POST /api/v2/dags/{dag_id}/dagRuns``); the new run."""
        body = {
            "logical_date": logical_date.isoformat() if logical_date else None,
            "conf": conf or {},
        }
        response = self.request("POST", f"/api/v2/dags/{dag_id}/dagRuns", json=body)
        if response.status_code == 404:
            raise DagNotFound(dag_id, self.dag_ids())
        if response.status_code == 409:
            raise AirflowError(
                f"DAG {dag_id} already has a run for that logical date: {_detail(response)}"
            )
        if response.status_code >= 400:
            raise AirflowError(
                f"Airflow refused to trigger {dag_id} (HTTP {response.status_code}): "
                f"{_detail(response)}"
            )
        run: dict[str, Any] = response.json()
        return run

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        """One DAG run (state, start and end, duration)."""
        run: dict[str, Any] = self._json(
            "GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}", f"run {run_id}"
        )
        return run

    def dag_runs(self, dag_id: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        """The most recent runs of ``dag_id`` (of every DAG when None), newest first."""
        page = self._json(
            "GET",
            f"/api/v2/dags/{dag_id or '~'}/dagRuns",
            "list runs",
            params={"limit": limit, "order_by": "-run_after"},
        )
        runs: list[dict[str, Any]] = list(page.get("dag_runs") or [])
        return runs

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """The task instances of a run (task_id, state, try_number, ...)."""
        page = self._json(
            "GET",
            f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances",
            "list task instances",
            params={"limit": 1000},
        )
        tis: list[dict[str, Any]] = list(page.get("task_instances") or [])
        return tis

    def clear(
        self,
        dag_id: str,
        run_id: str,
        task_ids: list[str],
        *,
        include_downstream: bool = True,
        only_failed: bool = True,
    ) -> list[dict[str, Any]]:
        """Clear task instances of one run so the scheduler runs them again (and the run
        goes back to queued): ``task_ids`` and, by default, their downstream tasks, only
        those that failed (``failed``/``upstream_failed``). Returns what was cleared."""
        body = self._json(
            "POST",
            f"/api/v2/dags/{dag_id}/clearTaskInstances",
            f"clear {', '.join(task_ids)} of {run_id}",
            json={
                "dry_run": False,
                "dag_run_id": run_id,
                "task_ids": task_ids,
                "only_failed": only_failed,
                "include_downstream": include_downstream,
                "reset_dag_runs": True,
            },
        )
        cleared: list[dict[str, Any]] = list(body.get("task_instances") or [])
        return cleared

    def task_log(
        self, dag_id: str, run_id: str, task_id: str, try_number: int, map_index: int = -1
    ) -> list[str]:
        """The whole log of one try of a task, as text lines."""
        body = self._json(
            "GET",
            f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
            f"log of {task_id}",
            params={"full_content": "true", "map_index": map_index},
            headers={"Accept": "application/json"},
        )
        lines: list[str] = []
        for entry in body.get("content") or []:
            lines += format_log_entry(entry)
        return lines

    def follow(
        self,
        dag_id: str,
        run_id: str,
        on_change: Callable[[dict[str, Any]], None],
        *,
        poll: float = 1.0,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Poll a run until it ends; ``on_change(task_instance)`` for every new task state.

        Returns the finished run; raises :class:`AirflowError` after ``timeout`` s.
        """
        seen: dict[tuple[str, int], tuple[str | None, int]] = {}
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            run = self.dag_run(dag_id, run_id)
            for ti in sorted(
                self.task_instances(dag_id, run_id), key=lambda t: str(t.get("start_date") or "~")
            ):
                key = (str(ti["task_id"]), int(ti.get("map_index", -1)))
                now = (ti.get("state"), int(ti.get("try_number") or 0))
                if seen.get(key) != now:
                    seen[key] = now
                    on_change(ti)
            if run.get("state") in RUN_DONE:
                return run
            if deadline is not None and time.monotonic() > deadline:
                raise AirflowError(
                    f"run {run_id} of {dag_id} still {run.get('state')} after {timeout:g} s "
                    "(it goes on in Airflow: `stockbatch orchestrate status`)"
                )
            time.sleep(poll)

    # -- backfills --------------------------------------------------------------------

    def _backfill_body(
        self,
        dag_id: str,
        from_date: dt.datetime,
        to_date: dt.datetime,
        conf: dict[str, Any] | None,
        reprocess: str,
        max_active_runs: int,
    ) -> dict[str, Any]:
        # The body of Airflow 3.3's BackfillPostBody (api_fastapi/core_api/datamodels/
        # backfills.py); the runs are those whose logical date is in [from_date, to_date].
        return {
            "dag_id": dag_id,
            "from_date": from_date.isoformat(),
            "to_date": to_date.isoformat(),
            "run_backwards": False,
            "dag_run_conf": conf or {},
            "reprocess_behavior": reprocess,
            "max_active_runs": max_active_runs,
        }

    def _backfill_call(self, path: str, dag_id: str, body: dict[str, Any]) -> Any:
        response = self.request("POST", path, json=body)
        if response.status_code == 404:
            raise DagNotFound(dag_id, self.dag_ids())
        if response.status_code == 409:
            raise AirflowError(
                f"{dag_id} already has a backfill running ({_detail(response)}): wait for it, "
                "or cancel it in the UI (Browse > Backfills)"
            )
        if response.status_code >= 400:
            raise AirflowError(
                f"Airflow refused the backfill of {dag_id} (HTTP {response.status_code}): "
                f"{_detail(response)}"
            )
        return response.json()

    def backfill_plan(
        self,
        dag_id: str,
        from_date: dt.datetime,
        to_date: dt.datetime,
        conf: dict[str, Any] | None = None,
        reprocess: str = "none",
    ) -> list[dt.datetime]:
        """The logical dates a backfill would run (``POST /api/v2/backfills/dry_run``):
        the DAG's intervals in the range, less the runs that exist and ``reprocess``
        (``none``, ``failed``, ``completed``) does not take again."""
        body = self._backfill_body(dag_id, from_date, to_date, conf, reprocess, 1)
        page = self._backfill_call("/api/v2/backfills/dry_run", dag_id, body)
        return sorted(
            _parse_time(item["logical_date"])
            for item in page.get("backfills") or []
            if item.get("logical_date")
        )

    def backfill(
        self,
        dag_id: str,
        from_date: dt.datetime,
        to_date: dt.datetime,
        conf: dict[str, Any] | None = None,
        *,
        reprocess: str = "none",
        max_active_runs: int = 1,
    ) -> dict[str, Any]:
        """Create a backfill (``POST /api/v2/backfills``); the scheduler creates and runs
        its DAG runs, oldest first, at most ``max_active_runs`` at a time."""
        body = self._backfill_body(dag_id, from_date, to_date, conf, reprocess, max_active_runs)
        created: dict[str, Any] = self._backfill_call("/api/v2/backfills", dag_id, body)
        return created

    def backfill_info(self, backfill_id: int) -> dict[str, Any]:
        """One backfill (``completed_at`` is set once all its runs ended)."""
        info: dict[str, Any] = self._json(
            "GET", f"/api/v2/backfills/{backfill_id}", f"backfill {backfill_id}"
        )
        return info

    def runs_at(self, dag_id: str, logical_dates: list[dt.datetime]) -> list[dict[str, Any]]:
        """The runs of ``dag_id`` whose logical date is one of ``logical_dates``, oldest
        first (the runs of a backfill: the REST API has no backfill filter on runs)."""
        if not logical_dates:
            return []
        wanted = set(logical_dates)
        page = self._json(
            "GET",
            f"/api/v2/dags/{dag_id}/dagRuns",
            "list runs",
            params={
                "logical_date_gte": min(wanted).isoformat(),
                "logical_date_lte": max(wanted).isoformat(),
                "order_by": "logical_date",
                "limit": 1000,
            },
        )
        runs = [
            r
            for r in page.get("dag_runs") or []
            if r.get("logical_date") and _parse_time(r["logical_date"]) in wanted
        ]
        return runs

    def follow_runs(
        self,
        dag_id: str,
        logical_dates: list[dt.datetime],
        on_run: Callable[[dict[str, Any]], None],
        on_task: Callable[[dict[str, Any], dict[str, Any]], None],
        *,
        backfill_id: int | None = None,
        poll: float = 1.0,
        timeout: float | None = None,
    ) -> list[dict[str, Any]]:
        """Poll the runs at ``logical_dates`` until every one has ended; ``on_run(run)``
        for every new run state, ``on_task(run, task_instance)`` for every new task state
        of a run that is not finished. Returns the finished runs, oldest first.

        A backfill that completes (cancelled) while some run never started ends the wait
        too; those runs come back in their last state. :class:`AirflowError` after
        ``timeout`` s."""
        seen_runs: dict[str, str | None] = {}
        seen_tasks: dict[tuple[str, str, int], tuple[str | None, int]] = {}
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            runs = self.runs_at(dag_id, logical_dates)
            for run in runs:
                run_id = str(run["dag_run_id"])
                if seen_runs.get(run_id, "?") == run.get("state"):
                    if run.get("state") in RUN_DONE:
                        continue
                else:
                    seen_runs[run_id] = run.get("state")
                    on_run(run)
                if run.get("state") not in ("running", *RUN_DONE):
                    continue  # queued: no task has a state yet
                for ti in sorted(
                    self.task_instances(dag_id, run_id),
                    key=lambda t: str(t.get("start_date") or "~"),
                ):
                    key = (run_id, str(ti["task_id"]), int(ti.get("map_index", -1)))
                    now = (ti.get("state"), int(ti.get("try_number") or 0))
                    if seen_tasks.get(key) != now:
                        seen_tasks[key] = now
                        on_task(run, ti)
            done = len(runs) >= len(logical_dates) and all(r.get("state") in RUN_DONE for r in runs)
            if done:
                return runs
            if backfill_id is not None and self.backfill_info(backfill_id).get("completed_at"):
                # Cancelled: the runs it never started stay queued (or failed) for good.
                return self.runs_at(dag_id, logical_dates)
            if deadline is not None and time.monotonic() > deadline:
                pending = [r["dag_run_id"] for r in runs if r.get("state") not in RUN_DONE]
                raise AirflowError(
                    f"{dag_id}: {len(pending)} run(s) still going after {timeout:g} s "
                    "(they go on in Airflow: `stockbatch orchestrate status`)"
                )
            time.sleep(poll)


def _parse_time(value: str) -> dt.datetime:
    moment = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _cert_error(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate verification failure behind a transport error (httpx wraps it)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])[:300]
    return str(body)[:300]
