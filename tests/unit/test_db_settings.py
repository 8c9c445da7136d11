"""Where the orchestrator's database is: SLUICE_DATABASE_URL, else a SQLite file in the run directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common.db import normalise_url
from services.common.settings import Settings
from services.supervisor.stack import settings_env


def test_default_is_a_sqlite_file_in_the_run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLUICE_DATABASE_URL", raising=False)
    settings = Settings.from_env(run_dir=tmp_path)
    assert settings.database_url is None
    assert settings.db_url == f"sqlite:///{tmp_path / 'sluice.db'}"
    assert settings.replace(run_dir=tmp_path / "other").db_url.endswith("/other/sluice.db")


def test_env_url_wins_and_reaches_the_orchestrators_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLUICE_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    settings = Settings.from_env()
    assert settings.db_url == "postgresql://postgres@127.0.0.1:5432/test"
    assert settings_env(settings)["SLUICE_DATABASE_URL"] == settings.db_url


@pytest.mark.parametrize(("url", "expected"), [
    ("postgresql://u:p@h:5432/db", "postgresql+psycopg://u:p@h:5432/db"),
    ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
    ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
])
def test_postgresql_urls_use_psycopg_3(url: str, expected: str) -> None:
    assert normalise_url(url) == expected
