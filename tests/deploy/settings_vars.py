"""Which ``STOCKBATCH_*`` environment variables the settings tree knows.

The compose file, ``.env.example`` and the Kubernetes manifests may only set
variables that :class:`stockbatch.settings.Settings` reads: a misspelt one would be
ignored silently (``extra="ignore"``), so the deploy tests hold every one to this.
"""

from __future__ import annotations

from pydantic import BaseModel

from stockbatch.settings import Settings, secret_settings

PREFIX = "STOCKBATCH_"
DELIMITER = "__"


def known_variables() -> set[str]:
    """Every variable the settings read: each field (``STOCKBATCH_HOME``), each nested
    field (``STOCKBATCH_WAREHOUSE__URL``), each section as a whole (JSON value) and the
    ``<VARIABLE>_FILE`` form of every secret setting."""
    names: set[str] = set()
    for section, info in Settings.model_fields.items():
        names.add(f"{PREFIX}{section}".upper())
        model = info.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):
            for field in model.model_fields:
                names.add(f"{PREFIX}{section}{DELIMITER}{field}".upper())
    for section, field in secret_settings():
        names.add(f"{PREFIX}{section}{DELIMITER}{field}_FILE".upper())
    return names


def unknown_variables(names: set[str] | list[str]) -> list[str]:
    """The ``STOCKBATCH_*`` names among ``names`` that no setting reads, sorted."""
    known = known_variables()
    return sorted(n for n in names if n.upper().startswith(PREFIX) and n.upper() not in known)
