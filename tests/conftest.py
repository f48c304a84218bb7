"""One synth per test run: every test, on every pytest-xdist worker, reads the same synthesized stacks."""

import fcntl
import gc
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

import fast_synth
from stacks.app import synth_all
from stacks.config import (
    MAX_SUFFIX_LENGTH,
    PROJECT,
    STANDING_ENVIRONMENTS,
    EnvironmentConfig,
    environment,
    short_lived_environment,
)
from tests.postgres import (  # noqa: F401  (one server per process, for functions/, worker/ and tools)
    database_batches,
    local_stores,
    new_database,
    postgres_server,
)

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
# Configurations no environment has, each synthesized on its own beside the environments (label -> config):
# a short-lived environment in each seed region but the standing environments' (us-east-1), and dev with a
# custom domain for its API (it needs a certificate, which no environment has).
VARIANT_REGIONS = ("eu-west-1", "ca-central-1")
VARIANT_NAMES = [*VARIANT_REGIONS, "custom-domain"]
CUSTOM_DOMAIN = ("api.example.com", "arn:aws:acm:us-east-1:111122223333:certificate/abc")


def variant_configs() -> dict[str, EnvironmentConfig]:
    from iot_constructs.api import CustomDomain

    dev = environment("dev", {})
    api = replace(dev.ingestion.api, custom_domain=CustomDomain(*CUSTOM_DOMAIN))
    return {
        **{region: short_lived_environment("pr-7", {"AWS_REGION": region}) for region in VARIANT_REGIONS},
        "custom-domain": replace(dev, ingestion=replace(dev.ingestion, api=api)),
    }


# pytest-xdist (`--dist loadfile`, see the Makefile) gives each worker whole files, in collection order, so
# that a file's costly fixture is built once. These files come first, the longest first: the local end to
# end, its deployment's chain of Terraform runs, on a worker of its own from the start; then the ones that
# keep a CPU busy longest (the stock synth, checkov, the two-process worker test, mypy, terraform validate,
# the plan with another account's credentials).
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
    variant_dirs: dict[str, Path]
    """Variant label (VARIANT_NAMES) -> the directory of its stack."""
    fast: bool
    """Whether fast synth made them (fast_synth.active())."""

    def stack_dir(self, name: str) -> Path:
        return self.outdir / "stacks" / name

    def variant(self, label: str) -> dict[str, Any]:
        stack: dict[str, Any] = json.loads((self.variant_dirs[label] / "cdk.tf.json").read_text())
        return stack


def synth_variants(outdir: Path) -> dict[str, str]:
    """Each variant in an app of its own under `outdir`: label -> its stack's directory."""
    from cdktf import App

    from stacks.platform_stack import PlatformStack

    directories = {}
    for label, config in variant_configs().items():
        (outdir / label).mkdir(parents=True)
        app = App(outdir=str(outdir / label))
        PlatformStack(app, config)
        app.synth()
        directories[label] = str(outdir / label / "stacks" / config.stack_name)
    return directories


@pytest.fixture(scope="session")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    """The stacks and the variants, synthesized once per run: the first pytest-xdist worker to get here
    synthesizes into the run's directory (each worker's own is inside it) while the others wait on the lock,
    then they all read what it wrote. Without xdist, the session's directory is the run's."""
    run_dir = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        run_dir = run_dir.parent
    outdir = run_dir / "cdktf.out"
    synthesized = run_dir / "cdktf.out.json"  # what was synthesized, written once the synth has finished
    with (run_dir / "cdktf.out.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not synthesized.exists():
            names = synth_all(outdir, SYNTH_ENVIRON)
            variants = synth_variants(run_dir / "variants.out")
            written = {"stacks": names, "variants": variants, "fast": fast_synth.active()}
            synthesized.write_text(json.dumps(written))
    written = json.loads(synthesized.read_text())
    assert written["stacks"] == STACK_NAMES
    assert list(written["variants"]) == VARIANT_NAMES
    return Synth(
        outdir,
        {name: json.loads((outdir / "stacks" / name / "cdk.tf.json").read_text()) for name in STACK_NAMES},
        {label: Path(directory) for label, directory in written["variants"].items()},
        written["fast"],
    )


@pytest.fixture(params=STACK_NAMES)
def stack_name(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def stack(synth: Synth, stack_name: str) -> dict[str, Any]:
    """One synthesized stack; a test that takes it runs once per environment."""
    return synth.stacks[stack_name]
