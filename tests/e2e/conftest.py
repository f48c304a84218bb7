"""A short-lived environment on the emulator, deployed once per test session as a user deploys one: with
`npx cdktf deploy`, to a moto server of its own.

It is the environment suffix SUFFIX with LOCAL_AWS_ENDPOINT set, which gives it the local environment's
exclusions (stacks.config.on_emulator), so it also stands for the local environment that `make deploy`
deploys. moto starts on a free port (its default address may be taken) and the CLI synthesizes for it, on
the pytest-xdist worker that runs these tests beside the rest. Whatever happens, the environment is
destroyed and the server stopped at the end of the session.
"""

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from stacks.config import EnvironmentConfig, short_lived_environment
from tests.conftest import require
from tests.postgres import stores_on
from tools.local.emulator import Emulator, start
from tools.local.servers import LocalStores, Postgres
from tools.local.terraform import PLAN_SECONDS, Terraform, stop
from tools.terraform import terraform_environ


@dataclass
class LocalEnvironment:
    emulator: Emulator
    config: EnvironmentConfig
    terraform: Terraform
    outputs_file: Path
    """The stack's outputs, as `cdktf deploy --outputs-file` writes them."""
    deployed: bool = False
    plan_during_apply: subprocess.CompletedProcess[str] | None = None
    """A plan started while the deploy's apply held the state lock; None if the lock was never seen."""

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

    @cached_property
    def s3(self) -> Any:
        """A client of the emulator's S3, which holds the state and its lock."""
        return self.emulator.client("s3", self.config.backend.region)

    def locked(self) -> bool:
        """Whether an operation holds the state lock (Terraform's lock file beside the state)."""
        bucket, key = self.state
        try:
            self.s3.head_object(Bucket=bucket, Key=f"{key}.tflock")
        except ClientError:
            return False
        return True

    def variant(self, directory: Path, change: Callable[[dict[str, Any]], None]) -> Terraform:
        """A copy of the stack, with `change` made to its configuration, initialized on the same state."""
        shutil.copytree(self.terraform.stack_dir, directory, symlinks=True)
        stack = self.stack
        change(stack)
        (directory / "cdk.tf.json").write_text(json.dumps(stack))
        variant = Terraform(directory, self.terraform.environ)
        variant.init()
        return variant


SUFFIX = "pr-e2e"  # named as the pull requests' environments, whose scan exceptions it shares
PROJECT_ROOT = Path(__file__).resolve().parents[2]
CLI = PROJECT_ROOT / "node_modules" / ".bin" / "cdktf"
DEPLOY_SECONDS = 900
# No calls to services that cannot answer offline, as the Makefile sets them.
CLI_ENVIRON = {"CHECKPOINT_DISABLE": "1", "DISABLE_VERSION_CHECK": "1"}


@pytest.fixture(scope="session")
def local_environment(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalEnvironment]:
    require(shutil.which("terraform") is not None, "terraform is not on PATH")
    require(CLI.exists(), f"{CLI} is missing: run `make setup`")
    workdir = tmp_path_factory.mktemp("local-environment")
    emulator = start(workdir / "moto.log")
    try:
        environ = {"LOCAL_AWS_ENDPOINT": emulator.endpoint, "ENVIRONMENT_SUFFIX": SUFFIX}
        config = short_lived_environment(SUFFIX, environ)
        emulator.create_state_bucket(config.backend)
        outdir = workdir / "cdktf.out"
        terraform = Terraform(
            outdir / "stacks" / config.stack_name, terraform_environ({**os.environ, **environ})
        )
        local = LocalEnvironment(emulator, config, terraform, workdir / "outputs.json")
        try:
            local.deployed = True  # a failed apply leaves part of the stack
            # Its output goes to a file: nothing reads it until the deploy ends.
            with (workdir / "deploy.log").open("w+") as log:
                # fmt: off
                deploy = subprocess.Popen(
                    [
                        str(CLI), "deploy", config.stack_name, "--auto-approve", "--output", str(outdir),
                        "--outputs-file", str(local.outputs_file),
                        # `terraform providers lock` asks the registry for checksums, which fails offline;
                        # `terraform init` has locked the provider from the mirror.
                        "--skip-provider-lock",
                    ],
                    cwd=PROJECT_ROOT, env={**terraform.environ, **CLI_ENVIRON}, stdout=log,
                    stderr=subprocess.STDOUT, text=True, start_new_session=True,
                )
                # fmt: on
                try:
                    request.getfixturevalue("deployment_stores")  # started while the stack deploys
                    local.plan_during_apply = plan_during_apply(local, deploy)
                    deploy.wait(timeout=DEPLOY_SECONDS)
                finally:
                    if deploy.poll() is None:
                        stop(deploy)  # Terraform releases the state lock
                log.seek(0)
                assert deploy.returncode == 0, log.read()[-10000:]
            yield local
        finally:
            if local.deployed:
                terraform.destroy()
    finally:
        emulator.stop()


def plan_during_apply(
    local: LocalEnvironment, deploy: subprocess.Popen[str]
) -> subprocess.CompletedProcess[str] | None:
    """A plan started once the deploy's apply holds the state lock (for its whole two minutes), which must
    fail at once; None if the deploy ends before its lock is seen."""
    while not ((local.terraform.stack_dir / "cdk.tf.json").exists() and local.locked()):
        if deploy.poll() is not None:
            return None
        time.sleep(0.2)
    return local.terraform.run(
        "plan", "-input=false", "-lock-timeout=0s", timeout=PLAN_SECONDS, ok=(0, 1), capture=True
    )


@pytest.fixture(scope="session")
def deployment_stores(
    postgres_server: Postgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalStores]:
    """The local stores of the deployment, for the worker and the functions, as `make deploy` starts them;
    local_environment starts them while the stack deploys."""
    with stores_on(postgres_server, tmp_path_factory.mktemp("stores")) as stores:
        yield stores
