"""The error a user can act on, shared by every stage."""

from __future__ import annotations


class PipelineError(Exception):
    """A failure the user can act on; the message says what to do."""
