"""The pull request workflow: valid for GitHub Actions, and planning every environment read-only."""

import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from stacks.config import STANDING_ENVIRONMENTS

PROJECT_ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((PROJECT_ROOT / ".github" / "workflows").glob("*.yml"))
PULL_REQUEST = PROJECT_ROOT / ".github" / "workflows" / "pull-request.yml"


@pytest.fixture(scope="module")
def workflow() -> dict[str, Any]:
    loaded: dict[str, Any] = YAML(typ="safe").load(PULL_REQUEST.read_text())
    return loaded


def steps_using(job: dict[str, Any], action: str) -> list[dict[str, Any]]:
    return [step for step in job["steps"] if step.get("uses", "").startswith(f"{action}@")]


def test_every_workflow_is_valid_for_github_actions() -> None:
    # check-jsonschema's vendored copy of SchemaStore's workflow schema: no network needed.
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "check-jsonschema"),
            *("--builtin-schema", "vendor.github-workflows"),
            *map(str, WORKFLOWS),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_pull_requests_run_the_whole_suite_with_the_locked_environment(workflow: dict[str, Any]) -> None:
    assert "pull_request" in workflow["on"]
    test = workflow["jobs"]["test"]
    assert ".ci/run" in [step.get("run") for step in test["steps"]]  # `make setup`, then `make test`
    (python,) = steps_using(test, "actions/setup-python")
    required = tomllib.loads((PROJECT_ROOT / "Pipfile").read_text())["requires"]["python_version"]
    assert python["with"]["python-version"] == required


def test_every_real_environment_is_planned_and_summarized(workflow: dict[str, Any]) -> None:
    plan = workflow["jobs"]["plan"]
    assert plan["needs"] == "test"
    real_environments = [name for name in STANDING_ENVIRONMENTS if name != "local"]
    assert plan["strategy"]["matrix"]["environment"] == real_environments
    runs = [step.get("run", "") for step in plan["steps"]]
    assert "make plan ENV=${{ matrix.environment }}" in runs
    (comment,) = steps_using(plan, "actions/github-script")
    assert comment["env"]["SUMMARY"] == "cdktf.out/stacks/iot-platform-${{ matrix.environment }}/plan.md"


def test_plans_run_with_an_assumed_role_and_no_stored_keys(workflow: dict[str, Any]) -> None:
    assert workflow["permissions"] == {"contents": "read"}
    plan = workflow["jobs"]["plan"]
    assert plan["permissions"] == {"contents": "read", "id-token": "write", "pull-requests": "write"}
    (credentials,) = steps_using(plan, "aws-actions/configure-aws-credentials")
    assert set(credentials["with"]) == {"role-to-assume", "role-session-name", "aws-region"}
    assert "secrets." not in PULL_REQUEST.read_text()
