"""A real PostgreSQL for the tests: the server of the pgserver wheel (in the locked dev environment), one per
test process (the fixtures are tests/conftest.py's), and a fresh database per test.

    def test_something(new_database: NewDatabase) -> None:
        database = new_database()  # migrated; new_database(migrated=False) for an empty one
        psycopg.connect(database.conninfo())                # as the admin (superuser)
        psycopg.connect(database.conninfo("iot_reader"))    # as an application user
        os.environ |= database.environment("iot_reader")   # DATABASE_* as the functions read them

The server (tools.local.servers, as the local round trip starts it) listens on the loopback as RDS listens on
its endpoint, and trusts every local connection (pgserver's initdb), so the application users log in with any
password: the tests exercise their grants, not their authentication. It is not durable: its data is thrown
away at the end.
"""

import itertools
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo
from stream_worker.migrate import migrate

from tools.local.servers import Postgres, free_port, start_postgres, stop_postgres

ADMIN_USER = "postgres"
# Any: the server trusts local connections. Set so that the code under test takes its password path.
PASSWORD = "trusted-locally"
_database_numbers = itertools.count()
# A database stream_worker.migrate has migrated, made once per server: copying it makes a migrated database in
# half the time of migrating a new one.
MIGRATED_TEMPLATE = "migrated"


@dataclass(frozen=True)
class PostgresDatabase:
    host: str
    port: int
    name: str

    def conninfo(self, user: str = ADMIN_USER) -> str:
        return make_conninfo(host=self.host, port=self.port, dbname=self.name, user=user, password=PASSWORD)

    def environment(self, user: str) -> dict[str, str]:
        """The variables of a function or the worker logging in as `user` (DATABASE_PASSWORD: no IAM token;
        DATABASE_TLS=false: the test server has no certificate)."""
        return {
            "DATABASE_HOST": self.host,
            "DATABASE_PORT": str(self.port),
            "DATABASE_NAME": self.name,
            "DATABASE_USER": user,
            "DATABASE_PASSWORD": PASSWORD,
            "DATABASE_TLS": "false",
        }

    def admin_environment(self) -> dict[str, str]:
        """The variables of stream_worker.migrate and stream_worker.devices."""
        return {
            "DATABASE_HOST": self.host,
            "DATABASE_PORT": str(self.port),
            "DATABASE_NAME": self.name,
            "DATABASE_ADMIN_USER": ADMIN_USER,
            "DATABASE_ADMIN_PASSWORD": PASSWORD,
            "DATABASE_TLS": "false",
        }


NewDatabase = Callable[..., PostgresDatabase]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Postgres]:
    # Not under pytest's temporary directory: run as root, pgserver runs the server as a user of its own,
    # which must reach the data directory, and pytest keeps its directories to their owner.
    data = Path(tempfile.mkdtemp(prefix="pgserver-"))
    server = start_postgres(data / "data", free_port(), durable=False)
    with psycopg.connect(_server_conninfo(server), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{MIGRATED_TEMPLATE}"'.encode())
    migrate(PostgresDatabase(server.host, server.port, MIGRATED_TEMPLATE).conninfo())
    yield server
    stop_postgres(server.data)
    shutil.rmtree(data, ignore_errors=True)


@pytest.fixture
def new_database(postgres_server: Postgres) -> NewDatabase:
    """Makes a new, empty database on the session's server; migrated (a copy of MIGRATED_TEMPLATE) unless
    migrated=False."""

    def new(migrated: bool = True) -> PostgresDatabase:
        database = PostgresDatabase(
            postgres_server.host, postgres_server.port, f"test_{next(_database_numbers)}"
        )
        template = MIGRATED_TEMPLATE if migrated else "template1"
        with psycopg.connect(_server_conninfo(postgres_server), autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{database.name}" TEMPLATE "{template}"'.encode())
        return database

    return new


def _server_conninfo(server: Postgres) -> str:
    return make_conninfo(host=server.host, port=server.port, dbname="postgres", user=ADMIN_USER)
