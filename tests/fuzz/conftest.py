"""Prints how many inputs each fuzz test tried (``fuzz.budget.COUNTS``) at session end."""

from __future__ import annotations

from _pytest.terminal import TerminalReporter

from fuzz.budget import COUNTS, examples


def pytest_terminal_summary(terminalreporter: TerminalReporter) -> None:
    if not COUNTS:
        return
    tr = terminalreporter
    tr.section(f"fuzz: inputs tried (budget {examples()} per test)")
    for name, n in sorted(COUNTS.items()):
        tr.write_line(f"{n:>9,}  {name}")
    tr.write_line(f"{sum(COUNTS.values()):>9,}  total")
