"""``$STOCKBATCH_HOME/services.json``: where the running local services listen.

``stockbatch services up`` writes one entry per service it started, for example::

    {"kafka": {"bootstrap_servers": "127.0.0.1:40123", "pid": 4242,
               "security_protocol": "PLAINTEXT", ...}}

and ``services down`` removes it, so every later command run with the same
``STOCKBATCH_HOME`` finds the services without configuration. Explicit settings
always win over what is recorded here (see
:func:`stockbatch.services.kafka.effective_kafka_settings`). The file may hold
the local broker's generated passwords, so it is written owner-readable only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from stockbatch.services.base import ServiceError, file_lock, write_private

FILE_NAME = "services.json"


def services_file(home: Path) -> Path:
    """Path of the endpoints file under ``home``."""
    return Path(home) / FILE_NAME


def _lock_file(home: Path) -> Path:
    # A separate lock file: services.json itself is replaced atomically (a new inode).
    return Path(home) / f".{FILE_NAME}.lock"


def recorded_endpoints(home: Path) -> dict[str, dict[str, Any]]:
    """Every recorded service endpoint under ``home`` ({} when none is recorded)."""
    path = services_file(home)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    try:
        data = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as exc:
        raise ServiceError(
            f"{path} is not valid JSON ({exc}); delete it and run `stockbatch services up` again"
        ) from exc
    if not isinstance(data, dict):
        raise ServiceError(f"{path} must hold a JSON object, found {type(data).__name__}")
    return data


def record_endpoint(home: Path, name: str, endpoint: dict[str, Any]) -> None:
    """Record (or replace) the endpoint of service ``name``."""
    path = services_file(home)
    with file_lock(_lock_file(home)):
        data = recorded_endpoints(home)
        data[name] = endpoint
        write_private(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def forget_endpoint(home: Path, name: str) -> None:
    """Remove the entry of service ``name``; the file goes when it is empty."""
    path = services_file(home)
    if not path.exists():
        return
    with file_lock(_lock_file(home)):
        data = recorded_endpoints(home)
        if name not in data:
            return
        del data[name]
        if data:
            write_private(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
        else:
            path.unlink(missing_ok=True)
