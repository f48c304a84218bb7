"""Migrations (stream_worker.migrate) against a real PostgreSQL: from empty, re-run as a no-op, an edited
applied migration refused, and two runs at once serialized."""

import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
from stream_worker.migrate import MIGRATIONS, MigrationError, migrate, migrations

from tests.functions.conftest import FUNCTIONS
from tests.postgres import NewDatabase


def tables(conninfo: str) -> set[str]:
    with psycopg.connect(conninfo) as connection:
        rows = connection.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
    return {name for (name,) in rows}


def recorded(conninfo: str) -> list[tuple[str, str, str]]:
    with psycopg.connect(conninfo) as connection:
        rows = connection.execute("SELECT version, name, sha256 FROM schema_migrations ORDER BY version")
        return [(version, name, sha256) for version, name, sha256 in rows]


def copy_of_the_migrations(directory: Path) -> Path:
    shutil.copytree(MIGRATIONS, directory)
    return directory


def test_an_empty_database_gets_every_migration_once_and_a_rerun_changes_nothing(
    new_database: NewDatabase,
) -> None:
    conninfo = new_database(migrated=False).conninfo()

    assert migrate(conninfo) == [migration.version for migration in migrations()] == ["0001"]
    assert {
        "devices",
        "hourly_rollups",
        "counted_readings",
        "archive_batches",
        "schema_migrations",
    } <= tables(conninfo)
    after_first = recorded(conninfo)
    assert [(version, name) for version, name, _ in after_first] == [("0001", "registry_and_rollups")]
    assert after_first[0][2] == migrations()[0].sha256

    assert migrate(conninfo) == []
    assert recorded(conninfo) == after_first


def test_an_applied_migration_that_changed_is_refused_and_nothing_is_applied(
    new_database: NewDatabase, tmp_path: Path
) -> None:
    conninfo = new_database(migrated=False).conninfo()
    directory = copy_of_the_migrations(tmp_path / "migrations")
    migrate(conninfo, directory)
    (directory / "0002_more.sql").write_text("CREATE TABLE more (id int);")
    edited = directory / "0001_registry_and_rollups.sql"
    edited.write_text(edited.read_text() + "\n-- an afterthought\n")

    with pytest.raises(MigrationError, match=r"0001_registry_and_rollups\.sql changed after being applied"):
        migrate(conninfo, directory)

    assert "more" not in tables(conninfo)
    assert [version for version, _, _ in recorded(conninfo)] == ["0001"]


def test_a_migration_that_fails_leaves_the_ones_before_it_applied_and_itself_not(
    new_database: NewDatabase, tmp_path: Path
) -> None:
    conninfo = new_database(migrated=False).conninfo()
    directory = copy_of_the_migrations(tmp_path / "migrations")
    (directory / "0002_broken.sql").write_text("CREATE TABLE half (id int); SELECT no_such_function();")

    with pytest.raises(psycopg.errors.UndefinedFunction):
        migrate(conninfo, directory)

    assert [version for version, _, _ in recorded(conninfo)] == ["0001"]
    assert "half" not in tables(conninfo)


def test_two_runs_at_once_apply_each_migration_once(new_database: NewDatabase, tmp_path: Path) -> None:
    conninfo = new_database(migrated=False).conninfo()
    directory = copy_of_the_migrations(tmp_path / "migrations")
    # Long enough for the other run to be waiting for the lock; without it, it would apply 0001 again
    # and fail on the existing tables.
    (directory / "0002_slow.sql").write_text("SELECT pg_sleep(1);")

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: migrate(conninfo, directory), range(2)))

    assert sorted(results) == [[], ["0001", "0002"]]


def test_the_command_migrates_from_the_environment(new_database: NewDatabase) -> None:
    database = new_database(migrated=False)
    environment = {"PATH": os.environ["PATH"], "PYTHONDONTWRITEBYTECODE": "1", **database.admin_environment()}

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "stream_worker.migrate"],
            cwd=FUNCTIONS,
            env=environment,
            capture_output=True,
            text=True,
            check=False,
        )

    first, second = run(), run()
    assert (first.returncode, first.stdout) == (0, "Applied 0001\n"), first.stderr
    assert (second.returncode, second.stdout) == (0, "The schema is up to date\n"), second.stderr

    environment.pop("DATABASE_ADMIN_PASSWORD")
    refused = run()
    assert refused.returncode == 1
    assert "DATABASE_ADMIN_PASSWORD is required" in refused.stderr
