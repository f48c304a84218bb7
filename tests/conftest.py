"""One synth per test run: every test, on every pytest-xdist worker, reads the same synthesized stacks."""

import fcntl
import gc
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from stacks.app import synth_all
from stacks.config import MAX_SUFFIX_LENGTH, PROJECT, STANDING_ENVIRONMENTS
from tests.postgres import new_database, postgres_server  # noqa: F401  (one per process, for functions/ and worker/)

# The tests keep many objects alive (boto3's and moto's service models, the provider bindings): at Python's
# default threshold (700 allocations) the cyclic garbage collector spent a fifth of their CPU time going over
# them again and again.
GC_THRESHOLD = 50_000
gc.set_threshold(GC_THRESHOLD)

# The short-lived environment the tests synthesize has the longest suffix allowed, so that every
# name-length check runs against the worst case.
LONGEST_SUFFIX = "pr-" + "9" * (MAX_SUFFIX_LENGTH - 3)
STACK_NAMES = [f"{PROJECT}-{name}" for name in (*STANDING_ENVIRONMENTS, LONGEST_SUFFIX)]
# The only process settings the synth sees: snapshots must not depend on the caller's environment.
SYNTH_ENVIRON = {"ENVIRONMENT_SUFFIX": LONGEST_SUFFIX}
# pytest-xdist (`--dist loadfile`, see the Makefile) gives each worker whole files, in collection order, so
# that a file's costly fixture is built once. These files come first, the longest first: the local end to
# end, its deployment's chain of Terraform runs, on a worker of its own from the start; then the ones that
# keep a CPU busy longest (the stock synth, checkov, the two-process worker test, mypy, terraform validate,
# the seed regions' validations, which fill the CPU the worker test leaves idle while it waits).
SLOWEST_FILES = [
    "tests/e2e/test_local_environment.py",
    "tests/test_fast_synth.py",
    "tests/test_security_scan.py",
    "tests/worker/test_worker.py",
    "tests/test_code_quality.py",
    "tests/test_terraform.py",
    "tests/test_regions.py",
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        path = item.nodeid.split("::")[0]
        return SLOWEST_FILES.index(path) if path in SLOWEST_FILES else len(SLOWEST_FILES)

    items.sort(key=rank)  # stable: tests keep their order within a file


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
    """The stacks, synthesized once per run: the first pytest-xdist worker to get here synthesizes into the
    run's directory (each worker's own is inside it) while the others wait on the lock, then they all read
    what it wrote. Without xdist, the session's directory is the run's."""
    run_dir = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        run_dir = run_dir.parent
    outdir = run_dir / "cdktf.out"
    synthesized = run_dir / "cdktf.out.json"  # the stack names, written once the synth has finished
    with (run_dir / "cdktf.out.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not synthesized.exists():
            synthesized.write_text(json.dumps(synth_all(outdir, SYNTH_ENVIRON)))
    names = json.loads(synthesized.read_text())
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
