"""The quality page's history (rate per run, marks past the thresholds of
``Settings.quality``, the trend) and the audit's dashboard side (CLI entries on /admin, a
refused login form recorded), on the demo home of ``conftest.py`` (real app, SQLite)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi import FastAPI

from stockbatch.api.app import create_app
from stockbatch.warehouse import access

from .conftest import PASSWORDS, Demo, client_for, login, sb


def _page(app: FastAPI, path: str, user: str = "viewer") -> str:
    client = client_for(app)
    assert login(client, user, PASSWORDS[user]).status_code == 303
    page = client.get(path)
    assert page.status_code == 200, page.text[:500]
    return page.text


def _history_rows(html: str) -> list[str]:
    table = html.split('id="quality-history"', 1)[1].split("</table>", 1)[0]
    return re.findall(r"<tr data-run=.*?</tr>", table, flags=re.S)


@pytest.fixture
def strict_app(demo: Demo) -> Iterator[FastAPI]:
    """The app with a quarantine limit of 0.01 %: the demo run (0.05 %) passes it."""
    settings = demo.settings()
    settings.quality.max_quarantine_rate = 0.0001
    application = create_app(settings)
    yield application
    application.state.ctx.close()


def test_history_lists_the_run_with_its_rate_and_no_mark(app: FastAPI, demo: Demo) -> None:
    html = _page(app, "/quality")
    [row] = _history_rows(html)
    assert f'data-run="{demo.run_id}"' in row and 'data-marks=""' in row
    assert "0.05%" in row and "weekend_date" in row and "status-ok" in row
    assert 'class="marked"' not in row
    assert 'id="quality-rate-chart"' in html
    trend = re.search(r'id="quality-trend">(.*?)</p>', html, flags=re.S)
    assert trend is not None
    assert "1 run: quarantine rate 0.05% -&gt; 0.05% (flat)" in trend[1]
    assert "quarantine rate 5.00%" in trend[1]  # the gate's limit, the default
    assert "<code>unparseable</code> 1.00%" in trend[1]


def test_a_run_past_a_threshold_is_marked(strict_app: FastAPI, demo: Demo) -> None:
    html = _page(strict_app, "/quality")
    [row] = _history_rows(html)
    assert 'class="marked"' in row and 'data-marks="quarantine_rate"' in row
    assert "quarantine_rate 0.05% &gt; 0.01%" in row
    assert "0 marked" not in html and "1 marked" in html


def test_the_history_endpoint_carries_the_same_marks(
    app: FastAPI, strict_app: FastAPI, demo: Demo
) -> None:
    """``GET /api/v1/quality/history``: the rate of each run, and its marks under the
    thresholds of the app's settings (none by default, one under the strict limit)."""
    got = {}
    for name, application in (("default", app), ("strict", strict_app)):
        client = client_for(application)
        assert login(client, "viewer", PASSWORDS["viewer"]).status_code == 303
        res = client.get("/api/v1/quality/history")
        assert res.status_code == 200, res.text
        [run] = [r for r in res.json()["runs"] if r["run_id"] == demo.run_id]
        got[name] = run
    assert got["default"]["marked"] is False and got["default"]["breaches"] == []
    assert got["strict"]["marked"] is True
    assert got["strict"]["breaches"] == ["quarantine_rate 0.05% > 0.01%"]
    assert got["strict"]["quarantine_rate"] == pytest.approx(0.0005, abs=0.0001)


def test_a_typo_in_the_thresholds_is_shown_not_a_failure(demo: Demo) -> None:
    settings = demo.settings()
    settings.quality.max_reason_rate = {"unparsable": 0.1}
    application = create_app(settings)
    try:
        html = _page(application, "/quality")
    finally:
        application.state.ctx.close()
    assert "Quality thresholds not applied" in html and "unparsable" in html
    assert len(_history_rows(html)) == 1


def test_admin_page_shows_the_command_line_audit(app: FastAPI, demo: Demo) -> None:
    # A CLI command just before: the page lists the newest entries of both logs, and the
    # session's demo home has many API entries by the time this test runs.
    sb(demo.home, "tokens", "list")
    html = _page(app, "/admin", "admin")
    audit = html.split('id="audit"', 1)[1].split("</table>", 1)[0]
    assert "tokens list" in audit and "via=cli" in audit
    for secret in PASSWORDS.values():
        assert secret not in html


def test_a_login_with_an_expired_form_is_audited(app: FastAPI) -> None:
    client = client_for(app)
    client.get("/login")
    form = {"username": "analyst", "password": PASSWORDS["analyst"], "csrf": "stale", "next": "/"}
    assert client.post("/login", data=form).status_code == 400
    [entry] = access.audit_rows(app.state.ctx.auth, limit=1)
    assert (entry["actor"], entry["action"]) == ("analyst", "login")
    assert entry["detail"]["ok"] is False and entry["detail"]["reason"] == "form expired"
    assert PASSWORDS["analyst"] not in str(entry)
