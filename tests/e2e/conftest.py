"""The local environment, deployed once per test session to a moto server of its own.

The session synth (tests/conftest.py) points the local stack at moto's default address, which another
process may hold. So this starts moto on a free port and synthesizes again with LOCAL_AWS_ENDPOINT set
to it: a few seconds with fast synth, on the pytest-xdist worker that runs these tests beside the rest.
(An override file pointing the synthesized stack elsewhere would be cheaper, but then the tests would
deploy something other than what the synth produces.) Whatever happens, the environment is destroyed and
the server stopped at the end of the session.
"""

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from stacks.app import synth_all
from stacks.config import EnvironmentConfig, environment
from tests.conftest import require
from tools.local.emulator import Emulator, start
from tools.local.servers import LocalStores
from tools.local.terraform import Terraform
from tools.terraform import terraform_environ


@dataclass
class LocalEnvironment:
    emulator: Emulator
    config: EnvironmentConfig
    terraform: Terraform
    outputs_file: Path
    """The stack's outputs as flat JSON, as `make deploy` writes outputs/local.json."""
    deployed: bool = False

    @property
    def stack(self) -> dict[str, Any]:
        """The synthesized stack (cdk.tf.json)."""
        stack: dict[str, Any] = json.loads((self.terraform.stack_dir / "cdk.tf.json").read_text())
        return stack

    @property
    def state(self) -> tuple[str, str]:
        """The state's bucket and key."""
        backend = self.stack["terraform"]["backend"]["s3"]
        return backend["bucket"], backend["key"]

    def variant(self, directory: Path, change: Callable[[dict[str, Any]], None]) -> Terraform:
        """A copy of the stack, with `change` made to its configuration, initialized on the same state."""
        shutil.copytree(self.terraform.stack_dir, directory, symlinks=True)
        stack = self.stack
        change(stack)
        (directory / "cdk.tf.json").write_text(json.dumps(stack))
        variant = Terraform(directory, self.terraform.environ)
        variant.init()
        return variant


@pytest.fixture(scope="session")
def local_environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalEnvironment]:
    require(shutil.which("terraform") is not None, "terraform is not on PATH")
    workdir = tmp_path_factory.mktemp("local-environment")
    emulator = start(workdir / "moto.log")
    try:
        environ = {"LOCAL_AWS_ENDPOINT": emulator.endpoint}
        synth_all(workdir / "cdktf.out", environ)
        config = environment("local", environ)
        emulator.create_state_bucket(config.backend)
        terraform = Terraform(
            workdir / "cdktf.out" / "stacks" / config.stack_name, terraform_environ({**os.environ, **environ})
        )
        local = LocalEnvironment(emulator, config, terraform, workdir / "local.json")
        terraform.init()
        try:
            local.deployed = True  # a failed apply leaves part of the stack
            terraform.apply()
            local.outputs_file.write_text(json.dumps(terraform.outputs()))
            yield local
        finally:
            if local.deployed:
                terraform.destroy()
    finally:
        emulator.stop()


@pytest.fixture(scope="session")
def local_stores() -> Iterator[LocalStores]:
    """PostgreSQL and redis-server for the worker and the functions, as `make deploy` starts them. Not under
    pytest's temporary directory: run as root, pgserver runs PostgreSQL as a user of its own, which must reach
    the data directory, and pytest keeps its directories to their owner."""
    directory = Path(tempfile.mkdtemp(prefix="local-stores-"))
    stores = LocalStores.start(directory)
    try:
        yield stores
    finally:
        stores.stop()
        shutil.rmtree(directory, ignore_errors=True)
