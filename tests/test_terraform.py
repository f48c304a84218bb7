"""Every synthesized stack is valid for Terraform with the real hashicorp/aws provider."""

import json
import os
import shutil
import subprocess

from tests.conftest import Synth, require
from tools.terraform import PROVIDER_MIRROR, terraform_environ


def test_terraform_validates_the_stack_with_the_real_provider(synth: Synth, stack_name: str) -> None:
    terraform = shutil.which("terraform")
    require(terraform is not None, "terraform is not on PATH")
    # CI has no registry access: there, the provider must come from the mirror.
    assert PROVIDER_MIRROR.is_dir() or not os.environ.get("CI"), (
        f"the provider mirror {PROVIDER_MIRROR} is missing"
    )
    assert terraform is not None
    stack_dir = synth.stack_dir(stack_name)
    environ = terraform_environ()

    init = subprocess.run(
        [terraform, "init", "-backend=false", "-input=false", "-no-color"],
        cwd=stack_dir,
        env=environ,
        capture_output=True,
        text=True,
        check=False,
    )
    assert init.returncode == 0, init.stderr
    validate = subprocess.run(
        [terraform, "validate", "-json", "-no-color"],
        cwd=stack_dir,
        env=environ,
        capture_output=True,
        text=True,
        check=False,
    )
    result = json.loads(validate.stdout)
    assert result["valid"], json.dumps(result["diagnostics"], indent=2)
    assert result["warning_count"] == 0, json.dumps(result["diagnostics"], indent=2)
