"""The process stage: validate bronze into silver and compute the gold features."""

from __future__ import annotations

from stockbatch.process.stage import process, process_fingerprint

__all__ = ["process", "process_fingerprint"]
