"""The ``stockbatch`` command line (Typer).

``common`` (the app, options, settings, errors, progress), ``main`` (pipeline
commands), ``inspect`` (runs, show, quarantine, export); ``services`` commands
come from :mod:`stockbatch.cli.services`.
"""

from __future__ import annotations

from stockbatch.cli import inspect, main, orchestrate, serve  # noqa: F401  (registers the commands)
from stockbatch.cli.common import app


def run_app() -> None:  # pragma: no cover - console entry point
    """Console entry point."""
    app()


__all__ = ["app", "run_app"]
