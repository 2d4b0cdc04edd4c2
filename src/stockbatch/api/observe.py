"""Every request is measured (Prometheus) and written to the audit log.

One ASGI middleware: it times the request, labels it with its route template
(``/api/v1/runs/{run_id}``, never the raw path, so the label set stays small) and,
once the last byte of the answer is sent (a streamed download has counted its rows
by then), appends the audit entry: user, action, parameters, rows, status, time.
Passwords and tokens never reach it: they travel in headers and form bodies, which
are not recorded; query parameters named like a secret are masked, and so is anything
shaped like a token in the path or the parameters (a client may misplace one).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import anyio
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stockbatch.api.accounts import mask_tokens
from stockbatch.api.context import ApiContext
from stockbatch.settings import MASK, mask_secrets
from stockbatch.warehouse import access, queries

log = logging.getLogger("stockbatch.api")

NOT_AUDITED = ("/static/", "/healthz", "/readyz", "/favicon.ico")
"""Probes and assets: polled constantly, they would drown the log; they return no data."""

_SECRET_PARAMS = ("password", "token", "secret", "key")


class _RunCollector(Collector):
    """Last run time and status, rows per reason of the newest run with counts (read from
    the warehouse at scrape time)."""

    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            runs = queries.runs(self.ctx.reader, last=20)
        except Exception:  # a scrape must not fail because the warehouse is down
            log.warning("metrics: the warehouse cannot be read")
            return
        last = GaugeMetricFamily(
            "stockbatch_last_run_timestamp_seconds", "Start of the newest run.", labels=["status"]
        )
        ok = GaugeMetricFamily(
            "stockbatch_last_success_timestamp_seconds", "End of the newest succeeded run."
        )
        reasons = GaugeMetricFamily(
            "stockbatch_quarantined_rows", "Rows refused per reason, newest run.", labels=["reason"]
        )
        if runs and runs[0]["started_at"] is not None:
            last.add_metric([str(runs[0]["status"])], runs[0]["started_at"].timestamp())
        good = next((r for r in runs if r["status"] == "succeeded" and r["finished_at"]), None)
        if good is not None:
            ok.add_metric([], good["finished_at"].timestamp())
        counted = next((r for r in runs if r["quality"]), None)
        if counted is not None:
            for metric, value in sorted(counted["quality"].items()):
                if metric.startswith("reasons."):
                    reasons.add_metric([metric.split(".", 1)[1]], value)
        yield from (last, ok, reasons)


class Metrics:
    """The app's own Prometheus registry (several apps in one process stay apart)."""

    def __init__(self, ctx: ApiContext) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "stockbatch_http_requests", "HTTP requests.", ["method", "route", "status"],
            registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "stockbatch_http_request_duration_seconds", "Time to the last byte.",
            ["method", "route"], registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )  # fmt: skip
        self.registry.register(_RunCollector(ctx))


def _params(scope: Scope) -> dict[str, str]:
    from urllib.parse import parse_qsl

    out: dict[str, str] = {}
    raw = scope.get("query_string", b"").decode("latin-1")
    for key, value in parse_qsl(raw, keep_blank_values=True):
        secret = any(s in key.lower() for s in _SECRET_PARAMS)
        out[mask_tokens(key)[:64]] = MASK if secret else mask_tokens(mask_secrets(value))[:500]
    return out


class AuditAndMetrics:
    """ASGI middleware: Prometheus per route and the audit entry of every request."""

    def __init__(self, app: ASGIApp, ctx: ApiContext, metrics: Metrics) -> None:
        self.app = app
        self.ctx = ctx
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        done = False

        async def finish() -> None:
            nonlocal done
            if done:
                return
            done = True
            # Shielded: a streamed answer's task group is cancelled as soon as the client
            # disconnects after the last byte, which would otherwise drop the audit entry.
            with anyio.CancelScope(shield=True):
                await self._record(scope, status, time.perf_counter() - started)

        async def send_and_watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                await finish()

        try:
            await self.app(scope, receive, send_and_watch)
        finally:
            await finish()

    async def _record(self, scope: Scope, status: int, seconds: float) -> None:
        route = scope.get("route")
        template = getattr(route, "path", None) or "unmatched"
        method = scope.get("method", "GET")
        self.metrics.requests.labels(method, template, str(status)).inc()
        self.metrics.latency.labels(method, template).observe(seconds)
        path = scope.get("path", "")
        state: dict[str, Any] = scope.get("state", {})
        if state.get("audited") or path.startswith(NOT_AUDITED):
            return
        who = state.get("principal")
        detail = {
            "path": mask_tokens(path)[:300],
            "params": _params(scope),
            "path_params": {
                k: mask_tokens(str(v))[:100] for k, v in (scope.get("path_params") or {}).items()
            },
            "rows": state.get("rows"),
            "status": status,
            "ms": round(seconds * 1000, 1),
            "via": getattr(who, "via", None),
            "client": (scope.get("client") or ("", 0))[0],
        }
        actor = who.name if who is not None else "anonymous"
        try:
            await anyio.to_thread.run_sync(
                access.audit, self.ctx.auth, actor, f"{method} {template}", detail
            )
        except Exception:  # the answer is sent; a failed audit write is logged, loudly
            log.exception("audit log write failed for %s %s", method, path)


def audit_event(ctx: ApiContext, actor: str, action: str, detail: dict[str, Any]) -> None:
    """An audit entry outside the request flow (logins)."""
    access.audit(ctx.auth, actor, action, detail)
