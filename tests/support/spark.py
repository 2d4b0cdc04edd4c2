"""The one SparkSession of a test run (``local[2]``, small shuffles, UI off)."""

from __future__ import annotations

import pytest


def start_test_session() -> object:
    """Start (or reuse) the shared local test session; fail, never skip, without Spark."""
    try:
        import pyspark  # noqa: F401

        from stockbatch.process.spark_session import spark_session
    except ImportError as e:  # pragma: no cover - depends on the environment
        pytest.fail(
            f"PySpark is not importable ({e}): install the `spark` extra "
            "(pinned in requirements.lock; scripts/setup.sh does it)"
        )
    try:
        return spark_session(
            "local[2]",
            "stockbatch-tests",
            conf={"spark.sql.shuffle.partitions": "4", "spark.default.parallelism": "2"},
        )
    except RuntimeError as e:
        pytest.fail(str(e))
