"""The dashboard in a real browser: ``stockbatch serve`` as a subprocess on the demo
home, driven by Debian's chromium through Playwright (sync API).

One demo home, one server and one browser for the module; each test opens its own
browser context (its own cookies) and logs in through the form as viewer, analyst or
admin (users made with the CLI). Any console error, uncaught page error or request to
another host than the server (the dashboard works offline) fails the test that caused
it; the only ones allowed are the status lines of pages the test
itself expects to be refused (403).

Every page is screenshotted (1280x800, the symbol page also at 390x844) under the
test's output, or under ``$STOCKBATCH_SCREENSHOTS`` (scripts/screenshots.sh refreshes
docs/screenshots/ that way).

Chromium: ``$STOCKBATCH_CHROMIUM`` or /usr/bin/chromium (scripts/setup-services.sh
installs it); Playwright's own browser download is not used. A missing chromium fails.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
from polars.testing import assert_frame_equal
from typer.testing import CliRunner

from stockbatch.cli import app as cli_app

AS_OF = "2023-06-30"
PASSWORDS = {
    "viewer": "viewer-pass-Br0wser!1",
    "analyst": "analyst-pass-Br0wser?2",
    "admin": "admin-pass-Br0wser#3",
}
CHROMIUM = Path(os.environ.get("STOCKBATCH_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
READY_BUDGET_MS = 1000
"""The symbol page's charts are drawn within 1 s of the navigation (demo sample)."""

pytestmark = pytest.mark.timeout(180)

_runner = CliRunner()


def sb(home: Path, *args: str, stdin: str | None = None) -> str:
    """``stockbatch ARGS`` in-process on ``home``; fails the test unless it exits 0."""
    result = _runner.invoke(cli_app, list(args), input=stdin, env={"STOCKBATCH_HOME": str(home)})
    if result.exit_code != 0:
        raise AssertionError(
            f"stockbatch {' '.join(args)} exited {result.exit_code}:\n{result.output}"
            + (f"\n{result.exception!r}" if result.exception else "")
        )
    return result.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    base: str
    home: Path
    run_id: str


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, demo_data: Path) -> Iterator[Server]:
    """The demo sample run into a fresh home, users of every role, and ``stockbatch serve``
    on a free port of 127.0.0.1 (stopped at the end of the module)."""
    home = tmp_path_factory.mktemp("browser-demo")
    sb(home, "run", "--source", "kaggle", "--path", str(demo_data), "--as-of", AS_OF, "-q")
    manifests = sorted((home / "lake" / "runs").glob("*.json"))
    assert len(manifests) == 1, manifests
    for role, password in PASSWORDS.items():
        sb(home, "users", "add", role, "--role", role, "--password-stdin", stdin=password)
    port = _free_port()
    log = home / "serve.log"
    exe = Path(sys.executable).with_name("stockbatch")
    with log.open("w") as fh:
        proc = subprocess.Popen(
            [str(exe), "serve", "--host", "127.0.0.1", "--port", str(port), "--search", "none"],
            env={**os.environ, "STOCKBATCH_HOME": str(home)},
            stdout=fh, stderr=subprocess.STDOUT,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, "stockbatch serve exited:\n" + log.read_text()[-3000:]
            try:
                if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server never answered:\n" + log.read_text()
            time.sleep(0.2)
        yield Server(base=base, home=home, run_id=manifests[0].stem)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert "Traceback" not in log.read_text(), log.read_text()[-5000:]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's chromium, headless, through Playwright (its download is not used)."""
    if not CHROMIUM.is_file() or not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"no chromium at {CHROMIUM}: the dashboard's browser test needs it. Run "
            "`bash scripts/setup-services.sh` as root (it runs apt-get install chromium), "
            "or point STOCKBATCH_CHROMIUM at a chromium binary."
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the screenshots go: $STOCKBATCH_SCREENSHOTS, else the test's output."""
    target = os.environ.get("STOCKBATCH_SCREENSHOTS")
    folder = Path(target) if target else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@dataclass
class Session:
    """One browser context of one user; collects every console error and page error."""

    page: Any
    base: str
    shots: Path
    errors: list[str] = field(default_factory=list)
    refused: set[str] = field(default_factory=set)
    """URLs the test expects to be refused: their status line in the console is allowed."""

    def goto(self, path: str, status: int = 200) -> Any:
        url = self.base + path
        if status != 200:
            self.refused.add(url)
        response = self.page.goto(url)
        assert response is not None and response.status == status, (
            f"{path}: {response.status if response else None}, expected {status}"
        )
        return response

    def charts_ready(self, name: str) -> int:
        """Wait for static/*.js to mark the page's charts drawn; the ms since navigation."""
        self.page.wait_for_function(
            "() => document.documentElement.hasAttribute('data-charts-ready')"
            " || document.documentElement.hasAttribute('data-charts-error')",
            timeout=15_000,
        )
        failed = self.page.evaluate(
            "() => document.documentElement.getAttribute('data-charts-error')"
        )
        assert failed is None, f"the charts of {name} failed: {failed}"
        ready = self.page.evaluate(
            "() => document.documentElement.getAttribute('data-charts-ready')"
        )
        assert ready == name
        return int(self.page.evaluate("() => window.SB.readyMs"))

    def shot(self, name: str) -> None:
        self.page.wait_for_load_state("networkidle")
        self.page.screenshot(path=str(self.shots / f"{name}.png"), animations="disabled")

    def check_errors(self) -> None:
        assert not self.errors, "browser console/page errors:\n" + "\n".join(self.errors)


@pytest.fixture
def open_session(browser: Any, server: Server, shots: Path) -> Iterator[Callable[..., Session]]:
    """``open_session(user=None, viewport=DESKTOP)``: a fresh context, logged in through the
    form when ``user`` is given. Fails the test on any console or page error."""
    made: list[tuple[Any, Session]] = []

    def make(user: str | None = None, viewport: dict[str, int] = DESKTOP) -> Session:
        context = browser.new_context(viewport=viewport, device_scale_factor=1)
        context.set_default_timeout(15_000)
        page = context.new_page()
        s = Session(page=page, base=server.base, shots=shots)

        def on_console(msg: Any) -> None:
            if msg.type != "error":
                return
            where = (msg.location or {}).get("url", "")
            if msg.text.startswith("Failed to load resource") and where in s.refused:
                return  # the refused page's own status line
            s.errors.append(f"console: {msg.text} ({where})")

        page.on("console", on_console)
        page.on("pageerror", lambda exc: s.errors.append(f"pageerror: {exc}"))

        def on_request(request: Any) -> None:
            # Works offline: every asset (plotly.js included) comes from the server itself.
            if not request.url.startswith((server.base + "/", "data:", "blob:")):
                s.errors.append(f"request outside the server: {request.url}")

        page.on("request", on_request)
        made.append((context, s))
        if user is not None:
            login(s, user)
        return s

    yield make
    for context, _ in made:
        context.close()
    for _, s in made:
        s.check_errors()


def login(s: Session, user: str, screenshot: bool = False) -> None:
    """The login form, as a person fills it; lands on the overview."""
    s.goto("/")  # not logged in: to the login page
    assert s.page.url.startswith(s.base + "/login")
    if screenshot:
        s.shot("login")
    s.page.fill("input[name=username]", user)
    s.page.fill("input[name=password]", PASSWORDS[user])
    with s.page.expect_navigation():
        s.page.click("form[action='/login'] button[type=submit]")
    assert s.page.url == s.base + "/", s.page.url
    assert s.page.locator(".top .who").inner_text().startswith(user)


TRACES = """(id) => document.getElementById(id).data.map(t => {
  const ys = t.type === 'candlestick' ? t.close : (t.y || t.x || []);
  return {type: t.type, name: t.name, yaxis: t.yaxis || 'y', mode: t.mode || null,
          n: ys.filter(v => v !== null && v !== undefined && Number.isFinite(Number(v))).length,
          points: ys.length};
})"""


def traces(s: Session, element_id: str) -> dict[str, dict[str, Any]]:
    """The plotly traces drawn in a graph div, by name: type, axis and points with a value."""
    found = s.page.evaluate(TRACES, element_id)
    return {t["name"]: t for t in found}


def test_viewer_logs_in_searches_and_reads_a_symbol(
    open_session: Callable[..., Session], server: Server
) -> None:
    s = open_session()
    login(s, "viewer", screenshot=True)
    s.charts_ready("overview")
    runs_chart = traces(s, "runs-chart")
    assert runs_chart["rows in"]["n"] == 1 and runs_chart["quarantined"]["n"] == 1
    assert server.run_id in s.page.locator("main").inner_text()
    s.shot("overview")

    # The search page lists instruments as you type a prefix.
    s.goto("/search")
    s.page.fill("#search-input", "AA")
    s.page.wait_for_selector("#search-results li[data-symbol='AAPL']")
    listed = s.page.locator("#search-results li[data-symbol]").evaluate_all(
        "els => els.map(e => e.getAttribute('data-symbol'))"
    )
    assert listed and all(sym.startswith("AA") or "AA" in sym for sym in listed), listed
    s.shot("search")

    # The header's autocomplete (every page but the search page): a prefix, then a pick,
    # opens the symbol page.
    s.goto("/runs")
    box = s.page.locator(".quick-search input[data-autocomplete]")
    box.fill("AAP")
    pick = s.page.locator(".quick-search .suggestions li[data-symbol='AAPL'] a")
    pick.wait_for()
    with s.page.expect_navigation():
        pick.click()
    assert s.page.url == server.base + "/symbols/AAPL"
    readies = [s.charts_ready("symbol")]
    # The budget is the page's, not the machine's: on a machine busy with other work
    # (the suite's services, an image build) one load can miss it, so up to two more
    # loads are measured and the best counts; a page that is slow every time fails.
    while min(readies) >= READY_BUDGET_MS and len(readies) < 3:
        s.goto("/symbols/AAPL")
        readies.append(s.charts_ready("symbol"))
    ready_ms = min(readies)
    print(f"\nsymbol page ready (navigation start -> charts drawn): {readies} ms")
    assert ready_ms < READY_BUDGET_MS, f"the symbol page took {readies} ms to draw its charts"

    drawn = traces(s, "symbol-chart")
    expected = {
        "OHLC": ("candlestick", "y"),
        "SMA 20": ("scatter", "y"),
        "SMA 50": ("scatter", "y"),
        "SMA 200": ("scatter", "y"),
        "BB upper 20": ("scatter", "y"),
        "Bollinger 20": ("scatter", "y"),
        "Volume": ("bar", "y2"),
        "RSI 14": ("scatter", "y3"),
        "MACD hist": ("bar", "y4"),
        "MACD": ("scatter", "y4"),
        "Signal": ("scatter", "y4"),
    }
    for name, (kind, axis) in expected.items():
        assert name in drawn, f"no {name} trace: {sorted(drawn)}"
        t = drawn[name]
        assert (t["type"], t["yaxis"]) == (kind, axis), t
        assert t["n"] > 0, f"{name} has no data point: {t}"
    one_year = drawn["OHLC"]["n"]
    assert 200 <= one_year <= 260, drawn["OHLC"]  # the default 1Y range of trading days
    assert drawn["SMA 200"]["n"] == one_year  # the 200-day line exists over the whole year
    # The RSI stays within 0..100.
    rsi = s.page.evaluate(
        "() => document.getElementById('symbol-chart').data.find(t => t.name === 'RSI 14')"
        ".y.filter(v => v !== null)"
    )
    assert rsi and all(0 <= v <= 100 for v in rsi)
    s.shot("symbol")

    # The date range selector: All draws every bar of the instrument.
    s.page.click("[data-range='All']")
    s.page.wait_for_function(
        "n => document.getElementById('symbol-chart').data[0].close.length > n", arg=one_year
    )
    meta = re.search(r"([\d,]+) bars", s.page.locator(".symbol-head .meta").inner_text())
    assert meta, "no bar count on the symbol page"
    bars = int(meta[1].replace(",", ""))
    assert traces(s, "symbol-chart")["OHLC"]["points"] == bars
    assert s.page.locator("#symbol-quarters tbody tr").count() > 0

    # The same page on a phone: charts drawn, nothing wider than the screen.
    phone = open_session("viewer", viewport=PHONE)
    phone.goto("/symbols/AAPL")
    phone.charts_ready("symbol")
    assert traces(phone, "symbol-chart")["OHLC"]["n"] > 0
    width = phone.page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the phone page scrolls sideways ({width}px)"
    phone.shot("symbol-phone")


def test_adjusted_and_raw_prices(open_session: Callable[..., Session]) -> None:
    """A source with an adjusted close (kaggle-nasdaq's AON): the toggle redraws the
    candles in the units the source recorded."""
    s = open_session("viewer")
    s.goto("/symbols/AON")
    s.charts_ready("symbol")
    s.page.click("[data-range='All']")
    closes = "() => document.getElementById('symbol-chart').data[0].close"
    adjusted = s.page.evaluate(closes)
    assert "adjusted prices" in s.page.locator("#chart-note").inner_text()
    s.page.click("[data-prices='raw']")
    s.page.wait_for_function(
        "() => document.querySelector('[data-prices=raw]').getAttribute('aria-pressed') === 'true'"
    )
    assert "raw prices" in s.page.locator("#chart-note").inner_text()
    raw = s.page.evaluate(closes)
    assert len(raw) == len(adjusted) > 0
    assert raw != adjusted  # dividends: older adjusted closes are lower


def test_analyst_explores_a_quarter_and_downloads_the_ml_table(
    open_session: Callable[..., Session], server: Server, tmp_path: Path
) -> None:
    s = open_session("analyst")
    assert s.page.locator(".top nav a[href='/quarterly']").count() == 1
    s.goto("/quarterly")
    s.charts_ready("quarterly")
    options = s.page.locator("#quarter-select option").evaluate_all("els => els.map(e => e.value)")
    # The quarter with the most symbols (a few of the demo's sources overlap in time).
    export = tmp_path / "export.parquet"
    sb(server.home, "export", "quarterly", "--out", str(export))
    expected = pl.read_parquet(export)
    per_quarter = expected.group_by("quarter").len().sort(["len", "quarter"], descending=True)
    quarter = str(per_quarter["quarter"][0])
    assert quarter in options
    with s.page.expect_navigation():
        s.page.select_option("#quarter-select", quarter)
    assert s.page.url.endswith(f"/quarterly?quarter={quarter}")
    s.charts_ready("quarterly")
    rows = s.page.locator("#quarter-table tbody tr")
    n = int(per_quarter["len"][0])
    assert rows.count() == n >= 2
    hist = traces(s, "hist-chart")
    assert hist["q_return"]["type"] == "histogram" and hist["q_return"]["n"] > 0

    # Sort by a feature, descending on the second click: the column reads in that order.
    header = s.page.locator("#quarter-table th[data-key='q_close']")
    header.click()  # numbers: largest first
    assert header.get_attribute("aria-sort") == "descending"
    col = list(s.page.locator("#quarter-table th[data-key]").evaluate_all(
        "els => els.map(e => e.getAttribute('data-key'))"
    )).index("q_close")  # fmt: skip
    cells = rows.evaluate_all(f"trs => trs.map(tr => tr.cells[{col}].title || '')")
    values = [float(v) for v in cells if v]
    assert values == sorted(values, reverse=True) and len(values) >= 2
    header.click()
    assert header.get_attribute("aria-sort") == "ascending"
    cells = rows.evaluate_all(f"trs => trs.map(tr => tr.cells[{col}].title || '')")
    assert [float(v) for v in cells if v] == sorted(values)

    # Filter by symbol: only matching rows, the histogram follows.
    symbols = expected.filter(pl.col("quarter") == quarter)["symbol"].sort().to_list()
    prefix = symbols[0][:2]
    matching = [x for x in symbols if prefix in x]
    s.page.fill("#table-filter", prefix)
    s.page.wait_for_function(
        "n => document.querySelectorAll('#quarter-table tbody tr').length === n", arg=len(matching)
    )
    shown = rows.evaluate_all("trs => trs.map(tr => tr.cells[0].textContent)")
    assert sorted(shown) == matching
    s.page.fill("#table-filter", "")
    s.page.wait_for_function(
        "n => document.querySelectorAll('#quarter-table tbody tr').length === n", arg=n
    )
    s.shot("quarterly")

    # The downloads: the whole table as `stockbatch export quarterly` writes it, and the
    # chosen quarter's rows of it.
    with s.page.expect_download() as got:
        s.page.click("#download-all-parquet")
    whole = tmp_path / "whole.parquet"
    got.value.save_as(whole)
    assert_frame_equal(pl.read_parquet(whole), expected)
    with s.page.expect_download() as got:
        s.page.click("#download-quarter-parquet")
    one = tmp_path / "one.parquet"
    got.value.save_as(one)
    assert_frame_equal(pl.read_parquet(one), expected.filter(pl.col("quarter") == quarter))
    with s.page.expect_download() as got:
        s.page.click("#download-quarter-csv")
    csv = tmp_path / "one.csv"
    got.value.save_as(csv)
    from_csv = pl.read_csv(csv, schema=expected.schema)
    assert_frame_equal(from_csv, expected.filter(pl.col("quarter") == quarter))


def test_viewer_is_refused_admin_and_analyst_pages(open_session: Callable[..., Session]) -> None:
    s = open_session("viewer")
    nav = s.page.locator(".top nav").inner_text()
    assert "Admin" not in nav and "Quarterly" not in nav
    for path, role in (
        ("/admin", "admin"),
        ("/quality/quarantine", "admin"),
        ("/quarterly", "analyst"),
    ):
        s.goto(path, status=403)
        assert s.page.locator("main h1").inner_text().startswith("Not allowed")
        assert f"needs the {role} role" in s.page.locator("main").inner_text()
    # The quality page is the viewer's, without the admin's link to the rows.
    s.goto("/quality")
    s.charts_ready("quality")
    assert s.page.locator("a[href='/quality/quarantine']").count() == 0


def test_admin_pages(open_session: Callable[..., Session], server: Server) -> None:
    s = open_session("admin")
    s.goto("/quality")
    s.charts_ready("quality")
    per_reason = traces(s, "quality-chart")
    assert per_reason and all(t["type"] == "bar" and t["n"] == 1 for t in per_reason.values())
    assert s.page.locator("#health-flags tbody tr").count() > 0
    s.shot("quality")

    s.goto("/quality/quarantine")
    rows = s.page.locator("#quarantine-rows tbody tr")
    assert rows.count() > 0
    first = rows.first.inner_text()
    assert re.search(r"\S+\.txt:\d+", first), first  # source file:line
    assert s.page.locator("#quarantine-rows tbody .reason").count() >= rows.count()
    s.shot("quarantine")

    s.goto("/runs")
    assert s.page.locator(f"a[href='/runs/{server.run_id}']").count() == 1
    s.shot("runs")
    with s.page.expect_navigation():
        s.page.click(f"a[href='/runs/{server.run_id}']")
    assert server.run_id in s.page.locator("h1").inner_text()
    assert "rows_in" in s.page.locator("main").inner_text()
    s.shot("run")

    s.goto("/admin")
    users = s.page.locator("#users tbody").inner_text()
    assert all(u in users for u in PASSWORDS)
    assert not any(p in s.page.content() for p in PASSWORDS.values())
    s.shot("admin")
