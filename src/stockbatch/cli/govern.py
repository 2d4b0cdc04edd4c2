"""Governance commands: ``quality`` (the history of every run's checks) and ``audit``."""

from __future__ import annotations
