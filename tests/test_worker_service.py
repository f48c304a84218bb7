"""The ECS stream worker as synthesized: image, task, service, permissions and scaling."""

from typing import Any

import pytest
from readings import MAX_RECORD_BYTES
from stream_worker.worker import QUEUED_RECORDS

from stacks.config import PROJECT, environment
from tests.conftest import Synth
from tests.contracts.stack_model import container_definitions
from tests.synth_json import one, policy_statements, reference_target, resources

# The worker's variables (the contract with functions/stream_worker/config.py), and the admin container's.
WORKER_VARIABLES = {
    "POWERTOOLS_SERVICE_NAME",
    "POWERTOOLS_LOG_LEVEL",
    "AWS_REGION",
    "STREAM_NAME",
    "STREAM_RETENTION_HOURS",
    "DATABASE_HOST",
    "DATABASE_PORT",
    "DATABASE_NAME",
    "DATABASE_USER",
    "ARCHIVE_DIR",
}
REDIS_VARIABLES = {"REDIS_HOST", "REDIS_PORT", "REDIS_TLS", "REDIS_CLUSTER"}
ADMIN_VARIABLES = {"AWS_REGION", "DATABASE_HOST", "DATABASE_PORT", "DATABASE_NAME"}
ADMIN_SECRETS = {"DATABASE_ADMIN_USER": "username", "DATABASE_ADMIN_PASSWORD": "password"}


def task_definitions(stack: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The worker's task definitions by family, without the environment suffix: worker, worker-admin."""
    env = stack["provider"]["aws"][0]["default_tags"][0]["tags"]["environment"]
    return {
        t["family"].removeprefix(f"{PROJECT}-").removesuffix(f"-{env}"): t
        for t in resources(stack, "aws_ecs_task_definition").values()
    }


def containers(task: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in container_definitions(task)}


def variables(container: dict[str, Any]) -> dict[str, str]:
    return {v["name"]: v["value"] for v in container["environment"]}


def test_the_repository_is_immutable_scanned_and_encrypted(stack: dict[str, Any]) -> None:
    repository = one(stack, "aws_ecr_repository")
    assert repository["image_tag_mutability"] == "IMMUTABLE"
    assert repository["image_scanning_configuration"] == {"scan_on_push": True}
    assert repository["encryption_configuration"][0]["encryption_type"] == "KMS"
    assert one(stack, "aws_ecs_cluster")["setting"] == [{"name": "containerInsights", "value": "enabled"}]


def test_the_task_runs_non_root_read_only_unprivileged_with_efs_over_tls_and_iam(
    stack: dict[str, Any],
) -> None:
    tasks = task_definitions(stack)
    assert set(tasks) == {"worker", "worker-admin"}
    for task in tasks.values():
        assert task["requires_compatibilities"] == ["FARGATE"]
        # The definitions are a jsonencode() expression over references, written by cdktf in HCL syntax.
        assert task["container_definitions"].startswith("${jsonencode(")
        for container in container_definitions(task):
            assert container["readonlyRootFilesystem"] is True
            assert container["privileged"] is False
            assert container["user"] == "1000:1000"
            assert {"sourceVolume": "tmp", "containerPath": "/tmp", "readOnly": False} in container[
                "mountPoints"
            ]
    task = tasks["worker"]
    (efs,) = [v for v in task["volume"] if "efs_volume_configuration" in v]
    assert efs["efs_volume_configuration"]["transit_encryption"] == "ENABLED"
    assert efs["efs_volume_configuration"]["authorization_config"]["iam"] == "ENABLED"
    assert reference_target(task["execution_role_arn"]) != reference_target(task["task_role_arn"])
    assert not [v for v in tasks["worker-admin"]["volume"] if "efs_volume_configuration" in v]


def test_each_worker_task_migrates_the_database_before_the_worker_starts(stack: dict[str, Any]) -> None:
    """The init container "migrate" must exit 0 before the worker starts; a failure stops the task, and the
    deployment's circuit breaker rolls back."""
    tasks = task_definitions(stack)
    worker_task = containers(tasks["worker"])
    assert list(worker_task) == ["migrate", "worker"]
    migrate, worker = worker_task["migrate"], worker_task["worker"]
    assert migrate["essential"] is False and worker["essential"] is True
    assert worker["dependsOn"] == [{"containerName": "migrate", "condition": "SUCCESS"}]
    assert migrate["command"] == ["python", "-m", "stream_worker.migrate"]
    assert "command" not in worker  # the image's own: python -m stream_worker.worker
    assert migrate["image"] == worker["image"]
    assert migrate["logConfiguration"] == worker["logConfiguration"]
    # The admin task definition runs the same container alone (essential: a task needs one), without the
    # worker's role or file system; tools run it with the worker's subnets and security group.
    admin_task = tasks["worker-admin"]
    assert containers(admin_task) == {"migrate": {**migrate, "essential": True}}
    assert "task_role_arn" not in admin_task
    assert admin_task["execution_role_arn"] == tasks["worker"]["execution_role_arn"]
    outputs = stack["output"]
    admin_arn = outputs["admin_task_definition_arn"]["value"]
    assert admin_arn.endswith(".arn}")
    assert (
        resources(stack, "aws_ecs_task_definition")[reference_target(admin_arn).split(".")[1]] is admin_task
    )
    group = reference_target(outputs["worker_security_group_id"]["value"])
    assert one(stack, "aws_ecs_service")["network_configuration"]["security_groups"] == [f"${{{group}.id}}"]


def test_the_worker_and_the_admin_container_get_the_settings_of_the_contract(stack: dict[str, Any]) -> None:
    worker_task = containers(task_definitions(stack)["worker"])
    worker, migrate = worker_task["worker"], worker_task["migrate"]
    redis = bool(resources(stack, "aws_elasticache_replication_group"))
    assert set(variables(worker)) == WORKER_VARIABLES | (REDIS_VARIABLES if redis else set())
    assert variables(worker)["DATABASE_USER"] == "iot_worker"
    assert variables(worker)["ARCHIVE_DIR"] == "/mnt/artefacts/archive"
    assert {"sourceVolume": "artefacts", "containerPath": "/mnt/artefacts", "readOnly": False} in worker[
        "mountPoints"
    ]
    retention = one(stack, "aws_kinesis_stream")["retention_period"]
    assert variables(worker)["STREAM_RETENTION_HOURS"] == str(retention)
    if redis:
        assert (variables(worker)["REDIS_TLS"], variables(worker)["REDIS_CLUSTER"]) == ("true", "true")
    assert [s["name"] for s in worker["secrets"]] == (["REDIS_AUTH_TOKEN"] if redis else [])
    # The worker no longer writes DynamoDB, the alerts or reads the thresholds: the processor does.
    assert not {"RAW_TABLE_NAME", "AGGREGATES_TABLE_NAME", "ALERT_TOPIC_ARN"} & set(variables(worker))

    assert set(variables(migrate)) == ADMIN_VARIABLES
    for name in ("DATABASE_HOST", "DATABASE_PORT", "DATABASE_NAME"):
        assert variables(migrate)[name] == variables(worker)[name]
    database = next(
        f"{type_}.{n}" for type_ in ("aws_db_instance", "aws_rds_cluster") for n in resources(stack, type_)
    )
    assert {s["name"]: s["valueFrom"] for s in migrate["secrets"]} == {
        name: f"${{{database}.master_user_secret[0].secret_arn}}:{key}::"
        for name, key in ADMIN_SECRETS.items()
    }


def test_credentials_reach_the_task_only_as_secrets(synth: Synth) -> None:
    for definition in container_definitions(task_definitions(synth.stacks[f"{PROJECT}-prod"])["worker"]):
        assert not any(word in v["name"] for v in definition["environment"] for word in ("TOKEN", "PASSWORD"))
        for secret in definition["secrets"]:
            assert secret["valueFrom"].startswith(("${aws_secretsmanager_secret.", "${aws_db_instance."))


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


def role_actions(stack: dict[str, Any], role_prefix: str) -> dict[str, set[str]]:
    """Action -> the resources the role whose name starts with `role_prefix` is granted it on."""
    (role,) = [n for n, r in resources(stack, "aws_iam_role").items() if r["name"].startswith(role_prefix)]
    granted: dict[str, set[str]] = {}
    for policy in resources(stack, "aws_iam_role_policy").values():
        if reference_target(policy["role"]) == f"aws_iam_role.{role}":
            for statement in policy_statements(stack, policy["policy"]):
                for action in statement["actions"]:
                    granted.setdefault(action, set()).update(statement["resources"])
    return granted


def test_the_task_role_holds_only_what_grants_give(stack: dict[str, Any]) -> None:
    granted = role_actions(stack, f"{PROJECT}-worker-task-")
    assert "*" not in {r for resources_ in granted.values() for r in resources_}
    assert {"kinesis:GetRecords", "elasticfilesystem:ClientMount", "rds-db:connect"} <= set(granted)
    # The processor owns the tables and the alerts: the worker writes none of them.
    assert not {a for a in granted if a.startswith(("dynamodb:", "sns:", "ssm:"))}
    assert not {a for a in granted if a.startswith(("iam:", "ecs:", "secretsmanager:"))}
    (user,) = granted["rds-db:connect"]
    assert user.endswith("/iot_worker")


def test_the_execution_role_reads_exactly_the_secrets_the_containers_name(stack: dict[str, Any]) -> None:
    granted = role_actions(stack, f"{PROJECT}-worker-execution-")
    named = {
        secret["valueFrom"].removesuffix("::").rsplit(":", 1)[0]
        for task in task_definitions(stack).values()
        for container in container_definitions(task)
        for secret in container["secrets"]
    }
    assert granted["secretsmanager:GetSecretValue"] == named
    assert any("master_user_secret" in secret for secret in named)


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
    redis = {6379} if resources(stack, "aws_elasticache_replication_group") else set()
    assert admitted_ports == {5432, 2049} | redis


@pytest.mark.parametrize("name", ["dev", "staging", "prod", "local"])
def test_the_records_the_worker_fetches_ahead_fit_a_quarter_of_its_task_memory(name: str) -> None:
    """Packed records take up to MAX_RECORD_BYTES each: the fetch-ahead queue is bounded in records, so its
    bytes must fit the smallest task beside the batch being stored."""
    memory_bytes = environment(name, {}).processing.worker.memory_mb * 1024 * 1024
    assert memory_bytes / 4 >= QUEUED_RECORDS * MAX_RECORD_BYTES
