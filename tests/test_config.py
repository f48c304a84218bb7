from pathlib import Path

import pytest

from stacks.app import synth_all
from stacks.config import (
    EMULATOR_ACCOUNT,
    MAX_SUFFIX_LENGTH,
    NAME_LIMITS,
    PROJECT,
    STANDING_ENVIRONMENTS,
    SUFFIX_RULE,
    ConfigError,
    environment,
    load_environments,
    on_emulator,
    short_lived_environment,
)


def test_every_standing_environment_and_the_suffix_one_are_loaded() -> None:
    names = [config.stack_name for config in load_environments({"ENVIRONMENT_SUFFIX": "pr-123"})]
    assert names == [f"{PROJECT}-{name}" for name in ("dev", "staging", "prod", "local", "pr-123")]
    assert [config.name for config in load_environments({})] == list(STANDING_ENVIRONMENTS)


def test_the_longest_suffix_keeps_every_limited_name_within_its_limit() -> None:
    suffix = "p" * MAX_SUFFIX_LENGTH
    short_lived_environment(suffix, {})
    for kind, component, limit in NAME_LIMITS:
        assert len(f"{PROJECT}-{component}-{suffix}") <= limit, kind


@pytest.mark.parametrize(
    ("suffix", "problem"),
    [
        ("PR-1", SUFFIX_RULE),
        ("1pr", SUFFIX_RULE),
        ("pr_1", SUFFIX_RULE),
        ("pr-", SUFFIX_RULE),
        ("pr--1", SUFFIX_RULE),
        ("pr.1", SUFFIX_RULE),
        ("p" * (MAX_SUFFIX_LENGTH + 1), f"at most {MAX_SUFFIX_LENGTH} fit"),
        ("prod", "the name of a standing environment"),
    ],
)
def test_an_invalid_suffix_is_rejected_naming_the_rule_and_the_value(suffix: str, problem: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_environments({"ENVIRONMENT_SUFFIX": suffix})
    assert problem in str(raised.value)
    assert repr(suffix) in str(raised.value)


def test_an_unknown_environment_is_rejected_naming_the_choices() -> None:
    with pytest.raises(
        ConfigError, match=r"unknown environment 'qa': choose one of dev, staging, prod, local"
    ):
        environment("qa", {})


def test_a_bad_suffix_fails_before_anything_is_synthesized(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        synth_all(tmp_path / "out", {"ENVIRONMENT_SUFFIX": "Bad_Suffix"})
    assert not (tmp_path / "out").exists()


def test_short_lived_environments_are_destroyable_and_sized_like_dev() -> None:
    dev, pr = environment("dev", {}), short_lived_environment("pr-7", {})
    assert pr.destroyable
    assert pr.network == dev.network
    assert not environment("prod", {}).destroyable
    assert not environment("staging", {}).destroyable


def test_state_location_and_key_come_from_the_environment_variables_when_set() -> None:
    key = "arn:aws:kms:eu-west-1:444455556666:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    environ = {"TF_STATE_BUCKET": "acme-state", "TF_STATE_REGION": "eu-west-1", "TF_STATE_KMS_KEY_ID": key}
    backend = environment("prod", environ).backend
    assert (backend.bucket, backend.region, backend.kms_key_id) == ("acme-state", "eu-west-1", key)
    assert environment("prod", {}).backend.kms_key_id is None


def test_a_deployment_runs_the_worker_image_it_built() -> None:
    assert environment("dev", {"WORKER_IMAGE_TAG": "3f2c1ab"}).processing.worker.image_tag == "3f2c1ab"
    assert environment("dev", {}).processing.worker.image_tag == "0.1.0"


def test_destroyable_environments_run_on_the_emulator_its_address_names() -> None:
    endpoint = "http://127.0.0.1:4567"
    environ = {"LOCAL_AWS_ENDPOINT": endpoint, "ENVIRONMENT_SUFFIX": "pr-1"}
    endpoints = {config.name: config.emulator_endpoint for config in load_environments(environ)}
    assert endpoints == {"dev": None, "staging": None, "prod": None, "local": endpoint, "pr-1": endpoint}
    assert short_lived_environment("pr-1", {}).emulator_endpoint is None


def test_a_short_lived_environment_on_the_emulator_leaves_out_what_the_local_one_does() -> None:
    """The same exclusions (stacks/emulator.py) and the emulator's account; its own name and addresses."""
    local = environment("local", {})
    preview = short_lived_environment("pr-1", {"LOCAL_AWS_ENDPOINT": local.emulator_endpoint or ""})
    assert (preview.account_id, preview.data, preview.processing) == (
        EMULATOR_ACCOUNT,
        local.data,
        local.processing,
    )
    assert local.data.cache is None and not local.processing.worker.autoscaling
    assert (preview.network.nat_mode, preview.network.interface_endpoints) == ("none", ())
    with pytest.raises(ConfigError, match="prod is not destroyable"):
        on_emulator(environment("prod", {}), "http://127.0.0.1:4567")
