"""The plan review summary, from plans in the shape of `terraform show -json`.

tests/e2e/test_local_environment.py reviews a real plan of a changed stack on the emulator.
"""

from typing import Any

from tools.local.plan_review import PlanSummary, ResourceChange, render, summarize
from tools.local.security_scan import Finding, ScanResult

PASSED = ScanResult(findings=3, unexcused=(), parsing_errors=0)


def resource_change(
    address: str, actions: list[str], *, mode: str = "managed", reason: str | None = None, **change: Any
) -> dict[str, Any]:
    resource_type = address.removeprefix("data.").split(".")[0]
    entry = {
        "address": address,
        "mode": mode,
        "type": resource_type,
        "change": {"actions": actions, **change},
    }
    return entry | ({"action_reason": reason} if reason else {})


def test_every_kind_of_change_is_counted_and_no_ops_and_reads_are_not() -> None:
    plan = {
        "resource_changes": [
            resource_change("aws_sqs_queue.new", ["create"]),
            resource_change("aws_lambda_function.f", ["update"]),
            resource_change("aws_iam_role.r", ["delete", "create"], replace_paths=[["name"]]),
            resource_change("aws_sns_topic.t", ["create", "delete"], replace_paths=[["name"]]),
            resource_change("aws_ssm_parameter.p", ["delete"], reason="delete_because_no_resource_config"),
            resource_change("aws_vpc.v", ["no-op"]),
            resource_change("data.aws_region.r", ["read"], mode="data"),
        ]
    }
    summary = summarize("iot-platform-dev", plan)
    counts = {action: summary.count(action) for action in ("create", "update", "replace", "destroy")}
    assert counts == {"create": 1, "update": 1, "replace": 2, "destroy": 1}
    assert [c.address for c in summary.removals] == [
        "aws_iam_role.r",
        "aws_sns_topic.t",
        "aws_ssm_parameter.p",
    ]


def test_a_replacement_names_the_attributes_that_force_it() -> None:
    plan = {
        "resource_changes": [
            resource_change(
                "aws_dynamodb_table.readings",
                ["delete", "create"],
                reason="replace_because_cannot_update",
                replace_paths=[["range_key"], ["attribute", 0, "name"]],
            ),
            resource_change("aws_kms_key.k", ["delete", "create"], reason="replace_because_tainted"),
        ]
    }
    table, key = summarize("iot-platform-dev", plan).changes
    assert table.forced_by == ("range_key", "attribute[0].name")
    assert (key.forced_by, key.reason) == ((), "it is tainted")


def test_a_destruction_says_why() -> None:
    plan = {
        "resource_changes": [resource_change("aws_sqs_queue.q", ["delete"], reason="delete_because_each_key")]
    }
    (queue,) = summarize("iot-platform-dev", plan).changes
    assert queue.reason == "its for_each key is gone"


def test_stateful_resources_are_those_that_hold_data() -> None:
    kinds = {
        resource_type: ResourceChange(f"{resource_type}.x", resource_type, "replace").stateful
        for resource_type in (
            "aws_db_instance",
            "aws_dynamodb_table",
            "aws_kinesis_stream",
            "aws_efs_file_system",
            "aws_kms_key",
            "aws_cloudwatch_log_group",
            "aws_secretsmanager_secret",
            "aws_iam_role",
            "aws_lambda_function",
        )
    }
    assert kinds == {
        "aws_db_instance": "database",
        "aws_dynamodb_table": "table",
        "aws_kinesis_stream": "stream",
        "aws_efs_file_system": "file system",
        "aws_kms_key": "key",
        "aws_cloudwatch_log_group": "log group",
        "aws_secretsmanager_secret": "secret",
        "aws_iam_role": None,
        "aws_lambda_function": None,
    }


def test_the_summary_lists_removals_and_warns_about_stateful_ones() -> None:
    summary = PlanSummary(
        "iot-platform-prod",
        (
            ResourceChange("aws_lambda_function.f", "aws_lambda_function", "update"),
            ResourceChange("aws_dynamodb_table.t", "aws_dynamodb_table", "replace", forced_by=("range_key",)),
            ResourceChange(
                "aws_iam_role.r", "aws_iam_role", "destroy", reason="removed from the configuration"
            ),
        ),
    )
    markdown = render(summary, PASSED)
    assert "| create | update | replace | destroy |\n|---:|---:|---:|---:|\n| 0 | 1 | 1 | 1 |" in markdown
    assert "> 1 stateful resource(s) will be replaced or destroyed" in markdown
    assert "| `aws_dynamodb_table.t` | replace | changed `range_key` | **table** |" in markdown
    assert "| `aws_iam_role.r` | destroy | removed from the configuration |  |" in markdown
    assert "aws_lambda_function.f" not in markdown  # updates are counted, not listed
    assert "**Security scan (checkov): passed**, all 3 findings have a reasoned exception" in markdown


def test_a_plan_without_removals_has_no_table_and_no_warning() -> None:
    markdown = render(PlanSummary("iot-platform-dev", ()), PASSED)
    assert "| 0 | 0 | 0 | 0 |" in markdown
    assert "WARNING" not in markdown
    assert "| resource |" not in markdown


def test_the_summary_lists_the_findings_without_an_exception() -> None:
    finding = Finding(
        "iot-platform-dev",
        "CKV_AWS_158",
        "resource.logs_log-group_ABC",
        "Ensure CloudWatch logs are encrypted",
    )
    failed = ScanResult(findings=4, unexcused=(finding,), parsing_errors=0)
    markdown = render(PlanSummary("iot-platform-dev", ()), failed)
    assert "**Security scan (checkov): failed**, 1 of 4 findings have no exception" in markdown
    assert "- `CKV_AWS_158` `resource.logs_log-group_ABC`: Ensure CloudWatch logs are encrypted" in markdown
