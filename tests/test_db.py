"""The embedded store's migrations carry an older database forward without losing a row."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from control import db as db_module
from control.auth import create_officer, login
from control.db import MIGRATIONS, Database


def test_a_first_version_database_migrates_with_its_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "control.sqlite3"
    old = Database(path)
    monkeypatch.setattr(db_module, "MIGRATIONS", MIGRATIONS[:1])  # what the first release made
    old.run_sync(lambda c: create_officer(c, "li", "correct horse battery", "officer", "b1"))
    old.run_sync(
        lambda c: c.execute(
            "INSERT INTO cases (kind, title, brigade, created_by, created_at) "
            "VALUES ('accident', 't', 'b1', 1, 'now')"
        )
    )
    old.close_sync()
    monkeypatch.undo()
    new = Database(path)
    version = new.run_sync(
        lambda c: c.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
    )
    assert version == len(MIGRATIONS)
    # the officer survived the table rebuild, still logs in, and observers are allowed now
    assert new.run_sync(lambda c: login(c, "li", "correct horse battery")) is not None
    assert (
        new.run_sync(lambda c: create_officer(c, "guan", "correct horse battery", "observer", "b1"))
        == 2
    )
    case = new.run_sync(lambda c: dict(c.execute("SELECT * FROM cases").fetchone()))
    assert case["created_by"] == 1 and case["status"] == "open"
    assert new.run_sync(lambda c: c.execute("PRAGMA foreign_keys").fetchone()[0]) == 1
    new.close_sync()
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA foreign_key_check").fetchall() == []
