"""The AWS emulator: a moto server on a free loopback port, in a process of its own."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import ClientError

from stacks.config import StateBackend

SERVER_ENVIRON = {
    # Without AWS's managed policies loaded, attaching one by ARN fails with NoSuchEntity.
    "MOTO_IAM_LOAD_MANAGED_POLICIES": "true",
}
# moto accepts any credentials: these are its documented test values, not secrets.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
START_SECONDS = 60  # loading the managed policies takes a few seconds on a busy machine
STOP_SECONDS = 10


class EmulatorError(RuntimeError):
    pass


@dataclass(frozen=True)
class Emulator:
    endpoint: str
    pid: int
    """The server's process, which leads a process group of its own."""

    def answers(self) -> bool:
        """Whether a moto server answers at the endpoint."""
        try:
            with urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def client(self, service: str, region: str) -> Any:
        """A boto3 client for `service` that talks to the emulator."""
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=region,
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )

    def create_state_bucket(self, backend: StateBackend) -> None:
        """Create the S3 bucket that the stack's backend keeps its state in, unless it exists."""
        s3 = self.client("s3", backend.region)
        location = (
            {}
            if backend.region == "us-east-1"
            else {"CreateBucketConfiguration": {"LocationConstraint": backend.region}}
        )
        try:
            s3.create_bucket(Bucket=backend.bucket, **location)
        except ClientError as error:
            if error.response["Error"]["Code"] != "BucketAlreadyOwnedByYou":
                raise

    def stop(self) -> None:
        """Stop the server (all its state is lost) and wait until it no longer answers.

        A server that no longer answers is left alone: its process id may belong to another process by now.
        """
        if not self.answers():
            return
        try:
            os.killpg(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + STOP_SECONDS
        while self.answers():
            if time.monotonic() > deadline:
                os.killpg(self.pid, signal.SIGKILL)
                break
            time.sleep(0.1)


def start(log: Path) -> Emulator:
    """Start a moto server on a free loopback port, logging to `log`, and wait until it answers.

    The server outlives this process (it has a session of its own), so that `make deploy` can leave it
    running for `make destroy`; `Emulator.stop` ends it.
    """
    with socket.socket() as probe:  # the port is free now; moto takes it a moment later
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "--host", "127.0.0.1", "--port", str(port)],
            env={**os.environ, **SERVER_ENVIRON},
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    emulator = Emulator(endpoint=f"http://127.0.0.1:{port}", pid=process.pid)
    deadline = time.monotonic() + START_SECONDS
    while not emulator.answers():
        if process.poll() is not None or time.monotonic() > deadline:
            emulator.stop()
            raise EmulatorError(f"moto did not start on port {port}:\n{log.read_text()[-2000:]}")
        time.sleep(0.2)
    return emulator
