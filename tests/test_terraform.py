"""Every synthesized stack, and every variant, is valid for Terraform with the real hashicorp/aws provider."""

import json
import os
import shutil
import subprocess
from typing import Any

import pytest

from tests.conftest import STACK_NAMES, VARIANT_NAMES, Synth, require
from tools.terraform import PROVIDER_MIRROR, terraform_environ

# A stack used as a module: Terraform ignores its backend, and says so once per stack.
IGNORED_BACKEND = "Backend configuration ignored"


@pytest.fixture(scope="module")
def diagnostics(synth: Synth, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    """Stack or variant -> what `terraform validate` says about it. One Terraform process validates them all,
    each a module of one configuration: most of a validation's time is spent loading the provider's schema,
    which this loads once."""
    terraform = shutil.which("terraform")
    require(terraform is not None, "terraform is not on PATH")
    # CI has no registry access: there, the provider must come from the mirror.
    assert PROVIDER_MIRROR.is_dir() or not os.environ.get("CI"), (
        f"the provider mirror {PROVIDER_MIRROR} is missing"
    )
    assert terraform is not None
    directories = {name: synth.stack_dir(name) for name in STACK_NAMES} | synth.variant_dirs
    root = tmp_path_factory.mktemp("validate")
    modules = {name: {"source": os.path.relpath(directory, root)} for name, directory in directories.items()}
    (root / "main.tf.json").write_text(json.dumps({"module": modules}))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        assert terraform is not None
        return subprocess.run(
            [terraform, *args, "-no-color"], cwd=root, env=terraform_environ(), capture_output=True, text=True
        )

    init = run("init", "-backend=false", "-input=false")
    assert init.returncode == 0, init.stderr
    validate = run("validate", "-json")
    assert validate.stdout.startswith("{"), validate.stderr
    result: dict[str, Any] = json.loads(validate.stdout)
    said: dict[str, list[dict[str, Any]]] = {name: [] for name in directories}
    for diagnostic in result["diagnostics"]:
        filename = (root / diagnostic.get("range", {}).get("filename", ".")).resolve()
        owners = [name for name, directory in directories.items() if filename.is_relative_to(directory)]
        # A diagnostic about no stack in particular counts against every one.
        for name in owners or directories:
            said[name].append(diagnostic)
    return said


@pytest.mark.parametrize("name", [*STACK_NAMES, *VARIANT_NAMES])
def test_terraform_validates_the_stack_with_the_real_provider(
    diagnostics: dict[str, list[dict[str, Any]]], name: str
) -> None:
    """Nothing but the ignored backend, which also shows that each stack's diagnostics are told apart."""
    said = [diagnostic for diagnostic in diagnostics[name] if diagnostic["summary"] != IGNORED_BACKEND]
    assert not said, json.dumps(said, indent=2)
    assert [diagnostic["summary"] for diagnostic in diagnostics[name]] == [IGNORED_BACKEND]
