"""The data catalog command: ``catalog``."""

from __future__ import annotations
