"""The ECS stream worker as synthesized: image, task, service, permissions and scaling."""

from typing import Any

import pytest

from stacks.config import PROJECT, environment
from tests.conftest import Synth
from tests.synth_json import one, policy_statements, reference_target, resources


def test_the_repository_is_immutable_scanned_and_encrypted(stack: dict[str, Any]) -> None:
    repository = one(stack, "aws_ecr_repository")
    assert repository["image_tag_mutability"] == "IMMUTABLE"
    assert repository["image_scanning_configuration"] == {"scan_on_push": True}
    assert repository["encryption_configuration"][0]["encryption_type"] == "KMS"
    assert one(stack, "aws_ecs_cluster")["setting"] == [{"name": "containerInsights", "value": "enabled"}]


def test_the_task_runs_non_root_read_only_unprivileged_with_efs_over_tls_and_iam(
    stack: dict[str, Any],
) -> None:
    task = one(stack, "aws_ecs_task_definition")
    assert task["requires_compatibilities"] == ["FARGATE"]
    # The definitions are a jsonencode() expression over references, written by cdktf in HCL object syntax.
    definitions = task["container_definitions"]
    assert definitions.startswith("${jsonencode(")
    for setting in ('"readonlyRootFilesystem" = true', '"privileged" = false', '"user" = "1000:1000"'):
        assert setting in definitions, setting
    (efs,) = [v for v in task["volume"] if "efs_volume_configuration" in v]
    assert efs["efs_volume_configuration"]["transit_encryption"] == "ENABLED"
    assert efs["efs_volume_configuration"]["authorization_config"]["iam"] == "ENABLED"
    assert reference_target(task["execution_role_arn"]) != reference_target(task["task_role_arn"])


def test_credentials_reach_the_task_only_as_secrets(synth: Synth) -> None:
    definitions = one(synth.stacks[f"{PROJECT}-prod"], "aws_ecs_task_definition")["container_definitions"]
    environment_part, secrets_part = definitions.split('"secrets" = ', 1)
    assert '"REDIS_AUTH_TOKEN", "valueFrom" = "${aws_secretsmanager_secret.' in secrets_part
    assert not any(word in environment_part for word in ("TOKEN", "PASSWORD", "SECRET"))


def test_the_service_runs_in_private_subnets_without_public_ips_and_rolls_back_failed_deployments(
    stack: dict[str, Any],
) -> None:
    service = one(stack, "aws_ecs_service")
    assert service["launch_type"] == "FARGATE"
    assert service["network_configuration"]["assign_public_ip"] is False
    private = {
        f"aws_subnet.{n}" for n, s in resources(stack, "aws_subnet").items() if s["tags"]["tier"] == "private"
    }
    assert {reference_target(s) for s in service["network_configuration"]["subnets"]} == private
    assert service["deployment_circuit_breaker"] == {"enable": True, "rollback": True}


def test_the_task_role_holds_only_what_grants_give(stack: dict[str, Any]) -> None:
    (task_role,) = [
        n
        for n, r in resources(stack, "aws_iam_role").items()
        if r["name"].startswith(f"{PROJECT}-worker-task-")
    ]
    actions = set()
    for policy in resources(stack, "aws_iam_role_policy").values():
        if reference_target(policy["role"]) == f"aws_iam_role.{task_role}":
            for statement in policy_statements(stack, policy["policy"]):
                assert "*" not in statement["resources"]
                actions |= set(statement["actions"])
    assert {
        "kinesis:GetRecords",
        "dynamodb:BatchWriteItem",
        "elasticfilesystem:ClientMount",
    } <= actions
    assert not {a for a in actions if a.startswith(("iam:", "ecs:", "secretsmanager:PutSecretValue"))}


@pytest.mark.parametrize("name", ["dev", "staging", "prod"])
def test_the_service_scales_on_cpu_and_on_stream_lag_within_the_configured_bounds(
    synth: Synth, name: str
) -> None:
    stack = synth.stacks[f"{PROJECT}-{name}"]
    worker = environment(name, {}).processing.worker
    target = one(stack, "aws_appautoscaling_target")
    assert (target["min_capacity"], target["max_capacity"]) == (worker.min_tasks, worker.max_tasks)
    policies = {
        p["name"].rsplit("-", 1)[-1]: p for p in resources(stack, "aws_appautoscaling_policy").values()
    }
    assert set(policies) == {"cpu", "age"}
    cpu = policies["cpu"]["target_tracking_scaling_policy_configuration"]
    assert (
        cpu["predefined_metric_specification"]["predefined_metric_type"] == "ECSServiceAverageCPUUtilization"
    )
    assert cpu["target_value"] == worker.cpu_target_percent
    lag = policies["age"]["target_tracking_scaling_policy_configuration"]
    assert lag["customized_metric_specification"]["metric_name"] == "GetRecords.IteratorAgeMilliseconds"
    assert lag["target_value"] == worker.iterator_age_target_ms
    assert (lag["scale_in_cooldown"], lag["scale_out_cooldown"]) == (
        worker.scale_in_cooldown_seconds,
        worker.scale_out_cooldown_seconds,
    )
    if name == "prod":
        assert (worker.min_tasks, worker.max_tasks) == (2, 6)  # one task per shard at most


def test_the_local_worker_has_no_autoscaling_which_the_emulator_cannot_run(synth: Synth) -> None:
    stack = synth.stacks[f"{PROJECT}-local"]
    assert not resources(stack, "aws_appautoscaling_target")
    assert one(stack, "aws_ecs_service")["desired_count"] == 1


def test_the_data_stores_admit_the_worker(stack: dict[str, Any]) -> None:
    (worker_group,) = [
        n
        for n, g in resources(stack, "aws_security_group").items()
        if g["name"].startswith(f"{PROJECT}-worker-")
    ]
    admitted_ports = {
        rule["from_port"]
        for rule in resources(stack, "aws_vpc_security_group_ingress_rule").values()
        if rule.get("referenced_security_group_id") == f"${{aws_security_group.{worker_group}.id}}"
    }
    assert {5432, 2049} <= admitted_ports
