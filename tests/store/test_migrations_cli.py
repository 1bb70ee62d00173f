"""``newsdigest db upgrade`` and ``serve``'s refusal to start on a database that is behind."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from service.cli import app


def test_serve_refuses_an_unmigrated_database_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEWSDIGEST_DATABASE_URL", f"sqlite:///{tmp_path}/nd.db")

    result = CliRunner().invoke(app, ["serve", "--port", "1"])

    assert result.exit_code == 4
    assert "database is not migrated: run `newsdigest db upgrade`" in result.output


def test_db_upgrade_migrates_to_head(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sqlite3

    monkeypatch.setenv("NEWSDIGEST_DATABASE_URL", f"sqlite:///{tmp_path}/nd.db")

    result = CliRunner().invoke(app, ["db", "upgrade"])

    assert result.exit_code == 0, result.output
    assert "database at head" in result.output
    with sqlite3.connect(tmp_path / "nd.db") as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"articles", "extractions", "jobs", "digests", "idempotency_keys", "alembic_version"} <= tables
