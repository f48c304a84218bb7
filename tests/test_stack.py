"""Provider, state backend and naming: what every environment's stack carries."""

from typing import Any

from stacks.config import PROJECT

# AWS name limits, by resource type and the argument that carries the name.
NAME_LIMITS = {
    ("aws_iam_role", "name"): 64,
    ("aws_lambda_function", "function_name"): 64,
    ("aws_db_instance", "identifier"): 63,
    ("aws_rds_cluster", "cluster_identifier"): 63,
    ("aws_rds_cluster_instance", "identifier"): 63,
    ("aws_elasticache_replication_group", "replication_group_id"): 40,
    ("aws_efs_file_system", "creation_token"): 64,
    ("aws_sqs_queue", "name"): 80,
    ("aws_kinesis_stream", "name"): 128,
    ("aws_wafv2_web_acl", "name"): 128,
    ("aws_dynamodb_table", "name"): 255,
    ("aws_security_group", "name"): 255,
    ("aws_cloudwatch_metric_alarm", "alarm_name"): 255,
    ("aws_appautoscaling_policy", "name"): 255,
}
EMULATOR_ONLY_PROVIDER_SETTINGS = {
    "access_key",
    "secret_key",
    "endpoints",
    "skip_credentials_validation",
    "skip_requesting_account_id",
    "skip_metadata_api_check",
    "s3_use_path_style",
}


def environment_of(stack_name: str) -> str:
    return stack_name.removeprefix(f"{PROJECT}-")


def test_the_provider_tags_everything_with_project_environment_owner_and_tool(
    stack: dict[str, Any], stack_name: str
) -> None:
    (provider,) = stack["provider"]["aws"]
    assert provider["region"] == "us-east-1"
    assert provider["default_tags"] == [
        {
            "tags": {
                "project": PROJECT,
                "environment": environment_of(stack_name),
                "owner": "platform-team",
                "managed-by": "cdktf",
            }
        }
    ]


def test_state_is_kept_per_environment_encrypted_and_natively_locked(
    stack: dict[str, Any], stack_name: str
) -> None:
    terraform = stack["terraform"]
    backend = terraform["backend"]["s3"]
    assert backend["bucket"] == "iot-platform-terraform-state"
    assert backend["key"] == f"iot-platform/{environment_of(stack_name)}/terraform.tfstate"
    assert backend["encrypt"] is True
    assert backend["use_lockfile"] is True
    assert "dynamodb_table" not in backend
    assert terraform["required_version"] == ">= 1.10"
    assert terraform["required_providers"]["aws"]["version"] == "5.100.0"


def test_only_the_local_stack_talks_to_the_emulator(stack: dict[str, Any], stack_name: str) -> None:
    (provider,) = stack["provider"]["aws"]
    backend = stack["terraform"]["backend"]["s3"]
    if stack_name == f"{PROJECT}-local":
        assert set(provider) >= EMULATOR_ONLY_PROVIDER_SETTINGS
        assert set(provider["endpoints"][0].values()) == {"http://127.0.0.1:5000"}
        assert backend["endpoints"] == {"s3": "http://127.0.0.1:5000", "sts": "http://127.0.0.1:5000"}
        assert backend["use_path_style"] is True
    else:
        assert not set(provider) & EMULATOR_ONLY_PROVIDER_SETTINGS
        assert not {"endpoints", "access_key", "secret_key", "use_path_style"} & set(backend)


def test_every_limited_name_fits_its_aws_limit(stack: dict[str, Any]) -> None:
    for (type_, argument), limit in NAME_LIMITS.items():
        for logical_name, body in stack.get("resource", {}).get(type_, {}).items():
            name = body.get(argument, "")
            assert len(name) <= limit, (
                f"{type_}.{logical_name} {argument} {name!r} is over {limit} characters"
            )


def test_resource_names_carry_the_environment_suffix(stack: dict[str, Any], stack_name: str) -> None:
    for body in stack["resource"]["aws_iam_role"].values():
        assert body["name"].startswith(f"{PROJECT}-")
        assert body["name"].endswith(f"-{environment_of(stack_name)}")


def test_every_output_the_tools_read_is_there(stack: dict[str, Any]) -> None:
    """The admin commands (make migrate, device registration) run the admin task with these."""
    tools_read = {
        "worker_cluster_name",
        "admin_task_definition_arn",
        "private_subnet_ids",
        "worker_security_group_id",
        "database_endpoint",
    }
    assert tools_read <= set(stack["output"])
    assert all(stack["output"][name]["value"] and stack["output"][name]["description"] for name in tools_read)
