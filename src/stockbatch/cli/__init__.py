"""The ``stockbatch`` command line (Typer).

``common`` (the app, options, settings, errors, progress), ``main`` (pipeline
commands), ``inspect`` (runs, show, quarantine, export); ``catalog``,
``govern`` (quality, audit), ``protect`` (backup, gc); ``services`` commands come
from :mod:`stockbatch.cli.services`.
"""

from __future__ import annotations

# Importing a module registers its commands.
from stockbatch.cli import (  # noqa: F401
    catalog,
    govern,
    inspect,
    main,
    orchestrate,
    protect,
    serve,
)
from stockbatch.cli.common import app


def run_app() -> None:  # pragma: no cover - console entry point
    """Console entry point."""
    app()


__all__ = ["app", "run_app"]
