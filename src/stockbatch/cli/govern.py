"""Governance commands: ``catalog``, ``quality``, ``audit``."""

from __future__ import annotations
