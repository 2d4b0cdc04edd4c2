"""Fixtures shared by every test layer."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
DEMO_DATA = REPO / "data" / "demo" / "kaggle"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared real-data folder (Kaggle samples, Yahoo response).

    Its location comes from STOCKBATCH_SHARED_DATA (scripts/test.sh sets it);
    a run without it fails loudly instead of silently skipping the real-data tests.
    """
    value = os.environ.get("STOCKBATCH_SHARED_DATA")
    if not value:
        pytest.fail(
            "STOCKBATCH_SHARED_DATA is not set: point it at the shared data/ folder "
            "(scripts/test.sh does this) so the real-data tests can run."
        )
    path = Path(value)
    if not (path / "kaggle").is_dir():
        pytest.fail(f"STOCKBATCH_SHARED_DATA={path} has no kaggle/ folder")
    return path


@pytest.fixture(scope="session")
def huge_sample(shared_data: Path) -> Path:
    """The 10% sample of the Kaggle Huge Stock Market Dataset."""
    return shared_data / "kaggle" / "huge-stock-market-sample"


@pytest.fixture(scope="session")
def demo_data() -> Path:
    """The small CC0 demo sample shipped in the repository."""
    return DEMO_DATA


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    """One local SparkSession (``local[2]``) for the whole test run, stopped at the end.

    Started lazily by the first test that asks for it (only ``spark``-marked tests
    do); a missing PySpark or Java fails that test with what to install.
    """
    from support.spark import start_test_session

    session: Any = start_test_session()
    yield session
    session.stop()


# ----------------------------------------------------------------------------- workers
# scripts/test.sh runs the suite on two pytest-xdist workers (``--dist loadgroup``). Each
# worker has its own session, so a session service (a Kafka broker, a PostgreSQL server,
# a search node, a SparkSession) is started by every worker that runs a test needing it.
# Every module that needs one of these services goes to that service's group (one
# worker runs the whole group), so each is started once per run; any other module is a
# group of its own (its module fixtures run once). The first matching family wins.
SERVICE_GROUPS: dict[str, frozenset[str]] = {
    "storage": frozenset({"pg", "opensearch_node", "elasticsearch_node", "search_node"}),
    "kafka": frozenset({"kafka_broker", "kafka_broker_insecure"}),
    "spark": frozenset({"spark", "spark_cluster"}),
}


def worker_group(fixtures: set[str], module: str) -> str:
    """The xdist group of a module whose tests use ``fixtures``."""
    for group, names in SERVICE_GROUPS.items():
        if fixtures & names:
            return group
    return module


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    by_module: dict[str, set[str]] = {}
    for item in items:
        by_module.setdefault(item.nodeid.split("::")[0], set()).update(
            getattr(item, "fixturenames", ())
        )
    for item in items:
        module = item.nodeid.split("::")[0]
        item.add_marker(pytest.mark.xdist_group(worker_group(by_module[module], module)))
