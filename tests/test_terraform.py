"""Every synthesized stack is valid for Terraform with the real hashicorp/aws provider."""

import json
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.conftest import STACK_NAMES, Synth, require
from tools.terraform import PROVIDER_MIRROR, terraform_environ

Run = subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def validations(synth: Synth) -> dict[str, tuple[Run, Run]]:
    """Stack name -> its `terraform init` and `terraform validate`, run for every stack at once: each
    validate spends most of its time loading the provider's schema."""
    terraform = shutil.which("terraform")
    require(terraform is not None, "terraform is not on PATH")
    # CI has no registry access: there, the provider must come from the mirror.
    assert PROVIDER_MIRROR.is_dir() or not os.environ.get("CI"), (
        f"the provider mirror {PROVIDER_MIRROR} is missing"
    )
    assert terraform is not None
    environ = terraform_environ()

    def run(stack_name: str, *args: str) -> Run:
        return subprocess.run(
            [terraform, *args, "-no-color"],
            cwd=synth.stack_dir(stack_name),
            env=environ,
            capture_output=True,
            text=True,
            check=False,
        )

    def validate(stack_name: str) -> tuple[Run, Run]:
        return run(stack_name, "init", "-backend=false", "-input=false"), run(stack_name, "validate", "-json")

    with ThreadPoolExecutor(len(STACK_NAMES)) as pool:
        return dict(zip(STACK_NAMES, pool.map(validate, STACK_NAMES), strict=True))


def test_terraform_validates_the_stack_with_the_real_provider(
    validations: dict[str, tuple[Run, Run]], stack_name: str
) -> None:
    init, validate = validations[stack_name]
    assert init.returncode == 0, init.stderr
    result: dict[str, Any] = json.loads(validate.stdout)
    assert result["valid"], json.dumps(result["diagnostics"], indent=2)
    assert result["warning_count"] == 0, json.dumps(result["diagnostics"], indent=2)
