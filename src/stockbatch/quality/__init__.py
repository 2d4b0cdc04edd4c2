"""Validation bronze -> silver (FEATURES.md sections 4 and 5).

The rules are declared once (:mod:`.rules`) and compiled per engine:
:mod:`.polars` (the embedded default, re-exported here) and :mod:`.spark`
(imported only when asked for: PySpark is optional).
"""

from __future__ import annotations

from stockbatch.quality.polars import (
    BRONZE_SCHEMA,
    QUARANTINE_SCHEMA,
    SILVER_SCHEMA,
    ValidationResult,
    validate,
)
from stockbatch.quality.rules import (
    DATE_FORMAT,
    EARLIEST_DATE,
    JUMP_FACTOR,
    RULES,
    Rule,
    ValidationInvariantError,
)

__all__ = [
    "BRONZE_SCHEMA",
    "DATE_FORMAT",
    "EARLIEST_DATE",
    "JUMP_FACTOR",
    "QUARANTINE_SCHEMA",
    "RULES",
    "SILVER_SCHEMA",
    "Rule",
    "ValidationInvariantError",
    "ValidationResult",
    "validate",
]
