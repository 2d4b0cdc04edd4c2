"""Protection commands: ``backup create|verify|restore`` and ``gc``."""

from __future__ import annotations
