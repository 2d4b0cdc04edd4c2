"""The catalog page in a real browser (Debian's chromium through Playwright), on the
same setup as the dashboard's browser test: the demo home served by ``stockbatch serve``
as a subprocess, a viewer logged in through the form, any console or page error or
request to another host failing the test (tests/e2e/test_dashboard_browser.py).

The page is screenshotted as ``catalog.png`` (1280x800), under
``$STOCKBATCH_SCREENSHOTS`` when set (docs/screenshots/).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from e2e import test_dashboard_browser as dashboard
from e2e.test_dashboard_browser import Server, Session

# The dashboard test's fixtures, under their names (pytest finds them in this module).
server = dashboard.server
browser = dashboard.browser
shots = dashboard.shots
open_session = dashboard.open_session

pytestmark = pytest.mark.timeout(180)


def test_viewer_reads_the_catalog(open_session: Callable[..., Session], server: Server) -> None:
    s = open_session("viewer")
    s.page.click(".top nav a[href='/catalog']")
    s.page.wait_for_url(s.base + "/catalog")
    assert s.page.locator(".top nav a[aria-current='page']").inner_text() == "Catalog"

    # The same datasets as the API, one table row each.
    cookies = {c["name"]: c["value"] for c in s.page.context.cookies()}
    api = httpx.get(server.base + "/api/v1/catalog", cookies=cookies, timeout=30).json()
    names = [d["name"] for d in api["datasets"]]
    rows = s.page.locator(".catalog-table tr.ds-row")
    assert rows.count() == len(names)
    assert rows.locator("td:first-child").all_inner_texts() == names
    gold = s.page.locator(".catalog-table tr:has(td:first-child a[href='#ds-gold-daily_features'])")
    assert server.run_id in gold.inner_text()
    assert "50,260" in gold.inner_text()  # the demo's gold rows
    s.shot("catalog")

    # A dataset link opens its details: columns with their descriptions.
    gold.locator("a[href='#ds-gold-daily_features']").click()
    details = s.page.locator("details#ds-gold-daily_features")
    assert details.get_attribute("open") is not None
    assert details.locator("tbody tr").count() == 28
    assert "[price]" in details.inner_text()

    # The filter keeps the datasets whose name, owner, description or a column name match.
    s.page.fill("#catalog-filter", "quarantine")

    def matches(d: dict[str, Any]) -> bool:
        text = " ".join(
            [d["name"], d["owner"], d["description"], *(c["name"] for c in d["columns"])]
        )
        return "quarantine" in text.lower()

    expected = [d["name"] for d in api["datasets"] if matches(d)]
    assert "silver.quarantine" in expected and "gold.daily_features" not in expected
    shown = [n for n, r in zip(names, rows.all(), strict=True) if r.is_visible()]
    assert shown == expected
    assert f"{len(expected)} of {len(names)}" in s.page.locator("#catalog-shown").inner_text()
    s.page.fill("#catalog-filter", "")
    assert all(r.is_visible() for r in rows.all())
