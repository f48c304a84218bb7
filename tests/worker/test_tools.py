"""tools.migrate and tools.devices refuse what they cannot run, naming why, before any AWS call, and run the
admin commands locally for an environment on the emulator. (Running the admin task itself needs ECS: moto's
Fargate run_task fails on its own network interfaces.)"""

from pathlib import Path

import psycopg
import pytest

from iot_constructs.database import DATABASE_NAME
from tools import devices, migrate
from tools.local import servers


def test_an_environment_without_outputs_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert migrate.main(["--env", "dev", "--outputs", str(tmp_path / "dev.json")]) == 2
    assert f"cannot read the outputs file {tmp_path / 'dev.json'}" in capsys.readouterr().err


def test_the_local_environment_needs_the_stores_make_deploy_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(servers, "STORES_STATE", tmp_path / "stores.json")
    assert migrate.main(["--env", "local"]) == 2
    assert (
        "the local data stores are not running: `make deploy ENV=local` starts them"
        in capsys.readouterr().err
    )


def test_on_the_emulator_the_admin_commands_run_here_against_the_local_stores(
    local_stores: servers.LocalStores, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The emulator runs no containers: make migrate and tools.devices run the admin container's commands as
    processes of this machine, against the PostgreSQL that `make deploy` started (no database yet, as the
    first time)."""
    state = local_stores.archive_dir.parent / "stores.json"
    state.write_text(local_stores.to_json())
    monkeypatch.setattr(servers, "STORES_STATE", state)
    assert migrate.main(["--env", "local"]) == 0
    assert migrate.main(["--env", "local"]) == 0  # a re-run applies nothing
    assert devices.main(["register", "--env", "local", "--client", "abc123", "device-1"]) == 0
    assert devices.main(["register", "--env", "local", "--client", "other", "device-1"]) == 1
    with psycopg.connect(local_stores.conninfo(DATABASE_NAME)) as connection:
        assert connection.execute("SELECT version FROM schema_migrations").fetchall() == [("0001",)]
        owners = connection.execute("SELECT device_id, client_id FROM devices").fetchall()
    assert owners == [("device-1", "abc123")]


def test_the_stores_make_deploy_starts_answer_until_stopped() -> None:
    with servers.temporary_stores("tools-stores-") as stores:
        assert stores.answers()
    assert not stores.answers()
