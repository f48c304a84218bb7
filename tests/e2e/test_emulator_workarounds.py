"""stacks/emulator.py reaches the local stack and no other: real environments never ignore drift."""

from collections.abc import Iterator
from typing import Any

from stacks.config import PROJECT
from stacks.emulator import IGNORED_DRIFT, OMITTED_ARGUMENTS, UNSUPPORTED_RESOURCES
from stacks.platform_stack import EMULATED_SERVICES
from tests.conftest import Synth
from tests.e2e.inventory import LISTERS

LOCAL = f"{PROJECT}-local"


def resources_of(stack: dict[str, Any], resource_type: str) -> Iterator[dict[str, Any]]:
    yield from stack["resource"].get(resource_type, {}).values()


def test_the_local_stack_leaves_out_what_the_emulator_cannot_run(synth: Synth) -> None:
    assert not set(synth.stacks[LOCAL]["resource"]) & set(UNSUPPORTED_RESOURCES)


def test_only_the_local_stack_ignores_the_diffs_the_emulator_causes(synth: Synth, stack_name: str) -> None:
    for drift in IGNORED_DRIFT:
        for resource in resources_of(synth.stacks[stack_name], drift.resource_type):
            ignored = drift.attribute in resource.get("lifecycle", {}).get("ignore_changes", [])
            assert ignored == (stack_name == LOCAL), f"{drift.resource_type}.{drift.attribute}"


def test_only_the_local_stack_drops_the_arguments_the_emulator_rejects(synth: Synth, stack_name: str) -> None:
    for omitted in OMITTED_ARGUMENTS:
        for resource in resources_of(synth.stacks[stack_name], omitted.resource_type):
            assert (omitted.attribute in resource) == (stack_name != LOCAL), omitted


def test_the_inventory_covers_every_service_the_emulator_stands_in_for() -> None:
    # STS holds nothing; S3's lister needs the state's location, so inventory() adds it.
    assert {*LISTERS, "s3"} == set(EMULATED_SERVICES) - {"sts"}
