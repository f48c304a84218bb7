"""Every role against the calls its code makes (recorded against moto) and what AWS does on its behalf."""

import copy
from typing import Any

import pytest

from tests.contracts.flows import AWS_APIS, FLOWS
from tests.contracts.permissions import (
    DOCUMENT_REFERENCE,
    Principal,
    grants,
    lint,
    missing,
    principals,
    unused,
)
from tests.contracts.recording import Recording
from tests.contracts.stack_model import (
    Address,
    arn,
    arn_of_value,
    environment,
    lambda_function,
    referenced,
    refers_to,
    resources,
)

ROLES = ("ingest", "processor", "query", "redis-rotation", "worker", "worker (execution)")
# VPC endpoint names of the services botocore calls by another name.
ENDPOINT_NAMES = {"kinesis": "kinesis-streams"}


def principal_named(stack: dict[str, Any], recording: Recording, name: str) -> Principal | None:
    found = [p for p in principals(stack, recording) if p.name == name]
    if not found:
        # Only the rotation function may be missing, and only where there is no Redis to rotate.
        assert name == "redis-rotation" and not resources(stack, "aws_elasticache_replication_group"), (
            f"{environment(stack)}: no role for {name}"
        )
        return None
    return found[0]


@pytest.mark.parametrize("name", ROLES)
def test_each_role_is_granted_every_call_its_code_and_aws_on_its_behalf_make(
    stack: dict[str, Any], recording: Recording, name: str
) -> None:
    principal = principal_named(stack, recording, name)
    if principal is None:
        return
    role_grants, unreadable = grants(stack, principal.role)
    problems = list(principal.problems) + unreadable + missing(stack, principal, role_grants)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", ROLES)
def test_each_role_is_granted_nothing_its_code_and_aws_on_its_behalf_do_not_use(
    stack: dict[str, Any], recording: Recording, name: str
) -> None:
    principal = principal_named(stack, recording, name)
    if principal is None:
        return
    found = unused(stack, principal, grants(stack, principal.role)[0])
    assert not found, "\n".join(found)


@pytest.mark.parametrize("name", ROLES)
def test_no_statement_grants_an_action_on_a_resource_type_it_does_not_apply_to(
    stack: dict[str, Any], recording: Recording, name: str
) -> None:
    principal = principal_named(stack, recording, name)
    if principal is None:
        return
    found = lint(stack, principal, grants(stack, principal.role)[0])
    assert not found, "\n".join(found)


def test_the_flow_matrix_names_every_aws_service_the_code_calls(recording: Recording) -> None:
    services = {flow.client: set(flow.services) for flow in FLOWS if flow.server == AWS_APIS}
    unlisted = sorted(
        f"{who} calls {call.service} ({call.operation}), which FLOWS does not list for {who}: "
        f"{sorted(services.get(who, ()))}"
        for who, calls in recording.calls.items()
        for call in calls
        if ENDPOINT_NAMES.get(call.service, call.service) not in services.get(who, set())
    )
    assert not unlisted, "\n".join(unlisted)


def test_the_recording_saw_every_function_and_the_worker_call_aws(recording: Recording) -> None:
    silent = sorted({"ingest", "processor", "query", "redis-rotation", "worker"} - set(recording.calls))
    assert not silent, f"the harness recorded no AWS call for {silent}; expected calls from each"


# --- the check catches what it must ------------------------------------------------------------------


def processor_table_statement(stack: dict[str, Any]) -> tuple[dict[str, Any], Address, Address]:
    """The processor's policy statement on its raw readings table, that table and the aggregates table."""
    function = lambda_function(stack, "processor")
    assert function is not None
    variables = function[1]["environment"]["variables"]
    raw = arn_of_value(stack, "aws_dynamodb_table", variables["RAW_TABLE_NAME"])[1]
    aggregates = arn_of_value(stack, "aws_dynamodb_table", variables["AGGREGATES_TABLE_NAME"])[1]
    assert raw is not None and aggregates is not None
    role = referenced(function[1]["role"])
    assert role is not None
    for policy in resources(stack, "aws_iam_role_policy").values():
        document_name = DOCUMENT_REFERENCE.fullmatch(policy["policy"])
        if not refers_to(policy["role"], role) or document_name is None:
            continue
        document = stack["data"]["aws_iam_policy_document"][document_name.group(1)]
        for statement in document["statement"]:
            if "dynamodb:BatchWriteItem" in statement["actions"] and any(
                refers_to(r, raw) for r in statement["resources"]
            ):
                return statement, raw, aggregates
    raise AssertionError(f"{environment(stack)}: no statement grants the processor BatchWriteItem on {raw}")


def processor_findings(stack: dict[str, Any], recording: Recording) -> list[str]:
    principal = principal_named(stack, recording, "processor")
    assert principal is not None
    return missing(stack, principal, grants(stack, principal.role)[0])


def test_the_check_reports_a_policy_that_drops_an_action_the_code_calls(
    stack: dict[str, Any], recording: Recording
) -> None:
    mutated = copy.deepcopy(stack)
    statement, raw, _ = processor_table_statement(mutated)
    statement["actions"].remove("dynamodb:BatchWriteItem")
    findings = processor_findings(mutated, recording)
    expected = f"needs dynamodb:BatchWriteItem on {arn(mutated, raw)}"
    assert any(expected in finding for finding in findings), (
        f"{environment(stack)}: dropped BatchWriteItem from the processor's raw table policy; "
        f"expected a finding containing {expected!r}, found {findings}"
    )


def test_the_check_reports_a_policy_scoped_to_the_wrong_table(
    stack: dict[str, Any], recording: Recording
) -> None:
    mutated = copy.deepcopy(stack)
    statement, raw, aggregates = processor_table_statement(mutated)
    statement["resources"] = [f"${{{aggregates.type}.{aggregates.name}.arn}}"]
    findings = processor_findings(mutated, recording)
    expected = f"needs dynamodb:BatchWriteItem on {arn(mutated, raw)}"
    assert any(expected in finding for finding in findings), (
        f"{environment(stack)}: pointed the processor's raw table statement at the aggregates table; "
        f"expected a finding containing {expected!r}, found {findings}"
    )


def test_the_check_reports_a_grant_nothing_uses(stack: dict[str, Any], recording: Recording) -> None:
    mutated = copy.deepcopy(stack)
    statement, raw, _ = processor_table_statement(mutated)
    statement["actions"].append("dynamodb:Scan")
    principal = principal_named(mutated, recording, "processor")
    assert principal is not None
    findings = unused(mutated, principal, grants(mutated, principal.role)[0])
    assert any("dynamodb:Scan" in f and arn(mutated, raw) in f for f in findings), (
        f"{environment(stack)}: granted the processor dynamodb:Scan on its raw table; "
        f"expected it reported as unused, found {findings}"
    )


def test_the_check_reports_a_database_login_granted_as_another_user(
    stack: dict[str, Any], recording: Recording
) -> None:
    """rds-db:connect is never recorded (tokens are signed locally): the need comes from DATABASE_USER."""
    mutated = copy.deepcopy(stack)
    principal = principal_named(mutated, recording, "query")
    assert principal is not None
    (statement,) = [
        s
        for policy in resources(mutated, "aws_iam_role_policy").values()
        if refers_to(policy["role"], principal.role)
        for s in mutated["data"]["aws_iam_policy_document"][
            DOCUMENT_REFERENCE.fullmatch(policy["policy"]).group(1)  # type: ignore[union-attr]
        ]["statement"]
        if s["actions"] == ["rds-db:connect"]
    ]
    assert statement["resources"][0].endswith("/iot_reader")
    statement["resources"] = [statement["resources"][0].replace("/iot_reader", "/iot_worker")]
    findings = missing(mutated, principal, grants(mutated, principal.role)[0])
    assert any("needs rds-db:connect on arn:aws:rds-db:" in f and "/iot_reader: " in f for f in findings), (
        f"{environment(stack)}: granted the query function a login as iot_worker instead of iot_reader; "
        f"expected a finding for iot_reader, found {findings}"
    )
