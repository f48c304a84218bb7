"""One synth per test session: every test reads the same synthesized stacks."""

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from stacks.app import synth_all
from stacks.config import MAX_SUFFIX_LENGTH, PROJECT, STANDING_ENVIRONMENTS

# The short-lived environment the tests synthesize has the longest suffix allowed, so that every
# name-length check runs against the worst case.
LONGEST_SUFFIX = "pr-" + "9" * (MAX_SUFFIX_LENGTH - 3)
STACK_NAMES = [f"{PROJECT}-{name}" for name in (*STANDING_ENVIRONMENTS, LONGEST_SUFFIX)]
# The only process settings the synth sees: snapshots must not depend on the caller's environment.
SYNTH_ENVIRON = {"ENVIRONMENT_SUFFIX": LONGEST_SUFFIX}


def require(available: bool, missing: str) -> None:
    """Skip a test whose tool is missing, except in CI, where every test must run."""
    if available:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{missing}; CI must provide it")
    pytest.skip(missing)


@dataclass(frozen=True)
class Synth:
    outdir: Path
    stacks: dict[str, dict[str, Any]]
    """Stack name -> its cdk.tf.json."""

    def stack_dir(self, name: str) -> Path:
        return self.outdir / "stacks" / name


@pytest.fixture(scope="session")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    outdir = tmp_path_factory.mktemp("cdktf.out")
    names = synth_all(outdir, SYNTH_ENVIRON)
    assert names == STACK_NAMES
    return Synth(
        outdir, {name: json.loads((outdir / "stacks" / name / "cdk.tf.json").read_text()) for name in names}
    )


@pytest.fixture(params=STACK_NAMES)
def stack_name(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def stack(synth: Synth, stack_name: str) -> dict[str, Any]:
    """One synthesized stack; a test that takes it runs once per environment."""
    return synth.stacks[stack_name]
