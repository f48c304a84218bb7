"""Device registration (stream_worker.devices) against a real PostgreSQL: idempotent, all or nothing, and
never taking another client's device."""

import os
import subprocess
import sys

import psycopg
import pytest
from stream_worker.devices import Registered, RegistrationError, register

from tests.functions.conftest import FUNCTIONS
from tests.postgres import NewDatabase


def owners(conninfo: str) -> dict[str, str | None]:
    with psycopg.connect(conninfo) as connection:
        return dict(connection.execute("SELECT device_id, client_id FROM devices").fetchall())


def test_registering_is_idempotent_and_keeps_what_the_worker_saw(new_database: NewDatabase) -> None:
    conninfo = new_database().conninfo()
    with psycopg.connect(conninfo) as connection:  # seen on the stream before it was registered
        connection.execute("INSERT INTO devices (device_id, last_sequence) VALUES ('seen', 41)")

    assert register(conninfo, "client1", ["seen", "new", "new"]) == Registered(
        new=["new", "seen"], already=[]
    )
    assert register(conninfo, "client1", ["new"]) == Registered(new=[], already=["new"])

    assert owners(conninfo) == {"seen": "client1", "new": "client1"}
    with psycopg.connect(conninfo) as connection:
        assert connection.execute(
            "SELECT last_sequence FROM devices WHERE device_id = 'seen'"
        ).fetchone() == (41,)


def test_another_clients_device_is_refused_by_name_and_nothing_is_registered(
    new_database: NewDatabase,
) -> None:
    conninfo = new_database().conninfo()
    register(conninfo, "client1", ["taken"])

    with pytest.raises(RegistrationError, match=r"devices registered to another client: taken$"):
        register(conninfo, "client2", ["free", "taken"])

    assert owners(conninfo) == {"taken": "client1"}


@pytest.mark.parametrize(
    ("client_id", "device_ids", "message"),
    [
        ("client1", ["ok", "not ok", "-leading"], r"invalid device ids .*: not ok, -leading$"),
        ("client 1", ["ok"], "'client 1' is not an API key id"),
        ("client1", [], "name at least one device"),
    ],
)
def test_bad_input_is_named_and_nothing_is_written(
    new_database: NewDatabase, client_id: str, device_ids: list[str], message: str
) -> None:
    conninfo = new_database().conninfo()
    with pytest.raises(RegistrationError, match=message):
        register(conninfo, client_id, device_ids)
    assert owners(conninfo) == {}


def test_the_command_registers_and_refuses(new_database: NewDatabase) -> None:
    database = new_database()
    environment = {"PATH": os.environ["PATH"], "PYTHONDONTWRITEBYTECODE": "1", **database.admin_environment()}

    def run(client_id: str, *device_ids: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "stream_worker.devices", "register", "--client", client_id, *device_ids],
            cwd=FUNCTIONS,
            env=environment,
            capture_output=True,
            text=True,
            check=False,
        )

    registered = run("client1", "a", "b")
    assert (registered.returncode, registered.stdout) == (0, "Registered 2 devices to client1\n"), (
        registered.stderr
    )
    again = run("client1", "a", "c")
    assert (again.returncode, again.stdout) == (0, "Registered 1 devices to client1; 1 were already\n")
    refused = run("client2", "b")
    assert (refused.returncode, refused.stderr) == (1, "error: devices registered to another client: b\n")
