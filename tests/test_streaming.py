"""The streaming data path as synthesized: stream, tables, functions, event source mapping, permissions."""

import json
from decimal import Decimal
from typing import Any

import pytest
import readings
from readings import Reading, canonical_timestamp, pack

from iot_constructs.stream import MAX_RECORD_BYTES, PACKED_READING_BYTES, PARTITION_KEY_LENGTH, TargetLoad
from stacks.config import PROD_LOAD, PROJECT, environment, short_lived_environment
from tests.conftest import LONGEST_SUFFIX, Synth
from tests.synth_json import data, one, policy_statements, reference_target, resources

FUNCTIONS = ("ingest", "processor", "query")
# The only statements allowed Resource "*": AWS offers no resource-level permissions for them.
UNSCOPABLE_ACTIONS = {
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeSubnets",
    "ec2:UnassignPrivateIpAddresses",
    "xray:PutTelemetryRecords",
    "xray:PutTraceSegments",
}


def config_of(stack_name: str) -> Any:
    name = stack_name.removeprefix(f"{PROJECT}-")
    return short_lived_environment(name, {}) if name == LONGEST_SUFFIX else environment(name, {})


def key_named(stack: dict[str, Any], purpose: str) -> str:
    (alias,) = resources(stack, "aws_kms_alias", name=f"alias/{PROJECT}-{purpose}-{env_of(stack)}").values()
    return reference_target(alias["target_key_id"]).split(".")[1]


def env_of(stack: dict[str, Any]) -> str:
    env: str = stack["terraform"]["backend"]["s3"]["key"].split("/")[1]
    return env


def role_statements(stack: dict[str, Any], function: str) -> list[dict[str, Any]]:
    """Every statement of every inline policy of `function`'s role."""
    (role_name,) = resources(stack, "aws_iam_role", name=f"{PROJECT}-{function}-{env_of(stack)}")
    statements = []
    for policy in resources(stack, "aws_iam_role_policy").values():
        if reference_target(policy["role"]) == f"aws_iam_role.{role_name}":
            statements += policy_statements(stack, policy["policy"])
    return statements


def actions_on(statements: list[dict[str, Any]], resource_prefix: str) -> set[str]:
    return {
        action
        for statement in statements
        for action in statement["actions"]
        if any(r.startswith(resource_prefix) for r in statement["resources"])
    }


@pytest.mark.parametrize(
    ("name", "mode", "shards", "shard_metrics"),
    [
        ("dev", "ON_DEMAND", None, False),
        ("local", "ON_DEMAND", None, False),
        (LONGEST_SUFFIX, "ON_DEMAND", None, False),
        ("staging", "PROVISIONED", 2, False),
        ("prod", "PROVISIONED", 6, True),
    ],
)
def test_the_stream_is_sized_per_environment_and_encrypted_with_its_own_key(
    synth: Synth, name: str, mode: str, shards: int | None, shard_metrics: bool
) -> None:
    stack = synth.stacks[f"{PROJECT}-{name}"]
    stream = one(stack, "aws_kinesis_stream")
    assert stream["stream_mode_details"]["stream_mode"] == mode
    assert stream.get("shard_count") == shards
    assert bool(stream.get("shard_level_metrics")) == shard_metrics
    assert stream["encryption_type"] == "KMS"
    assert reference_target(stream["kms_key_id"]) == f"aws_kms_key.{key_named(stack, 'stream')}"
    assert stream["retention_period"] == config_of(f"{PROJECT}-{name}").ingestion.stream.retention_hours


def test_every_key_rotates(stack: dict[str, Any]) -> None:
    keys = resources(stack, "aws_kms_key")
    assert len(keys) == 4
    assert all(key["enable_key_rotation"] is True for key in keys.values())


def test_tables_are_on_demand_recoverable_encrypted_expiring_and_protected_outside_destroyable_envs(
    stack: dict[str, Any], stack_name: str
) -> None:
    tables = resources(stack, "aws_dynamodb_table")
    keys = {name: (t["hash_key"], t["range_key"]) for name, t in ((t["name"], t) for t in tables.values())}
    env = env_of(stack)
    assert keys == {
        f"{PROJECT}-readings-{env}": ("device_id", "timestamp"),
        f"{PROJECT}-aggregates-{env}": ("device_id", "minute"),
    }
    for table in tables.values():
        assert table["billing_mode"] == "PAY_PER_REQUEST"
        assert table["point_in_time_recovery"] == {"enabled": True}
        assert table["server_side_encryption"]["enabled"] is True
        assert reference_target(table["server_side_encryption"]["kms_key_arn"]) == (
            f"aws_kms_key.{key_named(stack, 'data')}"
        )
        assert table["ttl"] == {"attribute_name": "expires_at", "enabled": True}
        assert table["deletion_protection_enabled"] is (not config_of(stack_name).destroyable)


def test_the_processor_reads_the_stream_reporting_partial_failures_with_bounded_retries_to_a_dlq(
    stack: dict[str, Any], stack_name: str
) -> None:
    processing = config_of(stack_name).processing.event_source
    mapping = one(stack, "aws_lambda_event_source_mapping")
    assert mapping["function_response_types"] == ["ReportBatchItemFailures"]
    assert mapping["bisect_batch_on_function_error"] is True
    assert mapping["starting_position"] == "TRIM_HORIZON"
    assert (
        mapping["batch_size"],
        mapping["maximum_batching_window_in_seconds"],
        mapping["parallelization_factor"],
        mapping["maximum_retry_attempts"],
        mapping["maximum_record_age_in_seconds"],
    ) == (
        processing.batch_size,
        processing.batching_window_seconds,
        processing.parallelization_factor,
        processing.max_retry_attempts,
        processing.max_record_age_seconds,
    )
    assert 0 <= processing.max_retry_attempts <= 10
    destination = reference_target(mapping["destination_config"]["on_failure"]["destination_arn"])
    queue = stack["resource"]["aws_sqs_queue"][destination.split(".")[1]]
    assert queue["name"] == f"{PROJECT}-processing-dlq-{env_of(stack)}"
    assert reference_target(mapping["event_source_arn"]).startswith("aws_kinesis_stream.")


def test_the_processor_can_keep_up_with_every_shard(stack_name: str) -> None:
    """Each shard runs `parallelization_factor` batches at once; on-demand streams start with 4 shards."""
    config = config_of(stack_name)
    shards = config.ingestion.stream.shard_count or 4
    assert (
        config.processing.processor.reserved_concurrency
        >= shards * config.processing.event_source.parallelization_factor
    )


def test_prod_is_sized_from_its_target_load_with_one_worker_task_per_shard_at_most() -> None:
    """10,000 readings a second in requests of 10, three times over: bytes decide (about 1.7 MiB/s), 6 shards;
    the worker leases whole shards, so tasks beyond the shard count would idle."""
    prod = environment("prod", {})
    assert PROD_LOAD.readings_per_second == 10_000
    assert prod.ingestion.stream.shard_count == PROD_LOAD.shards() == 6
    assert prod.processing.worker.max_tasks == PROD_LOAD.shards()
    for name in ("staging", "prod"):
        config = environment(name, {})
        assert config.processing.worker.max_tasks <= (config.ingestion.stream.shard_count or 0)


@pytest.mark.parametrize(
    ("batch", "shards"),
    # One reading a request: a record per reading, 10,000 records a second x 3.
    [(1, 30), (10, 6), (500, 6)],
)
def test_a_target_load_is_sized_by_records_or_by_bytes_whichever_limits(batch: int, shards: int) -> None:
    load = TargetLoad(
        devices=10_000,
        readings_per_device_per_second=1,
        readings_per_request=batch,
        headroom=3,
    )
    assert load.shards() == shards


def test_the_sizing_constants_match_the_records_ingest_writes() -> None:
    """A typical reading packs into about PACKED_READING_BYTES (not more, nor much less: the sizing would
    waste shards), and the record limits are the readings package's."""
    typical = [
        Reading(
            device_id=f"greenhouse-7:sensor-{n:04d}",
            timestamp=canonical_timestamp(1_780_000_000_000 + n),
            metrics={"temperature": Decimal("21.375"), "humidity": Decimal("48.5"), "co2": 612},
            sequence=1_000_000 + n,
            firmware="2.14.3",
        )
        for n in range(1000)
    ]
    records = pack(typical)
    data_per_reading = sum(len(record.data) for record in records) / len(typical)
    assert 0.8 * PACKED_READING_BYTES <= data_per_reading <= PACKED_READING_BYTES
    assert {len(record.partition_key) for record in records} == {PARTITION_KEY_LENGTH}
    assert max(record.size for record in records) <= MAX_RECORD_BYTES == readings.MAX_RECORD_BYTES


def test_dead_letter_queues_are_encrypted_kept_14_days_and_tls_only(stack: dict[str, Any]) -> None:
    queues = resources(stack, "aws_sqs_queue")
    assert [q["name"] for q in queues.values()] == [f"{PROJECT}-processing-dlq-{env_of(stack)}"]
    policies = {
        reference_target(p["queue_url"]): p for p in resources(stack, "aws_sqs_queue_policy").values()
    }
    for name, queue in queues.items():
        assert queue["message_retention_seconds"] == 14 * 24 * 3600
        assert reference_target(queue["kms_master_key_id"]).startswith("aws_kms_key.")
        (deny,) = policy_statements(stack, policies[f"aws_sqs_queue.{name}"]["policy"])
        assert deny["effect"] == "Deny"
        assert deny["condition"] == [{"test": "Bool", "values": ["false"], "variable": "aws:SecureTransport"}]


def test_the_alert_topic_is_encrypted_with_a_key_cloudwatch_alarms_may_use(stack: dict[str, Any]) -> None:
    topic = one(stack, "aws_sns_topic")
    assert reference_target(topic["kms_master_key_id"]) == f"aws_kms_key.{key_named(stack, 'alerts')}"
    key_policy = data(stack, "aws_iam_policy_document", "alerts-key_policy")["statement"]
    cloudwatch = [s for s in key_policy if s.get("sid") == "CloudWatchAlarmsPublish"]
    assert cloudwatch and cloudwatch[0]["principals"][0]["identifiers"] == ["cloudwatch.amazonaws.com"]
    topic_policy = data(stack, "aws_iam_policy_document", "stream_alerts-policy")["statement"]
    assert {s.get("sid") for s in topic_policy} == {"CloudWatchAlarmsPublish", "DenyInsecureTransport"}


@pytest.mark.parametrize("function", FUNCTIONS)
def test_functions_are_traced_sized_per_environment_in_private_subnets_with_a_dlq_and_encrypted_settings(
    stack: dict[str, Any], stack_name: str, function: str
) -> None:
    config = config_of(stack_name)
    sizing = config.functions[function]
    name = f"{PROJECT}-{function}-{env_of(stack)}"
    fn = one(stack, "aws_lambda_function", function_name=name)
    assert fn["runtime"] == "python3.11"
    assert fn["tracing_config"] == {"mode": "Active"}
    assert (fn["memory_size"], fn["timeout"], fn["reserved_concurrent_executions"]) == (
        sizing.memory_mb,
        sizing.timeout_seconds,
        sizing.reserved_concurrency,
    )
    if config.emulator_endpoint:
        assert "layers" not in fn, "the emulator knows no AWS-managed layers (stacks/emulator.py)"
    else:
        assert fn["layers"] == list(sizing.layers)
    assert reference_target(fn["kms_key_arn"]) == f"aws_kms_key.{key_named(stack, 'data')}"
    assert "dead_letter_config" not in fn, "invoked synchronously: failures go back to the caller"
    assert len(fn["vpc_config"]["subnet_ids"]) == len(config.network.availability_zones)
    log_group = one(stack, "aws_cloudwatch_log_group", name=f"/aws/lambda/{name}")
    assert log_group["retention_in_days"] == config.log_retention_days
    assert reference_target(log_group["kms_key_id"]) == f"aws_kms_key.{key_named(stack, 'logs')}"


@pytest.mark.parametrize("function", FUNCTIONS)
def test_function_permissions_name_actions_and_resources_and_use_star_only_where_aws_requires_it(
    stack: dict[str, Any], function: str
) -> None:
    for statement in role_statements(stack, function):
        assert statement.get("effect", "Allow") == "Allow"
        assert not any(action == "*" or action.endswith(":*") for action in statement["actions"]), statement
        if "*" in statement["resources"]:
            assert statement["resources"] == ["*"]
            assert set(statement["actions"]) <= UNSCOPABLE_ACTIONS, statement


def test_each_function_may_touch_only_what_its_job_needs(stack: dict[str, Any]) -> None:
    ingest = role_statements(stack, "ingest")
    assert actions_on(ingest, "${aws_kinesis_stream.") == {"kinesis:PutRecords"}
    assert not actions_on(ingest, "${aws_dynamodb_table.")

    processor = role_statements(stack, "processor")
    assert "kinesis:GetRecords" in actions_on(processor, "${aws_kinesis_stream.")
    assert not {"kinesis:PutRecord", "kinesis:PutRecords"} & actions_on(processor, "${aws_kinesis_stream.")
    assert actions_on(processor, "${aws_dynamodb_table.") == {
        "dynamodb:BatchGetItem",
        "dynamodb:BatchWriteItem",
        "dynamodb:PutItem",
    }
    assert actions_on(processor, "${aws_sns_topic.") == {"sns:Publish"}
    assert actions_on(processor, "${aws_ssm_parameter.") == {"ssm:GetParameter"}

    query = role_statements(stack, "query")
    assert not actions_on(query, "${aws_kinesis_stream.")
    assert actions_on(query, "${aws_dynamodb_table.") == {"dynamodb:Query"}


def test_thresholds_live_in_ssm_and_operators_changes_survive_deploys(stack: dict[str, Any]) -> None:
    parameter = stack["resource"]["aws_ssm_parameter"]["thresholds"]
    assert parameter["name"] == f"/{PROJECT}/{env_of(stack)}/thresholds"
    assert isinstance(json.loads(parameter["value"]), dict)
    assert parameter["lifecycle"] == {"ignore_changes": ["value"]}


def test_a_deploy_changes_the_consumers_before_ingest(stack: dict[str, Any]) -> None:
    """Records in a new format are written only once the processor's mapping and the worker can read them:
    Terraform changes ingest after both."""
    (ingest,) = resources(
        stack, "aws_lambda_function", function_name=f"{PROJECT}-ingest-{env_of(stack)}"
    ).values()
    (mapping,) = resources(stack, "aws_lambda_event_source_mapping")
    (service,) = resources(stack, "aws_ecs_service")
    assert {f"aws_lambda_event_source_mapping.{mapping}", f"aws_ecs_service.{service}"} <= set(
        ingest["depends_on"]
    )
