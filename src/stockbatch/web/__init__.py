"""The dashboard's assets: Jinja2 templates and its own CSS/JS (no Python logic).

The pages that render them are routes of the API app (``stockbatch.api.pages``);
plotly.js is served from the installed ``plotly`` package, never from a CDN.
"""

from __future__ import annotations

from pathlib import Path

WEB_DIR = Path(__file__).resolve().parent
TEMPLATES_DIR = WEB_DIR / "templates"
"""Jinja2 templates, one per page (``_macros.html``: shared pieces)."""
STATIC_DIR = WEB_DIR / "static"
"""Served under ``/static``: app.css, one script per page, favicon."""
