"""Replays recorded Yahoo Finance HTTP responses to yfinance (no network).

``ReplaySession`` is a real ``requests.Session`` (yfinance accepts curl_cffi or
requests sessions) whose transport adapter answers from recordings instead of
the network: yfinance's own client code runs unchanged (cookie, crumb, retry),
and any request the replay does not know fails the test, so no test can reach
the internet. The chart recording is the real
tests/fixtures/sources/yahoo/SPY_chart_1d.json (see PROVENANCE.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
from requests.adapters import BaseAdapter

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "sources"
SPY_JSON = FIXTURES / "yahoo" / "SPY_chart_1d.json"
SPY_BYTES = SPY_JSON.read_bytes()

# Yahoo's documented answer for an unknown symbol (HTTP 404).
NOT_FOUND = (
    404,
    b'{"chart":{"result":null,"error":{"code":"Not Found",'
    b'"description":"No data found, symbol may be delisted"}}}',
)
TOO_MANY = (429, b"Too Many Requests\r\n")
SPY_OK = (200, SPY_BYTES)


class ReplayAdapter(BaseAdapter):
    """Answers yfinance's requests from recordings; each chart script plays in order,
    its last answer repeating."""

    def __init__(self, charts: dict[str, list[tuple[int, bytes]]]) -> None:
        super().__init__()
        self.charts = {symbol: list(script) for symbol, script in charts.items()}
        self.requests: list[tuple[str, dict[str, list[str]]]] = []

    def send(  # the transport hook of requests: every request of the session lands here
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: Any = True,
        cert: Any = None,
        proxies: Any = None,
    ) -> requests.Response:
        url = urlsplit(request.url or "")
        self.requests.append((url.netloc + url.path, parse_qs(url.query)))
        if url.netloc == "fc.yahoo.com":
            status, body = 404, b""  # yfinance's cookie fetch; the real one also 404s
        elif url.path == "/v1/test/getcrumb":
            status, body = 200, b"replay-crumb"
        elif url.netloc == "guce.yahoo.com":
            status, body = 200, b"<html><body>no consent form</body></html>"
        elif url.path.startswith("/v8/finance/chart/"):
            script = self.charts[url.path.rsplit("/", 1)[1]]
            status, body = script.pop(0) if len(script) > 1 else script[0]
        else:
            raise AssertionError(f"replay: unexpected request {request.method} {request.url}")
        response = requests.Response()
        response.status_code = status
        response._content = body
        response.url = request.url or ""
        response.request = request
        response.encoding = "utf-8"
        return response

    def close(self) -> None:
        pass

    def chart_requests(self) -> list[dict[str, list[str]]]:
        return [query for where, query in self.requests if "/v8/finance/chart/" in where]


class ReplaySession(requests.Session):
    def __init__(self, charts: dict[str, list[tuple[int, bytes]]]) -> None:
        super().__init__()
        self.replay = ReplayAdapter(charts)
        self.mount("https://", self.replay)
        self.mount("http://", self.replay)
