"""The process stage: validate bronze into silver and compute the gold features.

:mod:`.stage` is the entry point; :mod:`.plan` and :mod:`.incremental` the
incremental update, :mod:`.full` the full rebuild, :mod:`.state` what a run
leaves for the next, :mod:`.engines` the feature engine (Polars or Spark),
:mod:`.spark_job` the whole-lake Spark application. Design notes:
docs/design/process.md.
"""

from __future__ import annotations

from stockbatch.process.stage import process, process_fingerprint

__all__ = ["process", "process_fingerprint"]
