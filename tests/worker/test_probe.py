"""stream_worker.probe, the one-off task `make verify` runs: against a real PostgreSQL and redis-server."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.functions.conftest import FUNCTIONS
from tests.postgres import NewDatabase
from tests.worker.conftest import REDIS_PASSWORD


def probe(environment: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stream_worker.probe"],
        cwd=FUNCTIONS,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def lines(finished: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """Each store's line, by store."""
    return {line.split()[1].rstrip(":"): line for line in finished.stdout.splitlines()}


@pytest.fixture
def worker_environment(redis_port: int, new_database: NewDatabase, tmp_path: Path) -> dict[str, str]:
    """The worker's settings, pointed at a migrated PostgreSQL and a redis-server with a token."""
    return {
        "PATH": os.environ["PATH"],
        "PYTHONDONTWRITEBYTECODE": "1",  # no __pycache__ in functions/
        "STREAM_NAME": "readings",
        "STREAM_RETENTION_HOURS": "24",
        "REDIS_HOST": "127.0.0.1",
        "REDIS_PORT": str(redis_port),
        "REDIS_TLS": "false",
        "REDIS_CLUSTER": "false",
        "REDIS_AUTH_TOKEN": REDIS_PASSWORD,
        "ARCHIVE_DIR": str(tmp_path / "archive"),
        **new_database().environment("iot_worker"),
    }


def test_every_store_answers_the_worker_with_its_own_settings(worker_environment: dict[str, str]) -> None:
    finished = probe(worker_environment)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    found = lines(finished)
    assert found["postgres"] == "ok    postgres: logged in to 127.0.0.1 as iot_worker; 0 devices registered"
    assert found["redis"].startswith("ok    redis: 127.0.0.1:")
    archive = Path(worker_environment["ARCHIVE_DIR"])
    assert found["archive"] == f"ok    archive: wrote, read and removed a file in {archive}"
    assert list(archive.iterdir()) == []


def test_a_store_that_refuses_fails_the_probe_naming_it_and_the_others_still_run(
    worker_environment: dict[str, str], tmp_path: Path
) -> None:
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("")
    environment = worker_environment | {
        "REDIS_AUTH_TOKEN": "not-the-token",
        "ARCHIVE_DIR": str(not_a_directory / "archive"),
    }
    finished = probe(environment)
    assert finished.returncode == 1
    found = lines(finished)
    assert found["postgres"].startswith("ok    postgres:")
    assert found["redis"].startswith("FAIL  redis: AuthenticationError")
    assert found["archive"].startswith("FAIL  archive: ")
