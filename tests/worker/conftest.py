"""A moto server (the stream), a redis-server, a PostgreSQL, an archive directory and stream worker processes,
all on localhost, for the worker's tests."""

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import boto3
import pytest
import redis
from moto.server import ThreadedMotoServer

# Importing the function tests' conftest also puts functions/ on the import path.
from tests.functions.conftest import FUNCTIONS
from tests.postgres import NewDatabase, PostgresDatabase
from tools.local.servers import free_port, start_redis

REGION = "eu-west-1"
SHARD_COUNT = 4
REDIS_PASSWORD = "worker-test-auth-token"
# Short leases, so that a takeover fits in the test; the worker wants heartbeats at most a third of a lease.
LEASE_TIMEOUT_SECONDS = 5
LEASE_HEARTBEAT_SECONDS = 1


def wait_until(condition: Callable[[], object], timeout: float, failure: Callable[[], str]) -> None:
    """Polls the condition until it holds; fails, saying what `failure` returns, once `timeout` passes."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"after {timeout} s: {failure()}")
        time.sleep(0.25)


@dataclass(frozen=True)
class Services:
    endpoint_url: str
    kinesis: Any
    redis: redis.Redis
    redis_port: int
    stream_name: str
    database: PostgresDatabase
    archive_dir: Path

    def worker_environment(self) -> dict[str, str]:
        return {
            "PATH": os.environ["PATH"],
            # No __pycache__ in functions/: each directory is packaged as it is.
            "PYTHONDONTWRITEBYTECODE": "1",
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "POWERTOOLS_SERVICE_NAME": "stream-worker-test",
            "POWERTOOLS_LOG_LEVEL": "INFO",
            "STREAM_NAME": self.stream_name,
            "STREAM_RETENTION_HOURS": "24",
            "REDIS_HOST": "127.0.0.1",
            "REDIS_PORT": str(self.redis_port),
            "REDIS_TLS": "false",
            "REDIS_CLUSTER": "false",
            "REDIS_AUTH_TOKEN": REDIS_PASSWORD,
            "LEASE_TIMEOUT_SECONDS": str(LEASE_TIMEOUT_SECONDS),
            "LEASE_HEARTBEAT_SECONDS": str(LEASE_HEARTBEAT_SECONDS),
            "ARCHIVE_DIR": str(self.archive_dir),
            **self.database.environment("iot_worker"),
        }


@pytest.fixture
def moto_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def redis_port(tmp_path: Path) -> Iterator[int]:
    port = free_port()
    server = start_redis(tmp_path / "redis", port, REDIS_PASSWORD)
    yield port
    server.terminate()
    server.wait(timeout=10)


@pytest.fixture
def services(
    moto_endpoint: str, redis_port: int, new_database: NewDatabase, tmp_path: Path
) -> Iterator[Services]:
    kinesis = boto3.client(
        "kinesis",
        endpoint_url=moto_endpoint,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    kinesis.create_stream(StreamName="readings", ShardCount=SHARD_COUNT)
    client = redis.Redis(port=redis_port, password=REDIS_PASSWORD)
    yield Services(
        endpoint_url=moto_endpoint,
        kinesis=kinesis,
        redis=client,
        redis_port=redis_port,
        stream_name="readings",
        database=new_database(),
        archive_dir=tmp_path / "archive",
    )
    client.close()


class Worker:
    """A worker process; what it logs (JSON lines) goes to a file."""

    def __init__(self, environment: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log: IO[bytes] = log_path.open("wb")
        # As the image runs it: from a directory holding stream_worker/ and readings/.
        self.process = subprocess.Popen(
            [sys.executable, "-m", "stream_worker.worker"],
            cwd=FUNCTIONS,
            env=environment,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def logged(self, message: str) -> list[dict[str, Any]]:
        entries = []
        for line in self.log_path.read_text().splitlines():
            if line.startswith("{"):
                entry: dict[str, Any] = json.loads(line)
                if entry.get("message") == message:
                    entries.append(entry)
        return entries

    def leased_shards(self) -> set[str]:
        return {entry["shard_id"] for entry in self.logged("Leased a shard")}

    def signal(self, number: signal.Signals) -> None:
        self.process.send_signal(number)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self._log.close()


StartWorker = Callable[[str], Worker]


@pytest.fixture
def start_worker(services: Services, tmp_path: Path) -> Iterator[StartWorker]:
    workers: list[Worker] = []

    def start(name: str) -> Worker:
        worker = Worker(services.worker_environment(), tmp_path / f"{name}.log")
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.close()
        # Shown by pytest when the test fails.
        print(f"--- {worker.log_path.name}\n{worker.log_path.read_text()}")
