"""The CLI's audit log: every command that reads or changes data leaves an entry (who,
what, when, parameters masked, outcome), failures too; ``stockbatch audit`` merges it
with the warehouse's audit_log; no password given to a command ever reaches it.

Real commands (in-process CLI) on a temporary home with a small run of the demo sample.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import pwd
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from stockbatch.cli import app
from stockbatch.governance import audit
from stockbatch.settings import MASK

runner = CliRunner()

PASSWORD = "pw-Zq81!audit-secret"
"""A user's password, given on stdin: never in the audit."""
ENV_PASSWORD = "Kx7-env-warehouse-pass"
"""A warehouse password given through the environment: never in the audit."""


def sb(home: Path, *args: str, stdin: str | None = None, **env: str) -> tuple[int, str]:
    res = runner.invoke(app, list(args), input=stdin, env={"STOCKBATCH_HOME": str(home), **env})
    return res.exit_code, res.output


def entries(home: Path) -> list[dict[str, Any]]:
    return audit.read_cli(home)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, demo_data: Path) -> Path:
    """One run of two demo files, a user and a token, a read, and commands that fail."""
    root = tmp_path_factory.mktemp("audit")
    src = root / "in"
    src.mkdir()
    shutil.copy(demo_data / "huge" / "btu.us.txt", src)
    h = root / "home"
    assert sb(h, "run", "--path", str(src), "--as-of", "2023-06-30", "-q")[0] == 0
    assert sb(h, "runs", "--limit", "1")[0] == 0
    add = ("users", "add", "alice", "--role", "viewer", "--password-stdin")
    code, out = sb(h, *add, stdin=PASSWORD)
    assert code == 0, out
    assert sb(h, "tokens", "create", "alice")[0] == 0
    assert sb(h, "show", "NOSUCH")[0] == 1  # fails: the symbol is not in the warehouse
    assert sb(h, "runs", "--limit", "many")[0] == 2  # a usage error
    pg = f"postgresql://loader:{ENV_PASSWORD}@127.0.0.1:9/stockbatch?connect_timeout=1"
    code, out = sb(h, "show", "BTU", "--warehouse", "postgresql", STOCKBATCH_WAREHOUSE__URL=pg)
    assert code == 1 and ENV_PASSWORD not in out  # the warehouse cannot be reached
    # A secret pasted as an argument, with the same secret in a secret-named variable.
    assert sb(h, "show", ENV_PASSWORD, PGPASSWORD=ENV_PASSWORD)[0] == 1
    return h


def test_every_command_leaves_an_entry_with_its_outcome(home: Path) -> None:
    found = entries(home)
    actions = [e["action"] for e in found]
    assert actions == [
        "run", "runs", "users add", "tokens create", "show", "runs", "show", "show",
    ]  # fmt: skip
    user = pwd.getpwuid(os.geteuid()).pw_name
    for e in found:
        assert e["actor"] == user and e["detail"]["via"] == "cli" and e["source"] == "cli"
        assert dt.datetime.fromisoformat(e["at"]).tzinfo is not None
        assert e["detail"]["ms"] >= 0
    run, runs, add, token, missing, usage, down, pasted = (e["detail"] for e in found)
    assert run["outcome"] == "ok" and run["exit_code"] == 0
    assert run["params"]["as_of"] == "2023-06-30" and run["params"]["quiet"] is True
    assert runs["params"] == {"limit": 1}
    assert add["params"] == {"name": "alice", "role": "viewer", "password_stdin": True}
    assert token["params"] == {"name": "alice"} or token["params"].get("user") == "alice"
    assert missing["outcome"] == "error" and missing["exit_code"] == 1
    assert "NOSUCH" in missing["message"]
    assert usage["outcome"] == "usage error" and usage["exit_code"] == 2
    assert usage["error"] in ("BadParameter", "UsageError")
    assert down["exit_code"] == 1 and down["params"]["warehouse"] == "postgresql"
    assert down["error"] == "WarehouseUnavailable"
    assert pasted["params"]["symbol"] == MASK


def test_no_password_reaches_the_audit(home: Path) -> None:
    raw = audit.cli_audit_path(home).read_text()
    assert PASSWORD not in raw and ENV_PASSWORD not in raw
    assert stat.S_IMODE(audit.cli_audit_path(home).stat().st_mode) == 0o600
    code, out = sb(home, "audit", "--json")
    assert code == 0 and PASSWORD not in out and ENV_PASSWORD not in out


def test_parameters_named_like_a_secret_are_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STOCKBATCH_API__SESSION_SECRET", "s3ssion-secret-value")
    got = audit.clean_params(
        {
            "password": "hunter22",
            "api_key": "k-123456",
            "password_stdin": True,  # a flag: says how, not what
            "url": "postgresql://u:topsecret@db/x",
            "note": "with s3ssion-secret-value inside",
            "path": Path("/data/in"),
            "conf": '{"source": "kaggle", "db_password": "hunter22"}',
        }
    )
    assert got == {
        "password": MASK,
        "api_key": MASK,
        "password_stdin": True,
        "url": f"postgresql://u:{MASK}@db/x",
        "note": f"with {MASK} inside",
        "path": "/data/in",
        "conf": '{"source": "kaggle", "db_password": "***"}',
    }


def test_audit_command_merges_cli_and_warehouse(home: Path) -> None:
    today = dt.datetime.now(dt.UTC).date().isoformat()
    code, out = sb(home, "audit", "--since", today, "--json")
    assert code == 0, out
    merged = json.loads(out)
    sources = {e["source"] for e in merged}
    assert sources == {"cli", "warehouse"}  # the run is recorded in the warehouse too
    cli = [e for e in merged if e["source"] == "cli"]
    assert [e["action"] for e in cli][:2] == ["run", "runs"]
    times = [e["at"] for e in merged]
    assert times == sorted(times)  # merged by time
    # The table shows the same, and the audit command audits itself (after it ran).
    code, out = sb(home, "audit", "--since", today)
    assert code == 0 and "users add" in out and "usage error" in out
    assert entries(home)[-1]["action"] == "audit"
    tomorrow = (dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1)).isoformat()
    code, out = sb(home, "audit", "--since", tomorrow)
    assert code == 0 and "no audit entries since" in out


def test_audit_actor_filter(home: Path) -> None:
    code, out = sb(home, "audit", "--actor", "nobody-such", "--json")
    assert code == 0 and json.loads(out) == []
    user = pwd.getpwuid(os.geteuid()).pw_name
    code, out = sb(home, "audit", "--actor", user, "--json")
    assert code == 0 and {e["actor"] for e in json.loads(out) if e["source"] == "cli"} == {user}


def test_no_warehouse_yet_still_audits(tmp_path: Path) -> None:
    """A home without a warehouse: the command is recorded, and `audit` reads the file
    without creating an empty warehouse."""
    home = tmp_path / "home"
    code, out = sb(home, "quality")
    assert code == 0, out
    code, out = sb(home, "audit", "--json")
    assert code == 0 and [e["action"] for e in json.loads(out)] == ["quality"]
    assert not (home / "warehouse.db").exists()


def test_help_and_a_failure_without_a_home_leave_nothing(tmp_path: Path) -> None:
    home = tmp_path / "none"
    assert sb(home, "run", "--help")[0] == 0
    assert sb(home, "runs", "--limit", "x")[0] == 2
    assert not home.exists()


def test_the_actor_is_the_account_not_what_the_environment_claims(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert sb(home, "quality", USER="mallory", LOGNAME="mallory")[0] == 0
    [entry] = entries(home)
    assert entry["actor"] == pwd.getpwuid(os.geteuid()).pw_name != "mallory"
    assert entry["detail"]["login"] == "mallory"  # recorded, as a claim
