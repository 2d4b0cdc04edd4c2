"""Property-based fuzzing of every API operation with schemathesis, from the app's own
OpenAPI document (``/api/v1/openapi.json``), on the demo warehouse.

Each case (valid and invalid parameters: schemathesis's positive and negative modes)
is sent with an admin's bearer token, so every operation, bulk downloads included, is
reachable; its answer must not be a server error, must match the documented schema
for its status, use a documented status and a documented content type.

Bounded and reproducible: ``max_examples`` per operation, no deadline (the shared CI
machine is slow), ``derandomize`` (the same cases on every run). The cases are counted
per operation; the last test asserts enough ran and reports the total on the terminal
and in ``fuzz-cases.json`` of its temporary folder.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from .conftest import Demo, bearer

MAX_EXAMPLES = 100
"""Cases per operation (hypothesis stops earlier where the parameters allow fewer)."""

CHECKS = [
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
    content_type_conformance,
]

CASES: Counter[str] = Counter()
"""Cases run per operation label, e.g. ``GET /api/v1/daily``."""


@pytest.fixture(scope="module")
def api_schema(app: FastAPI, demo: Demo) -> Any:
    """The OpenAPI document as the app serves it (it needs a token, as any API call)."""
    return schemathesis.openapi.from_asgi(
        "/api/v1/openapi.json", app, headers=bearer(demo.tokens["admin"])
    )


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    database=None,
)
def test_every_operation(case: Any, demo: Demo) -> None:
    case.call_and_validate(headers=bearer(demo.tokens["admin"]), checks=CHECKS)
    CASES[case.operation.label] += 1


def test_fuzzing_ran_every_operation(
    app: FastAPI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """After ``test_every_operation``: every documented operation got cases, and enough."""
    documented = {
        f"{method.upper()} {path}" for path, ops in app.openapi()["paths"].items() for method in ops
    }
    total = sum(CASES.values())
    report = {
        "total": total,
        "per_operation": dict(sorted(CASES.items())),
        "checks": [c.__name__ for c in CHECKS],
    }
    (tmp_path / "fuzz-cases.json").write_text(json.dumps(report, indent=2))
    with capsys.disabled():  # shown with or without -s
        print(
            f"\nschemathesis: {total} cases over {len(CASES)} operations "
            f"({', '.join(report['checks'])}); report {tmp_path / 'fuzz-cases.json'}"
        )
    assert set(CASES) == documented, f"operations without cases: {documented - set(CASES)}"
    assert total >= 40 * len(documented), report
