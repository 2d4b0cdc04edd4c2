"""The ``stockbatch`` command line (Typer): pipeline commands and ``services``."""

from __future__ import annotations

from stockbatch.cli.main import app, main

__all__ = ["app", "main"]
