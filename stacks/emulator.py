"""Everything the local environment does differently so that it runs on the AWS emulator, in one place.

The emulator is moto (5.2.5, the Pipfile's) behind the aws provider 5.100.0. Where moto falls short, the
local stack works around it here, and only here: resources it cannot create, read or delete are left out,
arguments it rejects are dropped, and diffs that only moto causes are ignored. Real environments get none
of it, so they never ignore drift. tests/e2e re-measures the ignored diffs on every run: it plans the
deployed local stack without them and expects exactly these attributes to differ, and nothing else.
"""

from dataclasses import dataclass

from cdktf import TerraformResource
from constructs import Construct

# Resource types left out of the local stack, with what moto does to them. Nothing may refer to them: a
# reference left dangling fails `terraform validate`, and then the local configuration (stacks/config.py)
# has to leave out what uses them too (as it does with ElastiCache).
UNSUPPORTED_RESOURCES: dict[str, str] = {
    "aws_elasticache_replication_group": (
        "apply fails reading Cache Cluster (<id>-001): CacheClusterNotFound; so do later plans and destroy"
    ),
    "aws_elasticache_cluster": (
        "destroy never finishes: moto's DeleteCacheCluster leaves the cluster 'deleting' for good"
    ),
    "aws_elasticache_subnet_group": "destroy never finishes: moto does not implement DeleteCacheSubnetGroup",
    "aws_efs_file_system_policy": (
        "destroy hangs: moto does not implement DeleteFileSystemPolicy (HTTP 500, retried for minutes)"
    ),
    "aws_secretsmanager_secret_rotation": (
        "destroy fails for rotation without a Lambda function (RDS-managed secrets): CancelRotateSecret "
        "returns InvalidRequestException: You tried to enable rotation on a secret that doesn't already have "
        "a Lambda function ARN configured"
    ),
    "aws_appautoscaling_target": (
        "apply hangs: moto does not implement ListTagsForResource for scalable targets"
    ),
    "aws_sqs_queue_redrive_allow_policy": "apply hangs waiting for the queue's RedriveAllowPolicy",
}


@dataclass(frozen=True)
class Workaround:
    """An attribute of a resource type that the local environment treats differently, and why."""

    resource_type: str
    attribute: str
    emulator: str
    """What moto does that makes the workaround necessary."""


# Arguments dropped from the local stack because moto rejects them.
OMITTED_ARGUMENTS = (
    Workaround(
        "aws_lambda_function",
        "layers",
        "CreateFunction with AWS's Powertools layer fails: ResourceNotFoundException: One or more "
        "LayerVersion does not exist (moto knows only layers published to it, and never runs function code)",
    ),
)

# Diffs that only moto causes, attribute by attribute: the local stack ignores changes to them.
IGNORED_DRIFT = (
    Workaround(
        "aws_kinesis_stream",
        "tags_all",
        "moto drops the tags of CreateStream, so the first plan adds the default tags again",
    ),
    *(
        Workaround(
            "aws_db_instance",
            attribute,
            "moto keeps no Performance Insights settings, so every plan turns them on again",
        )
        for attribute in (
            "performance_insights_enabled",
            "performance_insights_kms_key_id",
            "performance_insights_retention_period",
        )
    ),
    Workaround(
        "aws_db_parameter_group",
        "parameter",
        "moto returns parameters without their Source, so every plan adds them all again",
    ),
    Workaround(
        "aws_ecs_service",
        "availability_zone_rebalancing",
        "moto does not return the setting, so every plan sets it again",
    ),
    Workaround(
        "aws_vpc_security_group_ingress_rule",
        "referenced_security_group_id",
        "moto returns the referenced group as <account>/<group id>, so every plan changes it back",
    ),
    Workaround(
        "aws_vpc_security_group_ingress_rule",
        "description",
        "moto drops the description of a rule that references a security group, so every plan adds it",
    ),
    Workaround(
        "aws_vpc_security_group_egress_rule",
        "referenced_security_group_id",
        "moto returns the referenced group as <account>/<group id>, so every plan changes it back",
    ),
    Workaround(
        "aws_vpc_security_group_egress_rule",
        "description",
        "moto drops the description of a rule that references a security group, so every plan adds it",
    ),
)


def apply_workarounds(stack: Construct) -> None:
    """Apply this module's workarounds to every resource of `stack`, which must be complete.

    A walk over the finished construct tree rather than an aspect: the kernel would call an aspect
    written in Python once for every construct of the stack, a round trip each.
    """
    resource_types: dict[type, str] = {}  # each binding class declares one resource type
    for node in stack.node.find_all():
        if isinstance(node, TerraformResource):
            resource_type = resource_types.get(type(node))
            if resource_type is None:
                resource_type = resource_types[type(node)] = node.terraform_resource_type
            _apply(node, resource_type)


def _apply(resource: TerraformResource, resource_type: str) -> None:
    if resource_type in UNSUPPORTED_RESOURCES:
        scope = resource.node.scope
        assert scope is not None  # a resource always has a parent
        scope.node.try_remove_child(resource.node.id)
        return
    for omitted in OMITTED_ARGUMENTS:
        if omitted.resource_type == resource_type:
            resource.add_override(omitted.attribute, None)  # None deletes the argument
    ignored = [drift.attribute for drift in IGNORED_DRIFT if drift.resource_type == resource_type]
    if not ignored:
        return
    lifecycle = resource.lifecycle
    current = lifecycle.ignore_changes if lifecycle else None
    if current != "all":
        # An override: a new lifecycle object would drop the resource's other lifecycle settings.
        resource.add_override("lifecycle.ignore_changes", [*(current or []), *ignored])
