"""What a Terraform plan will change, summarized in Markdown for a pull request's reviewers.

The input is `terraform show -json` of a saved plan. Replacements and destructions are listed one by one
with what forces them; those of stateful resources, whose data goes with them, are flagged.
"""

import json
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

from tools.local.security_scan import EXCEPTIONS, ScanResult, scan
from tools.local.terraform import PLAN_SECONDS, Terraform

Action = Literal["create", "update", "replace", "destroy"]
ACTIONS: tuple[Action, ...] = ("create", "update", "replace", "destroy")
SINGLE_ACTIONS: dict[str, Action] = {"create": "create", "update": "update", "delete": "destroy"}

# Resource types that hold data, or without which data cannot be read (keys, secrets), by what they are.
STATEFUL_TYPES = {
    "aws_db_instance": "database",
    "aws_rds_cluster": "database",
    "aws_elasticache_replication_group": "database",
    "aws_dynamodb_table": "table",
    "aws_kinesis_stream": "stream",
    "aws_efs_file_system": "file system",
    "aws_kms_key": "key",
    "aws_cloudwatch_log_group": "log group",
    "aws_secretsmanager_secret": "secret",
}

# Terraform's `action_reason` of a replacement without attribute paths, or of a destruction.
REASONS = {
    "replace_because_tainted": "it is tainted",
    "replace_by_request": "replacement requested (-replace)",
    "replace_by_triggers": "replace_triggered_by",
    "delete_because_no_resource_config": "removed from the configuration",
    "delete_because_no_module": "its module was removed",
    "delete_because_count_index": "its count index is gone",
    "delete_because_each_key": "its for_each key is gone",
}


@dataclass(frozen=True)
class ResourceChange:
    address: str
    resource_type: str
    action: Action
    forced_by: tuple[str, ...] = ()
    """The attributes whose change forces a replacement."""
    reason: str = ""
    """Otherwise, why Terraform replaces or destroys the resource, when it says."""

    @property
    def stateful(self) -> str | None:
        """What data the resource holds (for example "table"), if any."""
        return STATEFUL_TYPES.get(self.resource_type)


@dataclass(frozen=True)
class PlanSummary:
    stack_name: str
    changes: tuple[ResourceChange, ...]

    def count(self, action: Action) -> int:
        return sum(change.action == action for change in self.changes)

    @property
    def removals(self) -> tuple[ResourceChange, ...]:
        """The replacements and destructions: what a reviewer must look at."""
        return tuple(change for change in self.changes if change.action in ("replace", "destroy"))


def review(terraform: Terraform, stack_name: str) -> str:
    """Plan the initialized stack into plan.tfplan, plan.json and plan.md next to it; return plan.md."""
    stack = json.loads((terraform.stack_dir / "cdk.tf.json").read_text())
    with ThreadPoolExecutor(1) as pool:
        # checkov reads only the configuration: it scans while Terraform plans.
        scanned = pool.submit(scan, stack_name, stack)
        # No state lock: the reviewers' credentials are read-only, and a review must not hold up an apply.
        terraform.run("plan", "-input=false", "-lock=false", "-out=plan.tfplan", timeout=PLAN_SECONDS)
        plan_json = terraform.run("show", "-json", "plan.tfplan", timeout=PLAN_SECONDS, capture=True).stdout
        (terraform.stack_dir / "plan.json").write_text(plan_json)
        markdown = render(summarize(stack_name, json.loads(plan_json)), scanned.result())
    (terraform.stack_dir / "plan.md").write_text(markdown)
    return markdown


def summarize(stack_name: str, plan: Mapping[str, Any]) -> PlanSummary:
    """The managed resources that `plan` (`terraform show -json` of a saved plan) changes."""
    changes = []
    for resource in plan.get("resource_changes", []):
        action = _action(resource["change"]["actions"])
        if resource["mode"] != "managed" or action is None:
            continue
        paths = resource["change"].get("replace_paths") or []
        reason = resource.get("action_reason", "")
        changes.append(
            ResourceChange(
                resource["address"],
                resource["type"],
                action,
                forced_by=tuple(_path(path) for path in paths) if action == "replace" else (),
                reason=REASONS.get(reason, reason),
            )
        )
    return PlanSummary(stack_name, tuple(changes))


def render(summary: PlanSummary, scan_result: ScanResult) -> str:
    """The Markdown summary: counts, replacements and destructions, stateful ones flagged, security scan."""
    lines = [
        f"### Plan for `{summary.stack_name}`",
        "",
        "| " + " | ".join(ACTIONS) + " |",
        "|" + "---:|" * len(ACTIONS),
        "| " + " | ".join(str(summary.count(action)) for action in ACTIONS) + " |",
        "",
    ]
    stateful = [change for change in summary.removals if change.stateful]
    if stateful:
        lines += [
            f"> [!WARNING]\n> {len(stateful)} stateful resource(s) will be replaced or destroyed: "
            "their data is lost unless it is moved or backed up first.",
            "",
        ]
    if summary.removals:
        lines += ["| resource | action | because | stateful |", "|---|---|---|---|"]
        lines += [
            f"| `{change.address}` | {change.action} | {_because(change)} "
            f"| {f'**{change.stateful}**' if change.stateful else ''} |"
            for change in summary.removals
        ]
        lines.append("")
    lines.append(_scan_lines(scan_result))
    return "\n".join(lines) + "\n"


def _because(change: ResourceChange) -> str:
    if change.forced_by:
        return "changed " + ", ".join(f"`{attribute}`" for attribute in change.forced_by)
    return change.reason or "-"


def _scan_lines(result: ScanResult) -> str:
    if result.passed:
        return (
            f"**Security scan (checkov): passed**, all {result.findings} findings have a reasoned exception "
            f"in `{EXCEPTIONS.name}`."
        )
    lines = [
        f"**Security scan (checkov): failed**, {len(result.unexcused)} of {result.findings} findings have no "
        f"exception, {result.parsing_errors} parsing errors."
    ]
    lines += [f"- `{f.check}` `{f.resource}`: {f.title}" for f in result.unexcused]
    return "\n".join(lines)


def _action(actions: Sequence[str]) -> Action | None:
    """Terraform's action list as one of ours; None for no-op and reads."""
    if "delete" in actions and "create" in actions:
        return "replace"
    return SINGLE_ACTIONS.get(actions[0])


def _path(path: Sequence[str | int]) -> str:
    """An attribute path as Terraform writes it: ["ebs", 0, "size"] -> ebs[0].size."""
    text = ""
    for step in path:
        text += f"[{step}]" if isinstance(step, int) else f".{step}" if text else step
    return text
