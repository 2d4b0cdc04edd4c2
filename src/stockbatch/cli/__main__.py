"""``python -m stockbatch.cli``: the same as the ``stockbatch`` command."""

from stockbatch.cli import run_app

run_app()
