"""`python -m stream_worker.migrate`: brings the database's schema up to date.

Applies migrations/NNNN_<name>.sql in order, each in its own transaction, and records each in
schema_migrations (version, name, sha256, applied_at). Runs are serialized by a PostgreSQL advisory lock, so
that tasks starting together (the worker's init container in every task of a deployment, an admin task) apply
each migration once; a re-run applies nothing. A migration is never edited once applied: a file whose
checksum differs from the applied one's is refused, before anything is applied.

Connects as the admin user: DATABASE_HOST, DATABASE_PORT, DATABASE_NAME, DATABASE_ADMIN_USER,
DATABASE_ADMIN_PASSWORD, over TLS verified against the RDS CA bundle unless DATABASE_TLS is false.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg.conninfo import make_conninfo
from readings.rds import DatabaseSettings
from stream_worker.database import connection_kwargs

MIGRATIONS = Path(__file__).parent / "migrations"
FILE_NAME = re.compile(r"([0-9]{4})_([a-z0-9_]+)\.sql")
# The advisory lock's key: any number, the same in every run.
LOCK_KEY = 140_001
CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    text        PRIMARY KEY,
    name       text        NOT NULL,
    sha256     text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


class MigrationError(Exception):
    pass


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    sql: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def migrations(directory: Path = MIGRATIONS) -> list[Migration]:
    """The directory's migrations, in version order; raises MigrationError for a file named otherwise or a
    version used twice."""
    found: dict[str, Migration] = {}
    for path in sorted(directory.iterdir()):
        match = FILE_NAME.fullmatch(path.name)
        if not match:
            raise MigrationError(f"{path.name}: a migration is named NNNN_<lowercase name>.sql")
        version, name = match.groups()
        if version in found:
            raise MigrationError(f"{path.name}: version {version} is {found[version].name} already")
        found[version] = Migration(version, name, path.read_text())
    return [found[version] for version in sorted(found)]


def migrate(conninfo: str, directory: Path = MIGRATIONS) -> list[str]:
    """Applies the migrations not applied yet, in order; returns their versions. Raises MigrationError if an
    applied migration's file has changed (nothing is applied then)."""
    wanted = migrations(directory)
    applied_now = []
    with psycopg.connect(conninfo, autocommit=True) as connection:
        # Held by the session until it ends: a run that dies releases it.
        connection.execute("SELECT pg_advisory_lock(%s)", [LOCK_KEY])
        connection.execute(CREATE_TABLE)
        applied: dict[str, str] = dict(
            connection.execute("SELECT version, sha256 FROM schema_migrations").fetchall()
        )
        # Versions applied but unknown here are a newer release's (an older task starting during a
        # deployment): they are left alone.
        changed = [m for m in wanted if m.version in applied and applied[m.version] != m.sha256]
        if changed:
            names = ", ".join(f"{m.version}_{m.name}.sql" for m in changed)
            raise MigrationError(
                f"{names} changed after being applied; add a new migration instead of editing an applied one"
            )
        for migration in wanted:
            if migration.version in applied:
                continue
            with connection.transaction():
                connection.execute(migration.sql.encode())
                connection.execute(
                    "INSERT INTO schema_migrations (version, name, sha256) VALUES (%s, %s, %s)",
                    [migration.version, migration.name, migration.sha256],
                )
            applied_now.append(migration.version)
    return applied_now


def admin_conninfo() -> str:
    """The admin user's connection string, from the environment."""
    return make_conninfo(**connection_kwargs(DatabaseSettings.admin_from_env(os.environ)))


def main() -> int:
    try:
        applied = migrate(admin_conninfo())
    except (MigrationError, ValueError, psycopg.Error) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"Applied {', '.join(applied)}" if applied else "The schema is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
