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
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo
from stream_worker.migrate import migrate

from iot_constructs.database import DATABASE_NAME
from tools.local.servers import LocalStores, Postgres, free_port, start_postgres, stop_postgres

ADMIN_USER = "postgres"
# Any: the server trusts local connections. Set so that the code under test takes its password path.
PASSWORD = "trusted-locally"
_database_numbers = itertools.count()
# A database stream_worker.migrate has migrated, made once per server: copying it makes a migrated database in
# half the time of migrating a new one.
MIGRATED_TEMPLATE = "migrated"
# CREATE DATABASE takes the server about 0.2 s whatever the template's size, mostly waiting, and eight run at
# once in about twice that: the tests' databases are made in batches, in parallel, the first time one is
# wanted and whenever the batch is used up.
DATABASE_BATCH = 8


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


class DatabaseBatches:
    """New databases on `server`, each a copy of its template, made DATABASE_BATCH at a time."""

    def __init__(self, server: Postgres) -> None:
        self.server = server
        self.unused: dict[str, list[str]] = {MIGRATED_TEMPLATE: [], "template1": []}

    def take(self, template: str) -> PostgresDatabase:
        unused = self.unused[template]
        if not unused:
            names = [f"test_{next(_database_numbers)}" for _ in range(DATABASE_BATCH)]
            with ThreadPoolExecutor(DATABASE_BATCH) as pool:
                list(pool.map(lambda name: self._create(name, template), names))
            unused.extend(names)
        return PostgresDatabase(self.server.host, self.server.port, unused.pop(0))

    def _create(self, name: str, template: str) -> None:
        with psycopg.connect(_server_conninfo(self.server), autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'.encode())


@pytest.fixture(scope="session")
def database_batches(postgres_server: Postgres) -> DatabaseBatches:
    return DatabaseBatches(postgres_server)


@pytest.fixture
def new_database(database_batches: DatabaseBatches) -> NewDatabase:
    """Gives a new database on the session's server, no test's but the caller's: migrated (a copy of
    MIGRATED_TEMPLATE) unless migrated=False, else empty."""

    def new(migrated: bool = True) -> PostgresDatabase:
        return database_batches.take(MIGRATED_TEMPLATE if migrated else "template1")

    return new


@contextmanager
def stores_on(server: Postgres, directory: Path) -> Iterator[LocalStores]:
    """The stores `make deploy` starts for the local environment, made of `server` (the deployment's database
    is dropped at the end) and a redis-server of their own, with the archive, under `directory`."""
    stores = LocalStores.beside(server, directory)
    try:
        yield stores
    finally:
        stores.stop_redis()
        with psycopg.connect(_server_conninfo(server), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{DATABASE_NAME}" WITH (FORCE)'.encode())


@pytest.fixture
def local_stores(postgres_server: Postgres, tmp_path: Path) -> Iterator[LocalStores]:
    """The local stores as `make deploy` first starts them: the deployment's database does not exist yet."""
    with stores_on(postgres_server, tmp_path) as stores:
        yield stores


def _server_conninfo(server: Postgres) -> str:
    return make_conninfo(host=server.host, port=server.port, dbname="postgres", user=ADMIN_USER)
