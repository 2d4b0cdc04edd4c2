"""``python -m stockbatch.cli``: the same as the ``stockbatch`` command."""

from stockbatch.cli.main import main

main()
