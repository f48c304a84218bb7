"""The local environment end to end, on one deployment and in this order: everything deploys, and a plan
started meanwhile fails on the state lock; readings make the round trip and verify passes what the emulator
allows, while three plans run beside them (a second plan changes nothing, the emulator's ignored diffs are
exactly those listed, the plan review reads a change right); and the destroy leaves nothing behind.

`make verify` (tools/verify.py) checks the deployment as far as the emulator allows.
"""

import json
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import tools.verify
from stacks.emulator import IGNORED_DRIFT
from tests.e2e.conftest import SUFFIX, LocalEnvironment
from tests.e2e.inventory import inventory
from tools.local.plan_review import PlanSummary, review, summarize
from tools.local.round_trip import RoundTrip, load_outputs, round_trip
from tools.local.servers import LocalStores
from tools.local.terraform import PLAN_SECONDS, Terraform


def changed_attributes(terraform: Terraform) -> dict[str, set[str]]:
    """Address -> the attributes a plan would change, from `terraform plan -detailed-exitcode`. The plan takes
    no state lock: it changes nothing, and runs beside others (see `plans`)."""
    # fmt: off
    plan = terraform.run(
        "plan", "-input=false", "-lock=false", "-detailed-exitcode", "-out=check.tfplan",
        timeout=PLAN_SECONDS, ok=(0, 2),
    )
    # fmt: on
    if plan.returncode == 0:
        return {}
    shown = terraform.run("show", "-json", "check.tfplan", timeout=PLAN_SECONDS, capture=True)
    changes = {}
    for resource in json.loads(shown.stdout)["resource_changes"]:
        change = resource["change"]
        if change["actions"] in (["no-op"], ["read"]):
            continue
        before, after = change["before"] or {}, change["after"] or {}
        unknown = change["after_unknown"] or {}
        # Attributes known only after apply follow from a change elsewhere, which is listed.
        changes[resource["address"]] = {
            name
            for name in before.keys() | after.keys()
            if unknown.get(name) is not True and before.get(name) != after.get(name)
        }
    return changes


def without_ignored_drift(stack: dict[str, Any]) -> None:
    """Takes out stacks/emulator.py's ignore_changes."""
    for drift in IGNORED_DRIFT:
        for resource in stack["resource"].get(drift.resource_type, {}).values():
            resource["lifecycle"]["ignore_changes"].remove(drift.attribute)


def reviewed_change(local_environment: LocalEnvironment, directory: Path) -> tuple[str, PlanSummary]:
    """The plan review's Markdown and summary of a change to the deployed stack: ingest's memory (an update),
    the readings table's sort key and the logs key's alias (replacements, of data and of none)."""
    naming = local_environment.config.naming

    def named(resources: dict[str, dict[str, Any]], attribute: str, value: str) -> dict[str, Any]:
        (resource,) = (r for r in resources.values() if r[attribute] == value)
        return resource

    def change(stack: dict[str, Any]) -> None:
        resources = stack["resource"]
        named(resources["aws_lambda_function"], "function_name", naming.name("ingest"))["memory_size"] += 256
        table = named(resources["aws_dynamodb_table"], "name", naming.name("readings"))
        table["range_key"] = "recorded_at"
        table["attribute"] = [
            {**a, "name": "recorded_at"} if a["name"] == "timestamp" else a for a in table["attribute"]
        ]
        named(resources["aws_kms_alias"], "name", f"alias/{naming.name('logs')}")["name"] += "-v2"

    changed = local_environment.variant(directory, change)
    markdown = review(changed, local_environment.config.stack_name)
    plan = json.loads((changed.stack_dir / "plan.json").read_text())
    return markdown, summarize(local_environment.config.stack_name, plan)


@dataclass(frozen=True)
class Plans:
    after_apply: Future[dict[str, set[str]]]
    """changed_attributes of the deployed stack."""
    without_ignored_drift: Future[dict[str, set[str]]]
    """changed_attributes of the deployed stack without stacks/emulator.py's ignore_changes."""
    review: Future[tuple[str, PlanSummary]]
    """reviewed_change."""

    def wait(self) -> None:
        futures: list[Future[Any]] = [self.after_apply, self.without_ignored_drift, self.review]
        wait(futures)


@pytest.fixture(scope="module", autouse=True)
def plans(local_environment: LocalEnvironment, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plans]:
    """The plans that tests below check, started as soon as the stack is deployed. They run beside each other
    and beside the round trip: none takes the state lock, and each spends most of its time waiting on the
    emulator."""
    directory = tmp_path_factory.mktemp("plans")
    with ThreadPoolExecutor(3) as pool:
        yield Plans(
            pool.submit(changed_attributes, local_environment.terraform),
            pool.submit(
                lambda: changed_attributes(
                    local_environment.variant(directory / "plain", without_ignored_drift)
                )
            ),
            pool.submit(reviewed_change, local_environment, directory / "changed"),
        )


def test_every_resource_of_the_local_stack_is_deployed(local_environment: LocalEnvironment) -> None:
    stack = local_environment.stack
    synthesized = {f"{kind}.{name}" for kind, resources in stack["resource"].items() for name in resources}
    assert set(local_environment.terraform.resources()) == synthesized


def test_readings_make_the_round_trip_through_every_store(
    local_environment: LocalEnvironment, deployment_stores: LocalStores
) -> None:
    outputs = load_outputs(local_environment.outputs_file)
    endpoint = local_environment.emulator.endpoint
    result = round_trip(
        outputs, endpoint=endpoint, stores=deployment_stores, devices=3, readings_per_device=15
    )
    assert result == RoundTrip(
        sent=45, accepted=45, stored=45, aggregated=45, rolled_up=45, archived=45, latest=3, returned=45
    )


def test_verify_passes_what_the_emulator_allows_and_says_what_it_skipped(
    local_environment: LocalEnvironment,
    deployment_stores: LocalStores,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # As `make deploy` records them.
    monkeypatch.setattr(tools.verify, "running_stores", lambda: deployment_stores)
    environ = {"LOCAL_AWS_ENDPOINT": local_environment.emulator.endpoint}
    code = tools.verify.main([SUFFIX, "--outputs", str(local_environment.outputs_file)], environ=environ)
    output = capsys.readouterr().out
    assert code == 0, output
    statuses = {
        line.split()[1]: line.split()[0] for line in output.splitlines() if line[:4] in ("PASS", "SKIP")
    }
    assert statuses == {
        "api": "SKIP",  # moto serves no HTTPS API
        "stream-mapping": "PASS",
        "worker": "SKIP",  # moto runs no containers
        "alert-topic": "SKIP",  # a short-lived environment subscribes no one
        "data-stores": "PASS",  # the worker's probe, against the local stores
    }


def test_a_plan_fails_at_once_while_the_deploy_holds_the_state_lock(
    local_environment: LocalEnvironment,
) -> None:
    refused = local_environment.plan_during_apply
    assert refused is not None, "the deploy ended before its state lock was seen"
    assert refused.returncode == 1, refused.stdout
    assert "Error acquiring the state lock" in refused.stdout and "PreconditionFailed" in refused.stdout
    assert not local_environment.locked()  # the deploy released it


def test_a_plan_right_after_the_apply_changes_nothing(plans: Plans) -> None:
    # `terraform plan -detailed-exitcode` exits 0; if not, the assertion shows what would change.
    assert plans.after_apply.result() == {}


def test_the_ignored_diffs_are_exactly_those_the_emulator_causes(
    local_environment: LocalEnvironment, plans: Plans
) -> None:
    """Without stacks/emulator.py's ignore_changes, the plan shows each listed diff, and nothing else."""
    resource_types = {address: address.split(".")[0] for address in local_environment.terraform.resources()}
    differing = {
        (resource_types[address], attribute)
        for address, attributes in plans.without_ignored_drift.result().items()
        for attribute in attributes
    }
    listed = {
        (d.resource_type, d.attribute)
        for d in IGNORED_DRIFT
        if d.resource_type in set(resource_types.values())
    }
    assert differing == listed


def test_the_plan_review_shows_a_change_and_flags_a_stateful_replacement(plans: Plans) -> None:
    markdown, summary = plans.review.result()

    # The function is updated in place; the table's new key replaces it (and its data), the alias is
    # replaced too but holds no data.
    (ingest,) = (
        c for c in summary.changes if c.resource_type == "aws_lambda_function" and "ingest" in c.address
    )
    assert ingest.action == "update"
    table, alias = sorted(summary.removals, key=lambda change: change.resource_type)
    assert (table.resource_type, table.action, table.forced_by, table.stateful) == (
        "aws_dynamodb_table",
        "replace",
        ("range_key",),
        "table",
    )
    assert (alias.resource_type, alias.action, alias.forced_by, alias.stateful) == (
        "aws_kms_alias",
        "replace",
        ("name",),
        None,
    )
    assert f"| 0 | {summary.count('update')} | 2 | 0 |" in markdown  # create, update, replace, destroy
    assert "> 1 stateful resource(s) will be replaced or destroyed" in markdown
    assert f"| `{table.address}` | replace | changed `range_key` | **table** |" in markdown
    assert f"| `{alias.address}` | replace | changed `name` |  |" in markdown
    assert "**Security scan (checkov): passed**" in markdown


def test_destroy_leaves_nothing_behind(local_environment: LocalEnvironment, plans: Plans) -> None:
    plans.wait()  # no plan reads what is being destroyed
    local_environment.terraform.destroy()
    local_environment.deployed = False
    bucket, key = local_environment.state
    held = inventory(local_environment.emulator, local_environment.config.region, bucket, key)
    left_behind = {service: items for service, items in held.items() if items}
    assert not left_behind, json.dumps(left_behind, indent=1)
