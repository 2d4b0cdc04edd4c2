"""Secrets from files (``<VARIABLE>_FILE``, the Docker secrets convention): every secret
setting, the errors that name the variable, and no secret in ``Settings.safe_dump()``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from stockbatch.settings import SecretFileError, Settings, secret_settings

PASSWORD = "Kn0wn-s3cret-7f3a9"
SECRET_FIELDS = [
    ("search", "password"),
    ("search", "api_key"),
    ("kafka", "sasl_password"),
    ("api", "session_secret"),
    ("airflow", "password"),
    ("lineage", "api_key"),
    ("warehouse", "url"),
    ("warehouse", "owner_url"),
    ("warehouse", "reader_url"),
    ("api", "auth_url"),
]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No STOCKBATCH_* variable of the caller's shell leaks into these tests."""
    import os

    for name in list(os.environ):
        if name.upper().startswith("STOCKBATCH_"):
            monkeypatch.delenv(name)


def _value(section: str, name: str) -> str:
    if name.endswith("url"):
        return f"postgresql+psycopg://stockbatch_loader:{PASSWORD}@127.0.0.1:5432/stockbatch"
    return PASSWORD


def _variable(section: str, name: str) -> str:
    return f"STOCKBATCH_{section.upper()}__{name.upper()}"


def test_every_secret_setting_is_covered() -> None:
    assert sorted(secret_settings()) == sorted(SECRET_FIELDS)


@pytest.mark.parametrize(("section", "name"), SECRET_FIELDS)
def test_each_secret_comes_from_its_file(
    section: str, name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "secret"
    secret.write_text(_value(section, name) + "\n")  # as `echo x > file` writes it
    monkeypatch.setenv(f"{_variable(section, name)}_FILE", str(secret))
    value = getattr(getattr(Settings(), section), name)
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    assert value == _value(section, name)  # the final newline is dropped, nothing else


def test_only_the_final_newline_is_dropped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "secret"
    secret.write_text(" two words \n\n")
    monkeypatch.setenv("STOCKBATCH_SEARCH__PASSWORD_FILE", str(secret))
    password = Settings().search.password
    assert password is not None and password.get_secret_value() == " two words \n"


def test_file_secrets_merge_with_other_variables_of_their_section(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "wh_url"
    secret.write_text(_value("warehouse", "url"))
    monkeypatch.setenv("STOCKBATCH_WAREHOUSE__URL_FILE", str(secret))
    monkeypatch.setenv("STOCKBATCH_WAREHOUSE__KIND", "postgresql")
    s = Settings()
    assert (s.warehouse.kind, s.warehouse.url) == ("postgresql", _value("warehouse", "url"))


def test_an_unreadable_file_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "nope"
    monkeypatch.setenv("STOCKBATCH_KAFKA__SASL_PASSWORD_FILE", str(missing))
    with pytest.raises(SecretFileError) as err:
        Settings()
    assert str(err.value) == (
        f"STOCKBATCH_KAFKA__SASL_PASSWORD_FILE={missing}: cannot read the file "
        "(No such file or directory)"
    )
    monkeypatch.setenv("STOCKBATCH_KAFKA__SASL_PASSWORD_FILE", str(tmp_path))  # a folder
    with pytest.raises(
        SecretFileError, match=r"STOCKBATCH_KAFKA__SASL_PASSWORD_FILE=.*cannot read"
    ):
        Settings()


def test_an_empty_file_and_two_sources_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    monkeypatch.setenv("STOCKBATCH_AIRFLOW__PASSWORD_FILE", str(empty))
    with pytest.raises(SecretFileError, match=r"STOCKBATCH_AIRFLOW__PASSWORD_FILE=.*empty"):
        Settings()
    empty.write_text(PASSWORD)
    monkeypatch.setenv("STOCKBATCH_AIRFLOW__PASSWORD", "other")
    with pytest.raises(
        SecretFileError,
        match="both STOCKBATCH_AIRFLOW__PASSWORD and STOCKBATCH_AIRFLOW__PASSWORD_FILE",
    ):
        Settings()


def test_cli_reports_the_variable_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stockbatch.cli import app

    missing = tmp_path / "gone"
    monkeypatch.setenv("STOCKBATCH_WAREHOUSE__URL_FILE", str(missing))
    result = CliRunner().invoke(app, ["runs", "--home", str(tmp_path)])
    assert result.exit_code == 2
    assert f"STOCKBATCH_WAREHOUSE__URL_FILE={missing}: cannot read the file" in " ".join(
        result.output.split()
    )


def test_secrets_from_files_never_reach_safe_dump(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for section, name in SECRET_FIELDS:
        secret = tmp_path / f"{section}.{name}"
        secret.write_text(_value(section, name) + "\n")
        monkeypatch.setenv(f"{_variable(section, name)}_FILE", str(secret))
    s = Settings()
    assert s.warehouse.url == _value("warehouse", "url")  # read, so the check below means something
    dumped = json.dumps(s.safe_dump())
    assert PASSWORD not in dumped
    assert PASSWORD not in repr(s) and PASSWORD not in str(s)  # tracebacks, debug prints
