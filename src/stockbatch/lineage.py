"""OpenLineage run events of the stages (START / COMPLETE / FAIL)."""

from __future__ import annotations
