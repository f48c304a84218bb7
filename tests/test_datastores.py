"""PostgreSQL, Redis and EFS as synthesized, and no secret anywhere in the synthesized JSON."""

import re
from collections.abc import Iterator
from typing import Any

import pytest

from stacks.config import PROJECT, environment
from stacks.emulator import UNSUPPORTED_RESOURCES
from tests.conftest import Synth
from tests.synth_json import one, policy_statements, reference_target, resources

SECRET_ARGUMENTS = re.compile(r"password|secret|token|private_key", re.IGNORECASE)
SECRET_VALUES = [
    re.compile(r"AKIA[0-9A-Z]{16}"),  # an AWS access key id
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
]
# Arguments whose names sound secret but that hold none.
NOT_SECRETS = {
    "creation_token",  # EFS's idempotency token
    "manage_master_user_password",
    "master_user_secret_kms_key_id",
    "secret_id",
    "exclude_punctuation",
    "auth_token_update_strategy",
}
# moto's fixed test credentials, in the local stack's provider and backend only.
EMULATOR_CREDENTIALS = {"access_key": "testing", "secret_key": "testing"}


def strings(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """Every (path, string) in a JSON document."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from strings(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from strings(item, f"{path}[{index}]")
    elif isinstance(node, str):
        yield path, node


def test_no_secret_value_is_written_into_the_synthesized_stack(
    stack: dict[str, Any], stack_name: str
) -> None:
    literal_secrets = []
    for path, value in strings({k: v for k, v in stack.items() if k != "//"}):
        argument = path.rsplit(".", 1)[-1].split("[")[0]
        if any(pattern.search(value) for pattern in SECRET_VALUES):
            literal_secrets.append(path)
        elif SECRET_ARGUMENTS.search(argument) and argument not in NOT_SECRETS:
            if "${" in value or ".endpoints" in path:
                continue  # a reference resolved at apply time, or a service's address
            if stack_name == f"{PROJECT}-local" and EMULATOR_CREDENTIALS.get(argument) == value:
                continue
            literal_secrets.append(f"{path} = {value!r}")
    assert literal_secrets == []


def test_no_database_password_argument_is_set_anywhere(stack: dict[str, Any]) -> None:
    for type_ in ("aws_db_instance", "aws_rds_cluster"):
        for body in resources(stack, type_).values():
            assert not {"password", "master_password", "password_wo", "master_password_wo"} & set(body)
            assert body["manage_master_user_password"] is True


@pytest.mark.parametrize(
    ("name", "engine", "instances"),
    [("dev", "aurora", 1), ("staging", "aurora", 2), ("prod", "rds", 1), ("local", "rds", 1)],
)
def test_each_environment_gets_its_configured_database_engine(
    synth: Synth, name: str, engine: str, instances: int
) -> None:
    stack = synth.stacks[f"{PROJECT}-{name}"]
    config = environment(name, {}).data.database
    if engine == "aurora":
        assert not resources(stack, "aws_db_instance")
        cluster = one(stack, "aws_rds_cluster")
        assert cluster["engine"] == "aurora-postgresql"
        assert cluster["serverlessv2_scaling_configuration"] == {
            "min_capacity": config.min_capacity,
            "max_capacity": config.max_capacity,
        }
        members = resources(stack, "aws_rds_cluster_instance")
        assert len(members) == instances
        assert len({m["availability_zone"] for m in members.values()}) == instances, (
            "writer and reader share an AZ"
        )
        assert all(m["instance_class"] == "db.serverless" for m in members.values())
    else:
        assert not resources(stack, "aws_rds_cluster")
        instance = one(stack, "aws_db_instance")
        assert instance["engine"] == "postgres"
        assert instance["multi_az"] is config.multi_az
        assert instance["instance_class"] == config.instance_class
    if name == "prod":
        assert one(stack, "aws_db_instance")["multi_az"] is True
    if name == "dev":
        assert config.min_capacity == 0, "dev scales to zero when idle"


def database(stack: dict[str, Any]) -> dict[str, Any]:
    (body,) = [*resources(stack, "aws_db_instance").values(), *resources(stack, "aws_rds_cluster").values()]
    return body


def test_postgres_is_isolated_encrypted_tls_only_iam_authenticated_and_monitored(
    stack: dict[str, Any], stack_name: str
) -> None:
    body = database(stack)
    env = stack_name.removeprefix(f"{PROJECT}-")
    # The major version only: a pinned minor would make plans downgrade what AWS upgraded automatically.
    assert body["engine_version"] == "16"
    assert body["storage_encrypted"] is True
    assert reference_target(body["kms_key_id"]) == reference_target(body["master_user_secret_kms_key_id"])
    assert body["iam_database_authentication_enabled"] is True
    assert body["enabled_cloudwatch_logs_exports"] == ["postgresql", "upgrade"]

    subnet_group = one(stack, "aws_db_subnet_group")
    isolated = {
        f"aws_subnet.{name}"
        for name, s in resources(stack, "aws_subnet").items()
        if s["tags"]["tier"] == "isolated"
    }
    assert {reference_target(s) for s in subnet_group["subnet_ids"]} == isolated

    parameter_groups = [
        *resources(stack, "aws_db_parameter_group").values(),
        *resources(stack, "aws_rds_cluster_parameter_group").values(),
    ]
    (parameters,) = [{p["name"]: p["value"] for p in group["parameter"]} for group in parameter_groups]
    assert parameters["rds.force_ssl"] == "1"
    assert {"log_connections", "log_min_duration_statement", "log_statement"} <= set(parameters)

    monitored = [
        *resources(stack, "aws_db_instance").values(),
        *resources(stack, "aws_rds_cluster_instance").values(),
    ]
    for instance in monitored:
        assert instance["performance_insights_enabled"] is True
        assert reference_target(instance["performance_insights_kms_key_id"]) == reference_target(
            body["kms_key_id"]
        )
        assert instance["monitoring_interval"] == 60

    security_group = one(stack, "aws_security_group", name=f"{PROJECT}-postgres-{env}")
    assert "ingress" not in security_group and "egress" not in security_group
    sg_name = next(n for n, s in resources(stack, "aws_security_group").items() if s is security_group)
    for rule in resources(stack, "aws_vpc_security_group_ingress_rule").values():
        if reference_target(rule["security_group_id"]) == f"aws_security_group.{sg_name}":
            assert "cidr_ipv4" not in rule, "PostgreSQL admits security groups, never address ranges"
            assert (rule["from_port"], rule["to_port"]) == (5432, 5432)


def test_protection_and_backups_follow_the_environment(stack: dict[str, Any], stack_name: str) -> None:
    env = stack_name.removeprefix(f"{PROJECT}-")
    config = environment(env, {}) if env in ("dev", "staging", "prod", "local") else None
    protected = config is not None and not config.destroyable
    body = database(stack)
    assert body["deletion_protection"] is protected
    assert body["skip_final_snapshot"] is (not protected)
    assert ("final_snapshot_identifier" in body) is protected
    if config:
        assert body["backup_retention_period"] == config.data.database.backup_retention_days


# The data stores AWS Backup can back up (Redis keeps its own snapshots).
BACKED_UP_TYPES = ("aws_dynamodb_table", "aws_rds_cluster", "aws_db_instance", "aws_efs_file_system")


def test_every_data_store_is_backed_up_daily_into_a_vault_under_the_data_key(
    stack: dict[str, Any], stack_name: str
) -> None:
    env = stack_name.removeprefix(f"{PROJECT}-")
    backup_types = ("aws_backup_vault", "aws_backup_plan", "aws_backup_selection")
    if env == "local":  # the emulator cannot run AWS Backup (stacks/config.py: on_emulator)
        assert not any(resources(stack, type_) for type_ in backup_types)
        return
    config = environment(env if env in ("dev", "staging", "prod") else "dev", {})
    ((vault_name, vault),) = resources(stack, "aws_backup_vault").items()
    readings_key = one(stack, "aws_dynamodb_table", name=f"{PROJECT}-readings-{env}")[
        "server_side_encryption"
    ]
    assert reference_target(vault["kms_key_arn"]) == reference_target(readings_key["kms_key_arn"])
    assert vault["force_destroy"] is config.destroyable  # a protected vault keeps its recovery points
    (rule,) = one(stack, "aws_backup_plan")["rule"]
    assert reference_target(rule["target_vault_name"]) == f"aws_backup_vault.{vault_name}"
    assert config.data.backup is not None
    assert rule["lifecycle"] == {"delete_after": config.data.backup.retention_days}
    assert rule["schedule"] == "cron(0 3 * * ? *)"
    selection = one(stack, "aws_backup_selection")
    stores = {f"{type_}.{name}" for type_ in BACKED_UP_TYPES for name in resources(stack, type_)}
    assert {reference_target(arn) for arn in selection["resources"]} == stores
    assert all(arn.endswith(".arn}") for arn in selection["resources"])
    role = reference_target(selection["iam_role_arn"]).split(".")[1]
    (trust,) = policy_statements(stack, resources(stack, "aws_iam_role")[role]["assume_role_policy"])
    assert trust["principals"] == [{"identifiers": ["backup.amazonaws.com"], "type": "Service"}]
    (attachment,) = [
        a
        for a in resources(stack, "aws_iam_role_policy_attachment").values()
        if reference_target(a["role"]) == f"aws_iam_role.{role}"
    ]
    assert attachment["policy_arn"].endswith(
        ":iam::aws:policy/service-role/AWSBackupServiceRolePolicyForBackup"
    )


def test_the_master_password_rotates_every_30_days(stack: dict[str, Any], stack_name: str) -> None:
    rotations = [
        r
        for r in resources(stack, "aws_secretsmanager_secret_rotation").values()
        if "master_user_secret" in r["secret_id"]
    ]
    if stack_name == f"{PROJECT}-local":
        assert "aws_secretsmanager_secret_rotation" in UNSUPPORTED_RESOURCES
        assert rotations == []
        return
    assert len(rotations) == 1
    assert rotations[0]["rotation_rules"] == {"automatically_after_days": 30}


def test_the_file_system_is_encrypted_tiered_backed_up_and_tls_only(
    stack: dict[str, Any], stack_name: str
) -> None:
    file_system = one(stack, "aws_efs_file_system")
    assert file_system["encrypted"] is True
    assert reference_target(file_system["kms_key_id"]).startswith("aws_kms_key.")
    assert file_system["lifecycle_policy"] == [{"transition_to_ia": "AFTER_30_DAYS"}]
    private = [s for s in resources(stack, "aws_subnet").values() if s["tags"]["tier"] == "private"]
    assert len(resources(stack, "aws_efs_mount_target")) == len(private)
    access_point = one(stack, "aws_efs_access_point")
    assert access_point["posix_user"] == {"gid": 1000, "uid": 1000}
    # The worker's user owns the root and may create in it (its archive directory): rwx for the owner.
    assert access_point["root_directory"] == {
        "path": "/iot-platform",
        "creation_info": {"owner_uid": 1000, "owner_gid": 1000, "permissions": "750"},
    }
    if stack_name == f"{PROJECT}-local":  # the emulator cannot hold this policy (stacks/emulator.py)
        assert "aws_efs_file_system_policy" in UNSUPPORTED_RESOURCES
        assert not resources(stack, "aws_efs_file_system_policy")
        return
    (deny,) = policy_statements(stack, one(stack, "aws_efs_file_system_policy")["policy"])
    assert deny["effect"] == "Deny"
    assert deny["condition"] == [{"test": "Bool", "values": ["false"], "variable": "aws:SecureTransport"}]


@pytest.mark.parametrize(("name", "shards", "replicas"), [("dev", 1, 0), ("staging", 2, 1), ("prod", 3, 1)])
def test_redis_runs_in_cluster_mode_sized_per_environment(
    synth: Synth, name: str, shards: int, replicas: int
) -> None:
    group = one(synth.stacks[f"{PROJECT}-{name}"], "aws_elasticache_replication_group")
    assert (group["num_node_groups"], group["replicas_per_node_group"]) == (shards, replicas)
    assert group["parameter_group_name"] == "default.redis7.cluster.on"
    assert group["engine_version"].startswith("7.")
    assert group["automatic_failover_enabled"] is True
    assert group["multi_az_enabled"] is (replicas > 0)


def test_the_local_environment_has_no_redis_which_the_emulator_cannot_run(synth: Synth) -> None:
    stack = synth.stacks[f"{PROJECT}-local"]
    assert not resources(stack, "aws_elasticache_replication_group")
    assert not resources(stack, "aws_lambda_function", function_name=f"{PROJECT}-redis-rotation-local")


@pytest.mark.parametrize("name", ["dev", "staging", "prod"])
def test_redis_is_encrypted_authenticated_logged_and_reachable_from_compute_only(
    synth: Synth, name: str
) -> None:
    stack = synth.stacks[f"{PROJECT}-{name}"]
    group = one(stack, "aws_elasticache_replication_group")
    assert group["at_rest_encryption_enabled"] == "true"
    assert group["transit_encryption_enabled"] is True
    assert reference_target(group["kms_key_id"]).startswith("aws_kms_key.")
    # The first token comes from Secrets Manager at apply time; rotation owns it afterwards.
    assert reference_target(group["auth_token"]).startswith("data.aws_secretsmanager_random_password.")
    assert group["lifecycle"]["ignore_changes"] == ["auth_token", "auth_token_update_strategy"]
    assert sorted(d["log_type"] for d in group["log_delivery_configuration"]) == ["engine-log", "slow-log"]
    assert group["snapshot_retention_limit"] == environment(name, {}).data.cache.snapshot_retention_days  # type: ignore[union-attr]
    (group_sg,) = group["security_group_ids"]
    sources = {
        rule["referenced_security_group_id"]
        for rule in resources(stack, "aws_vpc_security_group_ingress_rule").values()
        if rule["security_group_id"] == group_sg
    }
    groups = {
        f"${{aws_security_group.{n}.id}}": g["name"]
        for n, g in resources(stack, "aws_security_group").items()
    }
    assert sorted(groups[source] for source in sources) == [
        f"{PROJECT}-ingest-{name}",
        f"{PROJECT}-query-{name}",
        f"{PROJECT}-redis-rotation-{name}",
        f"{PROJECT}-worker-{name}",
    ]


@pytest.mark.parametrize("name", ["dev", "staging", "prod"])
def test_the_redis_auth_token_rotates_every_30_days_through_its_function(synth: Synth, name: str) -> None:
    stack = synth.stacks[f"{PROJECT}-{name}"]
    (rotation,) = [
        r
        for r in resources(stack, "aws_secretsmanager_secret_rotation").values()
        if "rotation_lambda_arn" in r
    ]
    assert rotation["rotation_rules"] == {"automatically_after_days": 30}
    rotator = one(stack, "aws_lambda_function", function_name=f"{PROJECT}-redis-rotation-{name}")
    assert rotator["environment"]["variables"]["REPLICATION_GROUP_ID"] == f"{PROJECT}-redis-{name}"
    permission = one(stack, "aws_lambda_permission", principal="secretsmanager.amazonaws.com")
    assert permission["source_arn"] == rotation["secret_id"].replace(".id}", ".arn}")


def test_a_grant_returns_what_it_attached_and_the_key_states_its_own_part() -> None:
    """A table's read grant on a minimal stack: the table's actions and its key's decrypt, nothing else."""
    import json as json_module

    from cdktf import App, TerraformStack, Testing

    from iot_constructs.account import Account
    from iot_constructs.iam import service_role
    from iot_constructs.kms import DECRYPT_ACTIONS, EncryptionKey
    from iot_constructs.table import Table

    stack = TerraformStack(App(), "unit")
    account = Account.of(stack)
    key = EncryptionKey(
        stack, "key", account=account, alias="unit", description="unit", deletion_window_days=7
    )
    table = Table(
        stack,
        "table",
        name="unit",
        partition_key="device_id",
        sort_key="timestamp",
        ttl_attribute="expires_at",
        key=key,
        deletion_protection=False,
    )
    role = service_role(stack, "reader", name="reader", service="lambda.amazonaws.com", account=account)
    granted = table.grant(role, "read-table", "dynamodb:Query")
    assert granted.grantee is role
    assert granted.actions == {"dynamodb:Query", *DECRYPT_ACTIONS}
    synthesized = json_module.loads(Testing.synth(stack))
    (document,) = [
        d
        for name, d in synthesized["data"]["aws_iam_policy_document"].items()
        if name.startswith("table_read-table")
    ]
    table_statement, key_statement = document["statement"]
    assert table_statement["actions"] == ["dynamodb:Query"]
    assert [reference_target(r) for r in table_statement["resources"]] == [
        f"aws_dynamodb_table.{name}" for name in synthesized["resource"]["aws_dynamodb_table"]
    ]
    assert key_statement["actions"] == ["kms:Decrypt"]
    (key_name,) = synthesized["resource"]["aws_kms_key"]
    assert [reference_target(r) for r in key_statement["resources"]] == [f"aws_kms_key.{key_name}"]


def function_variables(stack: dict[str, Any], component: str) -> dict[str, str]:
    env = stack["provider"]["aws"][0]["default_tags"][0]["tags"]["environment"]
    variables: dict[str, str] = one(
        stack, "aws_lambda_function", function_name=f"{PROJECT}-{component}-{env}"
    )["environment"]["variables"]
    return variables


def function_grants(stack: dict[str, Any], component: str) -> dict[str, set[str]]:
    """Action -> the resources the function's role is granted it on."""
    env = stack["provider"]["aws"][0]["default_tags"][0]["tags"]["environment"]
    function = one(stack, "aws_lambda_function", function_name=f"{PROJECT}-{component}-{env}")
    granted: dict[str, set[str]] = {}
    for policy in resources(stack, "aws_iam_role_policy").values():
        if reference_target(policy["role"]) == reference_target(function["role"]):
            for statement in policy_statements(stack, policy["policy"]):
                for action in statement["actions"]:
                    granted.setdefault(action, set()).update(statement["resources"])
    return granted


def test_ingest_and_query_reach_redis_with_the_token_from_its_secret_where_there_is_redis(
    stack: dict[str, Any],
) -> None:
    redis = resources(stack, "aws_elasticache_replication_group")
    secrets = {
        n: s
        for n, s in resources(stack, "aws_secretsmanager_secret").items()
        if s["name"].endswith("auth-token")
    }
    for component in ("ingest", "query"):
        variables = function_variables(stack, component)
        granted = function_grants(stack, component)
        if not redis:  # the emulator's environment: nothing of Redis at all
            assert not [v for v in variables if v.startswith("REDIS_")]
            assert "secretsmanager:GetSecretValue" not in granted
            continue
        ((group_name, _),) = redis.items()
        ((secret_name, _),) = secrets.items()
        assert variables["REDIS_HOST"] == (
            f"${{aws_elasticache_replication_group.{group_name}.configuration_endpoint_address}}"
        )
        assert (variables["REDIS_PORT"], variables["REDIS_TLS"], variables["REDIS_CLUSTER"]) == (
            "6379",
            "true",
            "true",
        )
        token_secret = f"${{aws_secretsmanager_secret.{secret_name}.arn}}"
        assert variables["REDIS_AUTH_TOKEN_SECRET_ARN"] == token_secret
        assert "REDIS_AUTH_TOKEN" not in variables  # the token itself is read at run time, never set
        assert granted["secretsmanager:GetSecretValue"] == {token_secret}
        (key,) = {reference_target(r) for r in granted["kms:Decrypt"]}
        assert key == reference_target(
            stack["resource"]["aws_secretsmanager_secret"][secret_name]["kms_key_id"]
        )


def test_query_reads_postgres_as_iot_reader_and_ingest_not_at_all(stack: dict[str, Any]) -> None:
    body = database(stack)
    (address,) = [
        f"{type_}.{n}"
        for type_ in ("aws_db_instance", "aws_rds_cluster")
        for n, b in resources(stack, type_).items()
        if b is body
    ]
    aurora = address.startswith("aws_rds_cluster.")
    query = function_variables(stack, "query")
    assert query["DATABASE_HOST"] == f"${{{address}.{'endpoint' if aurora else 'address'}}}"
    assert (query["DATABASE_PORT"], query["DATABASE_NAME"], query["DATABASE_USER"]) == (
        "5432",
        "iot",
        "iot_reader",
    )
    assert "DATABASE_PASSWORD" not in query  # IAM authentication tokens; a password is for tests only
    resource_id = f"${{{address}.{'cluster_resource_id' if aurora else 'resource_id'}}}"
    assert function_grants(stack, "query")["rds-db:connect"] == {
        "arn:${data.aws_partition.partition.partition}:rds-db:${data.aws_region.region.name}:"
        f"${{data.aws_caller_identity.account.account_id}}:dbuser:{resource_id}/iot_reader"
    }
    assert not [v for v in function_variables(stack, "ingest") if v.startswith("DATABASE_")]
    assert "rds-db:connect" not in function_grants(stack, "ingest")
