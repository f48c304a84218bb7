"""What the emulator holds, service by service: after a destroy, nothing of the platform may be left.

One lister per service the stack's provider sends to the emulator (EMULATED_SERVICES). Each lists every
resource the platform can create with that service, leaving out what AWS owns (the default VPC, AWS-managed
keys and policies, default parameter groups) and what is gone for good but still listed (keys pending
deletion; deleted endpoints, clusters and services; inactive task definitions).
"""

from collections.abc import Callable
from typing import Any

from tools.local.emulator import Emulator

Lister = Callable[[Callable[[str], Any]], list[str]]


def _ec2(client: Callable[[str], Any]) -> list[str]:
    ec2 = client("ec2")
    default_vpcs = {vpc["VpcId"] for vpc in ec2.describe_vpcs()["Vpcs"] if vpc["IsDefault"]}

    def outside_default(items: list[dict[str, Any]], id_key: str) -> list[str]:
        return [item[id_key] for item in items if item.get("VpcId") not in default_vpcs]

    return [
        *outside_default(ec2.describe_vpcs()["Vpcs"], "VpcId"),
        *outside_default(ec2.describe_subnets()["Subnets"], "SubnetId"),
        *outside_default(ec2.describe_security_groups()["SecurityGroups"], "GroupId"),
        *outside_default(ec2.describe_route_tables()["RouteTables"], "RouteTableId"),
        # A VPC's own ACL goes with it in AWS; moto keeps it, so only ACLs of the platform's own count.
        *outside_default(
            [a for a in ec2.describe_network_acls()["NetworkAcls"] if not a["IsDefault"]], "NetworkAclId"
        ),
        *outside_default(ec2.describe_network_interfaces()["NetworkInterfaces"], "NetworkInterfaceId"),
        *(
            gateway["InternetGatewayId"]
            for gateway in ec2.describe_internet_gateways()["InternetGateways"]
            if not {a["VpcId"] for a in gateway["Attachments"]} & default_vpcs
        ),
        *(
            endpoint["VpcEndpointId"]
            for endpoint in ec2.describe_vpc_endpoints()["VpcEndpoints"]
            if endpoint["State"].lower() != "deleted"
        ),
        *(log["FlowLogId"] for log in ec2.describe_flow_logs()["FlowLogs"]),
        *(address["AllocationId"] for address in ec2.describe_addresses()["Addresses"]),
        *(
            gateway["NatGatewayId"]
            for gateway in ec2.describe_nat_gateways()["NatGateways"]
            if gateway["State"] != "deleted"
        ),
    ]


def _kms(client: Callable[[str], Any]) -> list[str]:
    kms = client("kms")
    aliases = kms.list_aliases()["Aliases"]
    # Using a service creates its AWS-managed key (alias/aws/<service>): AWS owns it and never deletes it.
    aws_managed = {a.get("TargetKeyId") for a in aliases if a["AliasName"].startswith("alias/aws/")}
    keys = [kms.describe_key(KeyId=key["KeyId"])["KeyMetadata"] for key in kms.list_keys()["Keys"]]
    return [
        # A destroyed key waits out its deletion window: that is as gone as AWS lets a key go.
        *(k["KeyId"] for k in keys if k["KeyState"] != "PendingDeletion" and k["KeyId"] not in aws_managed),
        *(a["AliasName"] for a in aliases if not a["AliasName"].startswith("alias/aws/")),
    ]


def _iam(client: Callable[[str], Any]) -> list[str]:
    iam = client("iam")
    return [role["RoleName"] for role in iam.list_roles()["Roles"]] + [
        policy["Arn"] for policy in iam.list_policies(Scope="Local")["Policies"]
    ]


def _lambda(client: Callable[[str], Any]) -> list[str]:
    lambda_ = client("lambda")
    return [
        *(function["FunctionName"] for function in lambda_.list_functions()["Functions"]),
        *(mapping["UUID"] for mapping in lambda_.list_event_source_mappings()["EventSourceMappings"]),
        *(layer["LayerName"] for layer in lambda_.list_layers()["Layers"]),
    ]


def _rds(client: Callable[[str], Any]) -> list[str]:
    rds = client("rds")
    return [
        *(db["DBInstanceIdentifier"] for db in rds.describe_db_instances()["DBInstances"]),
        *(cluster["DBClusterIdentifier"] for cluster in rds.describe_db_clusters()["DBClusters"]),
        *(group["DBSubnetGroupName"] for group in rds.describe_db_subnet_groups()["DBSubnetGroups"]),
        *(
            group["DBParameterGroupName"]
            for group in rds.describe_db_parameter_groups()["DBParameterGroups"]
            if not group["DBParameterGroupName"].startswith("default.")
        ),
        *(
            group["DBClusterParameterGroupName"]
            for group in rds.describe_db_cluster_parameter_groups()["DBClusterParameterGroups"]
            if not group["DBClusterParameterGroupName"].startswith("default.")
        ),
        *(snapshot["DBSnapshotIdentifier"] for snapshot in rds.describe_db_snapshots()["DBSnapshots"]),
    ]


def _ecs(client: Callable[[str], Any]) -> list[str]:
    ecs = client("ecs")
    # Deleted clusters and services stay listed for a while, as INACTIVE.
    clusters = ecs.describe_clusters(clusters=ecs.list_clusters()["clusterArns"])["clusters"]
    services = [
        service
        for cluster in clusters
        for arns in [ecs.list_services(cluster=cluster["clusterArn"])["serviceArns"]]
        if arns
        for service in ecs.describe_services(cluster=cluster["clusterArn"], services=arns)["services"]
    ]
    return [
        *(item["clusterArn"] for item in clusters if item["status"] != "INACTIVE"),
        *(item["serviceArn"] for item in services if item["status"] != "INACTIVE"),
        *ecs.list_task_definitions(status="ACTIVE")["taskDefinitionArns"],
    ]


def _apigateway(client: Callable[[str], Any]) -> list[str]:
    apigateway = client("apigateway")
    return [
        *(api["id"] for api in apigateway.get_rest_apis()["items"]),
        *(key["id"] for key in apigateway.get_api_keys()["items"]),
        *(plan["id"] for plan in apigateway.get_usage_plans()["items"]),
    ]


def _applicationautoscaling(client: Callable[[str], Any]) -> list[str]:
    autoscaling = client("application-autoscaling")
    return [
        *(
            t["ResourceId"]
            for t in autoscaling.describe_scalable_targets(ServiceNamespace="ecs")["ScalableTargets"]
        ),
        *(
            p["PolicyName"]
            for p in autoscaling.describe_scaling_policies(ServiceNamespace="ecs")["ScalingPolicies"]
        ),
    ]


def _cloudwatch(client: Callable[[str], Any]) -> list[str]:
    cloudwatch = client("cloudwatch")
    alarms = cloudwatch.describe_alarms(AlarmTypes=["MetricAlarm", "CompositeAlarm"])
    return [
        *(alarm["AlarmName"] for alarm in alarms["MetricAlarms"] + alarms["CompositeAlarms"]),
        *(dashboard["DashboardName"] for dashboard in cloudwatch.list_dashboards()["DashboardEntries"]),
    ]


def _elasticache(client: Callable[[str], Any]) -> list[str]:
    elasticache = client("elasticache")
    return [
        *(g["ReplicationGroupId"] for g in elasticache.describe_replication_groups()["ReplicationGroups"]),
        *(c["CacheClusterId"] for c in elasticache.describe_cache_clusters()["CacheClusters"]),
        *(
            group["CacheSubnetGroupName"]
            for group in elasticache.describe_cache_subnet_groups()["CacheSubnetGroups"]
            if group["CacheSubnetGroupName"] != "default"
        ),
    ]


def _efs(client: Callable[[str], Any]) -> list[str]:
    efs = client("efs")
    return [
        *(fs["FileSystemId"] for fs in efs.describe_file_systems()["FileSystems"]),
        *(ap["AccessPointId"] for ap in efs.describe_access_points()["AccessPoints"]),
    ]


def _s3(state_bucket: str, state_key: str) -> Lister:
    """Every bucket but the state bucket, and every object in it but the state (empty after a destroy)."""

    def lister(client: Callable[[str], Any]) -> list[str]:
        s3 = client("s3")
        buckets = [bucket["Name"] for bucket in s3.list_buckets()["Buckets"]]
        objects = [obj["Key"] for obj in s3.list_objects_v2(Bucket=state_bucket).get("Contents", [])]
        return [b for b in buckets if b != state_bucket] + [o for o in objects if o != state_key]

    return lister


LISTERS: dict[str, Lister] = {
    "apigateway": _apigateway,
    "applicationautoscaling": _applicationautoscaling,
    "cloudwatch": _cloudwatch,
    "dynamodb": lambda client: client("dynamodb").list_tables()["TableNames"],
    "ec2": _ec2,
    "ecr": lambda client: [
        r["repositoryName"] for r in client("ecr").describe_repositories()["repositories"]
    ],
    "ecs": _ecs,
    "efs": _efs,
    "elasticache": _elasticache,
    "iam": _iam,
    "kinesis": lambda client: client("kinesis").list_streams()["StreamNames"],
    "kms": _kms,
    "lambda_": _lambda,
    "logs": lambda client: [g["logGroupName"] for g in client("logs").describe_log_groups()["logGroups"]],
    "rds": _rds,
    "secretsmanager": lambda client: [
        s["Name"] for s in client("secretsmanager").list_secrets()["SecretList"]
    ],
    "sns": lambda client: [topic["TopicArn"] for topic in client("sns").list_topics()["Topics"]],
    "sqs": lambda client: client("sqs").list_queues().get("QueueUrls", []),
    "ssm": lambda client: [
        p["Name"]
        for p in client("ssm").describe_parameters()["Parameters"]
        if not p["Name"].startswith("/aws/")
    ],
    "wafv2": lambda client: [
        acl["Name"] for acl in client("wafv2").list_web_acls(Scope="REGIONAL")["WebACLs"]
    ],
}


def inventory(emulator: Emulator, region: str, state_bucket: str, state_key: str) -> dict[str, list[str]]:
    """Service -> what the emulator holds of it in `region`, beyond what it starts with."""

    def client(service: str) -> Any:
        return emulator.client(service, region)

    listers = {**LISTERS, "s3": _s3(state_bucket, state_key)}
    return {service: lister(client) for service, lister in sorted(listers.items())}
