"""Account and region guards: each environment accepts only its own account's credentials, and short-lived
environments deploy to the region AWS_REGION names, in the zones that region has."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from stacks.config import (
    DEV_ACCOUNT,
    PROD_ACCOUNT,
    REGION_ZONES,
    ConfigError,
    short_lived_environment,
)
from tests.conftest import VARIANT_REGIONS, Synth, require
from tools.local.emulator import start
from tools.terraform import terraform_environ

SEED_REGIONS = ("us-east-1", *VARIANT_REGIONS)


def terraform(directory: Path, *args: str, **environ: str) -> subprocess.CompletedProcess[str]:
    executable = shutil.which("terraform")
    require(executable is not None, "terraform is not on PATH")
    assert executable is not None
    return subprocess.run(
        [executable, *args, "-no-color"],
        cwd=directory,
        env={**terraform_environ(), **environ},
        capture_output=True,
        text=True,
        check=False,
    )


def test_every_real_environment_accepts_only_its_own_account(synth: Synth) -> None:
    accounts = {
        name: json.dumps(stack["provider"]["aws"][0].get("allowed_account_ids"))
        for name, stack in synth.stacks.items()
    }
    assert accounts.pop("iot-platform-prod") == json.dumps([PROD_ACCOUNT])
    assert accounts.pop("iot-platform-local") == "null", "the emulator has one account of its own"
    assert set(accounts.values()) == {json.dumps([DEV_ACCOUNT])}, "dev, staging and short-lived share one"


@pytest.mark.parametrize("region", SEED_REGIONS)
def test_a_short_lived_environment_takes_its_region_from_aws_region(region: str) -> None:
    config = short_lived_environment("pr-7", {"AWS_REGION": region})
    assert config.region == region
    assert config.network.availability_zones == REGION_ZONES[region][:2]
    assert all(region in layer for function in config.functions.values() for layer in function.layers)


def test_an_unknown_region_or_too_few_zones_is_refused_naming_it() -> None:
    with pytest.raises(ConfigError, match="region 'xx-nowhere-1' is not one the platform knows"):
        short_lived_environment("pr-7", {"AWS_REGION": "xx-nowhere-1"})
    with pytest.raises(ConfigError, match="has 3 availability zones; the network needs 4"):
        from stacks.config import _zones

        _zones("eu-west-1", 4)


@pytest.mark.parametrize("region", VARIANT_REGIONS)
def test_the_seed_regions_synthesize_in_their_own_region_and_zones(synth: Synth, region: str) -> None:
    """us-east-1 is the standing environments' region; tests/test_terraform.py validates every one."""
    stack = synth.variant(region)
    assert stack["provider"]["aws"][0]["region"] == region
    subnets = stack["resource"]["aws_subnet"].values()
    assert {subnet["availability_zone"] for subnet in subnets} == set(REGION_ZONES[region][:2])


def test_planning_prod_with_another_accounts_credentials_fails_at_once_naming_the_account(
    synth: Synth, tmp_path: Path
) -> None:
    """The emulator's account stands for dev's: prod's provider refuses it before reading anything."""
    directory = shutil.copytree(synth.stack_dir("iot-platform-prod"), tmp_path / "prod")
    # State stays on this machine; the provider's account lookup goes to the emulator.
    (directory / "backend_override.tf.json").write_text(json.dumps({"terraform": {"backend": {"local": {}}}}))
    emulator = start(tmp_path / "moto.log")
    try:
        credentials = {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_ENDPOINT_URL_STS": emulator.endpoint,
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        init = terraform(directory, "init", "-input=false", **credentials)
        assert init.returncode == 0, init.stderr
        plan = terraform(directory, "plan", "-input=false", "-refresh=false", **credentials)
    finally:
        emulator.stop()
    assert plan.returncode == 1
    assert "123456789012" in plan.stderr and "not allowed" in plan.stderr, plan.stderr
