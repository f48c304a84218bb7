"""Each role against what it is used for, in one synthesized stack.

A role needs what its code calls (recorded by recording.py, resolved through the deployment settings that
name each resource) and what AWS does on its behalf (aws_needs.py). Its policies are the policy documents
attached to it; their actions are expanded with policyuniverse and their resources resolved to ARNs like the
requirements', so that a grant on the wrong table, a missing action and an action nobody uses all show.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass
from typing import Any

from policyuniverse.arn import ARN  # type: ignore[import-untyped]
from policyuniverse.expander_minimizer import get_actions_from_statement  # type: ignore[import-untyped]

from tests.contracts.aws_needs import KEY_ARGUMENTS, KEY_USE, NEEDS
from tests.contracts.recorder import Call
from tests.contracts.recording import ROTATED_SECRET, Recording, setting_for
from tests.contracts.stack_model import (
    MASTER_SECRET_ARN,
    MASTER_SECRET_HOLDERS,
    REFERENCE,
    Address,
    Body,
    Stack,
    arn,
    arn_of_value,
    attribute,
    body,
    build_arn,
    container_definitions,
    container_environment,
    ecs_service,
    environment,
    interpolate,
    lambda_function,
    referenced,
    refers_to,
    resolve,
    resources,
    task_definition,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # parliament imports pkg_resources, which warns of its own deprecation
    import parliament  # type: ignore[import-untyped]

FUNCTIONS = ("ingest", "processor", "query", "redis-rotation")
# The resource type each service's calls touch.
SERVICE_TYPES = {
    "dynamodb": "aws_dynamodb_table",
    "kinesis": "aws_kinesis_stream",
    "sns": "aws_sns_topic",
    "ssm": "aws_ssm_parameter",
    "secretsmanager": "aws_secretsmanager_secret",
    "elasticache": "aws_elasticache_replication_group",
    "sqs": "aws_sqs_queue",
}
# Settings naming a resource that exists only beside a data store some stacks lack, by the store's resource
# type: the local stack has no Redis, so its functions get no Redis settings and make no calls for it.
STORE_SETTINGS = {"REDIS_AUTH_TOKEN_SECRET_ARN": "aws_elasticache_replication_group"}
# Parliament's findings that mean a statement cannot do what it says.
LINT_ISSUES = {"RESOURCE_MISMATCH", "UNKNOWN_ACTION", "UNKNOWN_PREFIX", "MALFORMED"}
DOCUMENT_REFERENCE = re.compile(r"\$\{data\.aws_iam_policy_document\.([^.{}]+)\.json\}")


@dataclass(frozen=True)
class Requirement:
    action: str
    resource: str
    why: str
    context: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Principal:
    name: str
    role: Address
    requirements: tuple[Requirement, ...]
    problems: tuple[str, ...]
    """Requirements that could not be traced to a resource of the stack."""


@dataclass(frozen=True)
class Grant:
    policy: str
    statement: dict[str, Any]
    """The statement as IAM JSON, its references resolved to ARNs."""

    @property
    def effect(self) -> str:
        return str(self.statement.get("Effect", "Allow"))

    @property
    def resources(self) -> list[str]:
        return _listed(self.statement.get("Resource", self.statement.get("NotResource", [])))


def _listed(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


# --- requirements -------------------------------------------------------------------------------------


def _needs(key: str, resource: str, context: tuple[tuple[str, str], ...] = ()) -> list[Requirement]:
    need = NEEDS[key]
    return [Requirement(action, resource, f"{need.when} ({need.url})", context) for action in need.actions]


def _key_of(stack: Stack, address: Address) -> Address | None:
    """The customer managed key a resource is encrypted with, if any."""
    value: Any = body(stack, address)
    for argument in KEY_ARGUMENTS.get(address.type, ()):
        value = value[0] if isinstance(value, list) and value else value
        value = value.get(argument) if isinstance(value, dict) else None
    key = referenced(value)
    return key if key is not None and key.type == "aws_kms_key" else None


def key_requirements(stack: Stack, address: Address, action: str) -> list[Requirement]:
    key = _key_of(stack, address)
    need = KEY_USE.get((address.type, action))
    return _needs(need, arn(stack, key)) if key is not None and need is not None else []


def _log_stream(stack: Stack, group: str) -> str:
    return build_arn(stack, "logs", f"log-group:{interpolate(stack, group)}:log-stream:a-log-stream")


def code_requirements(
    stack: Stack, who: str, calls: tuple[Call, ...], setting: Any
) -> tuple[list[Requirement], list[str]]:
    """What the recorded calls need here, each resource named as the deployment names it (`setting`)."""
    found: list[Requirement] = []
    problems = []
    for call in calls:
        if call.resource == "*":
            found.append(Requirement(call.action, "*", f"its code calls {call.operation}"))
            continue
        name = setting_for(call.resource)
        type_ = SERVICE_TYPES.get(call.service)
        value = setting(name) if name and type_ else None
        if name is None or type_ is None:
            problems.append(
                f"{who} calls {call.operation} on {call.resource}, which the recording cannot trace"
            )
            continue
        if value is None and name in STORE_SETTINGS and not resources(stack, STORE_SETTINGS[name]):
            continue
        if value is None:
            problems.append(
                f"{who}'s code calls {call.operation} on the {type_} named by {name}, which its deployment "
                "does not set"
            )
            continue
        resource, address = arn_of_value(stack, type_, value)
        found.append(Requirement(call.action, resource, f"its code calls {call.operation} ({name})"))
        if address is not None:
            found += key_requirements(stack, address, call.action)
    return found, problems


def database_user_requirements(stack: Stack, who: str, setting: Any) -> tuple[list[Requirement], list[str]]:
    """rds-db:connect as the DATABASE_USER a principal's settings name, on the database DATABASE_HOST names:
    IAM authentication tokens are signed locally, so the recording never sees this one."""
    user, host = setting("DATABASE_USER"), setting("DATABASE_HOST")
    if not user:
        return [], []
    database = referenced(host)
    if database is None or database.type not in MASTER_SECRET_HOLDERS:
        return [], [f"{who} logs in to PostgreSQL as {user} at {host}, which is no database of the stack"]
    resource_id = attribute(
        stack, database, "cluster_resource_id" if database.type == "aws_rds_cluster" else "resource_id"
    )
    return _needs("rds-iam-auth", build_arn(stack, "rds-db", f"dbuser:{resource_id}/{user}")), []


def function_requirements(stack: Stack, address: Address, function: Body) -> list[Requirement]:
    """What Lambda does with the function's role: interfaces, traces, logs, settings, event sources."""
    found = []
    vpc_config = function.get("vpc_config", {})
    if vpc_config.get("subnet_ids"):
        found += _needs("lambda-vpc-interfaces", build_arn(stack, "ec2", "network-interface/eni-of-lambda"))
        for subnet in vpc_config["subnet_ids"]:
            found += _needs(
                "lambda-vpc-placement", build_arn(stack, "ec2", f"subnet/{interpolate(stack, subnet)}")
            )
        for group in vpc_config.get("security_group_ids", []):
            found += _needs(
                "lambda-vpc-placement", build_arn(stack, "ec2", f"security-group/{interpolate(stack, group)}")
            )
        found += _needs("lambda-vpc-describe", "*")
    if function.get("tracing_config", {}).get("mode") == "Active":
        found += _needs("lambda-tracing", "*")
    group = function.get("logging_config", {}).get("log_group") or f"/aws/lambda/{function['function_name']}"
    found += _needs("lambda-logs", _log_stream(stack, group))
    if function.get("kms_key_arn"):
        found += _needs("lambda-environment-key", interpolate(stack, function["kms_key_arn"]))
    queue = referenced(function.get("dead_letter_config", {}).get("target_arn"))
    if queue is not None and queue.type == "aws_sqs_queue":
        found += _needs("lambda-dead-letter-queue", arn(stack, queue)) + key_requirements(
            stack, queue, "sqs:SendMessage"
        )
    for mapping in resources(stack, "aws_lambda_event_source_mapping").values():
        if not refers_to(mapping.get("function_name"), address):
            continue
        source = referenced(mapping.get("event_source_arn"))
        if source is not None and source.type == "aws_kinesis_stream":
            found += _needs("kinesis-event-source", arn(stack, source))
            found += key_requirements(stack, source, "kinesis:GetRecords")
        elif source is not None and source.type == "aws_kinesis_stream_consumer":
            found += _needs("kinesis-event-source-fan-out", interpolate(stack, mapping["event_source_arn"]))
        destination = referenced(
            mapping.get("destination_config", {}).get("on_failure", {}).get("destination_arn")
        )
        if destination is not None and destination.type == "aws_sqs_queue":
            found += _needs("event-source-on-failure", arn(stack, destination))
            found += key_requirements(stack, destination, "sqs:SendMessage")
    return found


def _rotated_secret(stack: Stack, function: Address) -> str | None:
    for rotation in resources(stack, "aws_secretsmanager_secret_rotation").values():
        if refers_to(rotation.get("rotation_lambda_arn"), function):
            return str(rotation["secret_id"])
    return None


def worker_requirements(
    stack: Stack, task: Body, calls: tuple[Call, ...]
) -> tuple[list[Requirement], list[Requirement], list[str]]:
    """(task role, execution role, problems) for the worker's task definition."""
    containers = container_definitions(task)
    settings: dict[str, str] = {}
    for container in containers:
        settings |= container_environment(container)
    task_role, problems = code_requirements(stack, "the worker", calls, settings.get)
    database_login, unknown_database = database_user_requirements(stack, "the worker", settings.get)
    task_role += database_login
    problems += unknown_database
    for volume in task.get("volume", []):
        efs = volume.get("efs_volume_configuration")
        if not efs or efs.get("authorization_config", {}).get("iam") != "ENABLED":
            continue
        file_system = referenced(efs["file_system_id"])
        assert file_system is not None, f"EFS volume without a file system reference: {volume}"
        access_point = referenced(efs["authorization_config"].get("access_point_id"))
        context = (("elasticfilesystem:AccessPointArn", arn(stack, access_point)),) if access_point else ()
        task_role += _needs("efs-mount", arn(stack, file_system), context)
        mounts = [
            m for c in containers for m in c.get("mountPoints", []) if m.get("sourceVolume") == volume["name"]
        ]
        if any(not mount.get("readOnly", False) for mount in mounts):
            task_role += _needs("efs-write", arn(stack, file_system), context)
    execution_role: list[Requirement] = []
    for container in containers:
        image = REFERENCE.search(container.get("image", ""))
        if image and image.group(1) == "aws_ecr_repository":
            execution_role += _needs("ecs-registry-login", "*")
            execution_role += _needs("ecs-image-pull", arn(stack, Address(image.group(1), image.group(2))))
        logs = container.get("logConfiguration", {})
        if logs.get("logDriver") == "awslogs":
            execution_role += _needs("ecs-awslogs", _log_stream(stack, logs["options"]["awslogs-group"]))
        for secret in container.get("secrets", []):
            source = REFERENCE.search(secret["valueFrom"])
            address = Address(source.group(1), source.group(2)) if source else None
            if (
                source is not None
                and address is not None
                and (
                    address.type == "aws_secretsmanager_secret"
                    or (address.type in MASTER_SECRET_HOLDERS and source.group(3) == MASTER_SECRET_ARN)
                )
            ):
                execution_role += _needs("ecs-secrets", interpolate(stack, source.group(0)))
                execution_role += key_requirements(stack, address, "secretsmanager:GetSecretValue")
            else:
                problems.append(
                    f"the worker's secret {secret['name']} comes from {secret['valueFrom']}: not modelled"
                )
    return task_role, execution_role, problems


def principals(stack: Stack, recording: Recording) -> list[Principal]:
    """Every role a function or the worker runs with, and what it needs."""
    found = []
    for component in FUNCTIONS:
        function = lambda_function(stack, component)
        if function is None:
            continue
        address, resource = function
        variables = resource.get("environment", {}).get("variables", {})

        def setting(
            name: str, address: Address = address, variables: dict[str, str] = variables
        ) -> str | None:
            return _rotated_secret(stack, address) if name == ROTATED_SECRET else variables.get(name)

        needed, problems = code_requirements(stack, component, recording.calls.get(component, ()), setting)
        database_login, unknown_database = database_user_requirements(stack, component, setting)
        needed += database_login + function_requirements(stack, address, resource)
        problems += unknown_database
        role = referenced(resource["role"])
        assert role is not None, f"{component}'s role is not a reference: {resource['role']}"
        found.append(Principal(component, role, tuple(needed), tuple(problems)))
    service = ecs_service(stack, "worker")
    if service is not None:
        _, task = task_definition(stack, service[1])
        task_needs, execution_needs, problems = worker_requirements(
            stack, task, recording.calls.get("worker", ())
        )
        for name, argument, needed in (
            ("worker", "task_role_arn", task_needs),
            ("worker (execution)", "execution_role_arn", execution_needs),
        ):
            role = referenced(task.get(argument))
            assert role is not None, f"the worker's {argument} is not a reference: {task.get(argument)}"
            found.append(Principal(name, role, tuple(needed), tuple(problems if name == "worker" else ())))
    return found


# --- grants ----------------------------------------------------------------------------------------------


def _document(stack: Stack, value: str) -> list[dict[str, Any]]:
    """A policy argument's statements as IAM JSON: a policy document data source, or literal JSON."""
    match = DOCUMENT_REFERENCE.fullmatch(value)
    if match is None:
        statements = json.loads(value)["Statement"]
        return [statements] if isinstance(statements, dict) else list(statements)
    document = stack["data"]["aws_iam_policy_document"][match.group(1)]
    unsupported = set(document) - {"statement", "//", "version"}
    assert not unsupported, f"policy document {match.group(1)} uses {unsupported}: not modelled"
    converted = []
    for statement in document.get("statement", []):
        iam: dict[str, Any] = {"Effect": statement.get("effect", "Allow")}
        for key, name in (
            ("actions", "Action"),
            ("not_actions", "NotAction"),
            ("resources", "Resource"),
            ("not_resources", "NotResource"),
        ):
            if key in statement:
                iam[name] = statement[key]
        for condition in statement.get("condition", []):
            iam.setdefault("Condition", {}).setdefault(condition["test"], {})[condition["variable"]] = (
                condition["values"]
            )
        converted.append(iam)
    return converted


def grants(stack: Stack, role: Address) -> tuple[list[Grant], list[str]]:
    """The statements of every policy attached to the role, and what could not be read."""
    found: list[Grant] = []
    problems = []
    for policy in resources(stack, "aws_iam_role_policy").values():
        if refers_to(policy["role"], role):
            found += [Grant(policy["name"], resolve(stack, s)) for s in _document(stack, policy["policy"])]
    for attachment in resources(stack, "aws_iam_role_policy_attachment").values():
        if not refers_to(attachment["role"], role):
            continue
        managed = referenced(attachment["policy_arn"])
        if managed is not None and managed.type == "aws_iam_policy":
            policy = body(stack, managed)
            found += [
                Grant(policy.get("name", managed.name), resolve(stack, s))
                for s in _document(stack, policy["policy"])
            ]
        else:
            problems.append(
                f"attached policy {attachment['policy_arn']} cannot be evaluated here: attach a document"
            )
    for inline in body(stack, role).get("inline_policy", []):
        found += [
            Grant(inline.get("name", "inline"), resolve(stack, s)) for s in _document(stack, inline["policy"])
        ]
    for managed_arn in body(stack, role).get("managed_policy_arns", []):
        problems.append(f"managed policy {managed_arn} cannot be evaluated here: attach a document")
    return found, problems


# --- evaluation --------------------------------------------------------------------------------------------


def _glob(pattern: str, value: str) -> bool:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.DOTALL) is not None


def resource_matches(pattern: str, resource: str) -> bool:
    """IAM's matching of a Resource element against a requested ARN, segment by segment."""
    if pattern == "*":
        return True
    if resource == "*":
        return False  # an action without resource-level permissions needs Resource "*"
    wanted, requested = ARN(pattern), ARN(resource)
    if wanted.error or requested.error:
        return _glob(pattern, resource)
    return all(
        _glob(a or "", b or "")
        for a, b in (
            (wanted.partition, requested.partition),
            (wanted.tech, requested.tech),
            (wanted.region, requested.region),
            (wanted.account_number, requested.account_number),
            (wanted.name, requested.name),
        )
    )


def expand(actions: list[str], inverted: bool = False) -> set[str]:
    """Lowercased actions a statement's Action (or NotAction) stands for, by policyuniverse."""
    expanded: set[str] = get_actions_from_statement({"NotAction" if inverted else "Action": actions})
    return expanded


def _action_matches(statement: dict[str, Any], action: str) -> bool:
    inverted = "NotAction" in statement
    patterns = _listed(statement.get("NotAction" if inverted else "Action", []))
    matched = action.lower() in expand(patterns) or any(_glob(p.lower(), action.lower()) for p in patterns)
    return matched != inverted


def conditions_hold(statement: dict[str, Any], context: dict[str, str]) -> bool:
    for operator, tests in statement.get("Condition", {}).items():
        base = operator.removesuffix("IfExists")
        for key, values in tests.items():
            actual = context.get(key)
            if actual is None:
                return False
            allowed = _listed(values)
            if base in ("StringEquals", "ArnEquals"):
                holds = actual in allowed
            elif base in ("StringLike", "ArnLike"):
                holds = any(_glob(value, actual) for value in allowed)
            elif base in ("StringNotEquals", "ArnNotEquals"):
                holds = actual not in allowed
            elif base == "Bool":
                holds = actual.lower() in [value.lower() for value in allowed]
            else:
                return False
            if not holds:
                return False
    return True


def applies(grant: Grant, requirement: Requirement) -> bool:
    statement = grant.statement
    if not _action_matches(statement, requirement.action):
        return False
    matched = any(resource_matches(pattern, requirement.resource) for pattern in grant.resources)
    if "NotResource" in statement:
        matched = not matched
    return matched and conditions_hold(statement, dict(requirement.context))


def _role_name(stack: Stack, role: Address) -> str:
    return str(body(stack, role).get("name", role.name))


def missing(stack: Stack, principal: Principal, role_grants: list[Grant]) -> list[str]:
    """Every requirement no statement allows (or a Deny blocks), with what the role grants instead."""
    found = []
    for requirement in principal.requirements:
        allowed = any(g.effect == "Allow" and applies(g, requirement) for g in role_grants)
        denied = any(g.effect == "Deny" and applies(g, requirement) for g in role_grants)
        if allowed and not denied:
            continue
        on_resource = sorted(
            {
                a
                for g in role_grants
                if g.effect == "Allow" and any(resource_matches(r, requirement.resource) for r in g.resources)
                for a in _listed(g.statement.get("Action", []))
            }
        )
        for_action = sorted(
            {
                r
                for g in role_grants
                if g.effect == "Allow" and _action_matches(g.statement, requirement.action)
                for r in g.resources
            }
        )
        found.append(
            f"{environment(stack)}: {principal.name} (role {_role_name(stack, principal.role)}) needs "
            f"{requirement.action} on {requirement.resource}: {requirement.why}. "
            + ("An explicit Deny blocks it." if denied else "No statement allows it. ")
            + f"The role grants on that resource: {on_resource or 'nothing'}; "
            f"it grants {requirement.action} on: "
            f"{for_action or 'nothing'}"
        )
    return found


def unused(stack: Stack, principal: Principal, role_grants: list[Grant]) -> list[str]:
    """The actions each statement allows on each of its resources that no requirement uses."""
    idle: dict[tuple[str, str], list[str]] = {}
    found = []
    for grant in role_grants:
        if grant.effect != "Allow":
            continue
        statement = grant.statement
        if "NotAction" in statement or "NotResource" in statement:
            found.append(
                f"{environment(stack)}: {principal.name} has a NotAction/NotResource statement in "
                f"{grant.policy}"
            )
            continue
        for resource in grant.resources:
            for action in _listed(statement.get("Action", [])):
                single = Grant(grant.policy, {**statement, "Action": [action], "Resource": [resource]})
                if not any(applies(single, requirement) for requirement in principal.requirements):
                    idle.setdefault((grant.policy, resource), []).append(action)
    for (policy, resource), actions in sorted(idle.items()):
        used_here = sorted(
            {r.action for r in principal.requirements if resource_matches(resource, r.resource)}
        )
        found.append(
            f"{environment(stack)}: {principal.name} (role {_role_name(stack, principal.role)}) is granted "
            f"{sorted(set(actions))} on {resource} (policy {policy!r}), which neither its code nor AWS "
            f"on its behalf uses; expected there only {used_here or 'nothing'}"
        )
    return found


def lint(stack: Stack, principal: Principal, role_grants: list[Grant]) -> list[str]:
    """Parliament's findings of what cannot work as written: an action on the wrong resource type."""
    document = {"Version": "2012-10-17", "Statement": [g.statement for g in role_grants]}
    policy = parliament.analyze_policy_string(json.dumps(document))
    return [
        f"{environment(stack)}: {principal.name} (role {_role_name(stack, principal.role)}): {finding.issue} "
        f"{finding.detail}"
        for finding in policy.findings
        if finding.issue in LINT_ISSUES
    ]
