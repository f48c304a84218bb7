"""Lambda functions packaged from functions/<name>/, and the stream's event source mapping."""

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cdktf import AssetType, TerraformAsset
from cdktf_cdktf_provider_aws.cloudwatch_log_group import CloudwatchLogGroup
from cdktf_cdktf_provider_aws.iam_role import IamRole
from cdktf_cdktf_provider_aws.lambda_event_source_mapping import (
    LambdaEventSourceMapping,
    LambdaEventSourceMappingDestinationConfig,
    LambdaEventSourceMappingDestinationConfigOnFailure,
)
from cdktf_cdktf_provider_aws.lambda_function import (
    LambdaFunction,
    LambdaFunctionDeadLetterConfig,
    LambdaFunctionEnvironment,
    LambdaFunctionTracingConfig,
    LambdaFunctionVpcConfig,
)
from cdktf_cdktf_provider_aws.security_group import SecurityGroup
from cdktf_cdktf_provider_aws.vpc_security_group_egress_rule import VpcSecurityGroupEgressRule
from constructs import Construct

from iot_constructs.iam import allow, grant, service_role
from iot_constructs.kms import EncryptionKey
from iot_constructs.naming import Naming
from iot_constructs.network import Network
from iot_constructs.stream import DeadLetterQueue, Stream

FUNCTIONS_DIR = Path(__file__).resolve().parent.parent / "functions"
RUNTIME = "python3.11"
# Creating, describing and deleting its network interfaces is how Lambda joins a VPC; EC2 cannot scope these
# actions to resources that do not exist yet, so AWS requires "*" (as AWSLambdaVPCAccessExecutionRole does).
VPC_ACCESS_ACTIONS = (
    "ec2:AssignPrivateIpAddresses",
    "ec2:CreateNetworkInterface",
    "ec2:DeleteNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeSubnets",
    "ec2:UnassignPrivateIpAddresses",
)
# X-Ray has no resource-level permissions: AWS requires "*" (as in AWSXRayDaemonWriteAccess).
TRACING_ACTIONS = ("xray:PutTelemetryRecords", "xray:PutTraceSegments")


@dataclass(frozen=True)
class FunctionProps:
    naming: Naming
    component: str
    """The function is `<project>-<component>-<suffix>`; its code is functions/<component>/handler.py."""
    environment: Mapping[str, str]
    memory_mb: int
    timeout_seconds: int
    reserved_concurrency: int
    log_retention_days: int
    logs_key: EncryptionKey
    key: EncryptionKey
    """Encrypts the function's environment variables and its dead-letter queue."""
    network: Network
    """The function runs in its private subnets, with HTTPS egress only."""
    layers: tuple[str, ...] = ()
    """Layer ARNs, for example the AWS-managed Powertools layer. Default: none."""


class Function(Construct):
    """A Python Lambda function with its own role, log group, security group and dead-letter queue.

    The role starts with only what running needs (its log group, its network interfaces, tracing, its
    dead-letter queue, its key); everything else comes from grants on the resources it uses.
    """

    def __init__(self, scope: Construct, id: str, props: FunctionProps) -> None:
        super().__init__(scope, id)
        source = FUNCTIONS_DIR / props.component
        if not (source / "handler.py").is_file():
            raise ValueError(f"no function code at {source}/handler.py for component {props.component!r}")
        name = props.naming.name(props.component)
        code = TerraformAsset(self, "code", path=str(source), type=AssetType.ARCHIVE)
        log_group = CloudwatchLogGroup(
            self,
            "log-group",
            name=f"/aws/lambda/{name}",
            retention_in_days=props.log_retention_days,
            kms_key_id=props.logs_key.key_arn,
        )
        self.role: IamRole = service_role(self, "role", name=name, service="lambda.amazonaws.com")
        dead_letters = DeadLetterQueue(
            self, "dead-letters", name=props.naming.name(f"{props.component}-dlq"), key=props.key
        )
        dead_letters.grant_send(self.role)
        grant(
            self,
            self.role,
            "run",
            [
                allow(["logs:CreateLogStream", "logs:PutLogEvents"], [f"{log_group.arn}:log-stream:*"]),
                allow(VPC_ACCESS_ACTIONS, ["*"]),
                allow(TRACING_ACTIONS, ["*"]),
                allow(["kms:Decrypt"], [props.key.key_arn]),
            ],
        )

        security_group = SecurityGroup(
            self,
            "security-group",
            name=name,
            description=f"{name}: no inbound, HTTPS out to AWS APIs",
            vpc_id=props.network.vpc_id,
        )
        VpcSecurityGroupEgressRule(
            self,
            "https-egress",
            security_group_id=security_group.id,
            description="HTTPS to AWS APIs, through the NAT gateways and VPC endpoints",
            ip_protocol="tcp",
            from_port=443,
            to_port=443,
            cidr_ipv4="0.0.0.0/0",
        )
        self.security_group_id: str = security_group.id

        function = LambdaFunction(
            self,
            "function",
            function_name=name,
            role=self.role.arn,
            runtime=RUNTIME,
            handler="handler.handler",
            filename=code.path,
            source_code_hash=code.asset_hash,
            memory_size=props.memory_mb,
            timeout=props.timeout_seconds,
            reserved_concurrent_executions=props.reserved_concurrency,
            layers=list(props.layers),
            environment=LambdaFunctionEnvironment(variables=dict(props.environment)),
            kms_key_arn=props.key.key_arn,
            tracing_config=LambdaFunctionTracingConfig(mode="Active"),
            dead_letter_config=LambdaFunctionDeadLetterConfig(target_arn=dead_letters.queue_arn),
            vpc_config=LambdaFunctionVpcConfig(
                subnet_ids=props.network.private_subnet_ids, security_group_ids=[security_group.id]
            ),
            depends_on=[log_group],  # so that Lambda never creates an unencrypted group of its own first
        )
        self.function_name: str = function.function_name
        self.function_arn: str = function.arn
        self.invoke_arn: str = function.invoke_arn


@dataclass(frozen=True)
class StreamEventSourceProps:
    function: Function
    stream: Stream
    batch_size: int
    batching_window_seconds: int
    parallelization_factor: int
    max_retry_attempts: int
    max_record_age_seconds: int


class StreamEventSource(Construct):
    """Feeds the stream to a function that reports partial batch failures.

    A failing batch is split in two until the failing records are isolated; a record that still fails
    after `max_retry_attempts`, or grows older than `max_record_age_seconds`, goes to the stream's
    processing dead-letter queue. Reading starts at the oldest record, so nothing written before the
    mapping existed is skipped.
    """

    def __init__(self, scope: Construct, id: str, props: StreamEventSourceProps) -> None:
        super().__init__(scope, id)
        role = props.function.role
        props.stream.grant_read(role)
        props.stream.processing_dead_letters.grant_send(role)
        LambdaEventSourceMapping(
            self,
            "mapping",
            function_name=props.function.function_arn,
            event_source_arn=props.stream.stream_arn,
            starting_position="TRIM_HORIZON",
            batch_size=props.batch_size,
            maximum_batching_window_in_seconds=props.batching_window_seconds,
            parallelization_factor=props.parallelization_factor,
            function_response_types=["ReportBatchItemFailures"],
            bisect_batch_on_function_error=True,
            maximum_retry_attempts=props.max_retry_attempts,
            maximum_record_age_in_seconds=props.max_record_age_seconds,
            destination_config=LambdaEventSourceMappingDestinationConfig(
                on_failure=LambdaEventSourceMappingDestinationConfigOnFailure(
                    destination_arn=props.stream.processing_dead_letters.queue_arn
                )
            ),
        )
