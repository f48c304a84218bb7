"""tools.migrate and tools.devices refuse what they cannot run, naming why, before any AWS call. (Running the
admin task itself needs ECS: moto's Fargate run_task fails on its own network interfaces.)"""

import json
from pathlib import Path

import pytest

from tools import devices, migrate


def test_an_environment_without_outputs_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert migrate.main(["--env", "dev", "--outputs", str(tmp_path / "dev.json")]) == 2
    assert f"cannot read the outputs file {tmp_path / 'dev.json'}" in capsys.readouterr().err


def test_the_local_environment_runs_no_containers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    outputs = tmp_path / "local.json"
    outputs.write_text(json.dumps({"stream_name": "readings"}))
    arguments = ["register", "--env", "local", "--outputs", str(outputs), "--client", "abc", "device-1"]
    assert devices.main(arguments) == 2
    assert "local runs on the emulator, which runs no containers" in capsys.readouterr().err
