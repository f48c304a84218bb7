"""Python Lambda functions with their own role, log group and security group."""

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cdktf import AssetType, TerraformAsset, TerraformResource
from cdktf_cdktf_provider_aws.iam_role import IamRole
from cdktf_cdktf_provider_aws.lambda_function import (
    LambdaFunction,
    LambdaFunctionEnvironment,
    LambdaFunctionTracingConfig,
    LambdaFunctionVpcConfig,
)
from constructs import Construct

from iot_constructs.account import Account
from iot_constructs.context import Context, Metric
from iot_constructs.iam import Permission, allow, grant, service_role
from iot_constructs.kms import EncryptionKey
from iot_constructs.network import Network
from iot_constructs.packaging import package

RUNTIME = "python3.11"
# X-Ray has no resource-level permissions: AWS requires "*" (as in AWSXRayDaemonWriteAccess).
TRACING_ACTIONS = ("xray:PutTelemetryRecords", "xray:PutTraceSegments")


def vpc_access(account: Account, subnet_ids: list[str], security_group_id: str) -> tuple[Permission, ...]:
    """What Lambda needs to join a function to the VPC, with the function's role: network interfaces in this
    account and region, created only in `subnet_ids` with `security_group_id`; the Describe actions have no
    resource-level permissions, so only they are on "*"
    (https://docs.aws.amazon.com/lambda/latest/dg/configuration-vpc.html#configuration-vpc-permissions).

    Resource ARNs, not condition keys (ec2:Vpc, ec2:Subnet): Lambda checks the role when it creates or updates
    the function by asking whether CreateNetworkInterface is allowed on network-interface/*, without those
    keys, and would refuse a role that needs them."""
    interfaces = account.arn("ec2", "network-interface/*")
    return (
        allow(
            ["ec2:CreateNetworkInterface"],
            [
                interfaces,
                *(account.arn("ec2", f"subnet/{subnet_id}") for subnet_id in subnet_ids),
                account.arn("ec2", f"security-group/{security_group_id}"),
            ],
        ),
        allow(
            ["ec2:AssignPrivateIpAddresses", "ec2:DeleteNetworkInterface", "ec2:UnassignPrivateIpAddresses"],
            [interfaces],
        ),
        allow(["ec2:DescribeNetworkInterfaces", "ec2:DescribeSubnets"], ["*"]),
    )


@dataclass(frozen=True)
class FunctionSettings:
    source: Path
    """The directory holding the function's handler.py, packaged whole."""
    memory_mb: int = 256
    timeout_seconds: int = 10
    reserved_concurrency: int = 5
    layers: tuple[str, ...] = ()
    """Layer ARNs, for example the AWS-managed Powertools layer. Default: none."""
    libraries: tuple[Path, ...] = ()
    """Directories of shared code (Python packages) packaged beside handler.py. Default: none."""
    bundled_distributions: tuple[str, ...] = ()
    """Python distributions that neither the runtime nor the layers provide, added to the package from the
    synthesizing environment (so at the versions Pipfile.lock pins). Default: none."""

    def __post_init__(self) -> None:
        if not (self.source / "handler.py").is_file():
            raise ValueError(f"no function code at {self.source}/handler.py")


class Function(Construct):
    """A Python Lambda function `<project>-<id>-<suffix>` in the private subnets, with HTTPS egress only.

    The role starts with only what running needs (its log group, its network interfaces, tracing, its
    key); everything else comes from grants on the resources it uses.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        settings: FunctionSettings,
        *,
        context: Context,
        key: EncryptionKey,
        network: Network,
        environment: Mapping[str, str],
    ) -> None:
        """`key` encrypts the function's environment variables. Functions are invoked synchronously (by API
        Gateway, the stream's event source mapping, Secrets Manager), so they have no dead-letter queue: a
        failure goes back to the caller, or to the mapping's on-failure destination."""
        super().__init__(scope, id)
        naming = context.naming
        name = naming.name(id)
        log_group = context.log_group(self, "log-group", f"/aws/lambda/{name}")
        self.role: IamRole = service_role(
            self, "role", name=name, service="lambda.amazonaws.com", account=context.account
        ).role
        self.security_group_id = network.compute_security_group(
            self, name, "no inbound, HTTPS out to AWS APIs"
        )
        grant(
            self,
            self,
            "run",
            allow(["logs:CreateLogStream", "logs:PutLogEvents"], [f"{log_group.arn}:log-stream:*"]),
            *vpc_access(context.account, network.private_subnet_ids, self.security_group_id),
            allow(TRACING_ACTIONS, ["*"]),
            key.grant_decrypt(),
        )
        code = TerraformAsset(
            self,
            "code",
            path=str(package(settings.source, settings.libraries, settings.bundled_distributions)),
            type=AssetType.FILE,
        )
        function = LambdaFunction(
            self,
            "function",
            function_name=name,
            role=self.role.arn,
            runtime=RUNTIME,
            handler="handler.handler",
            filename=code.path,
            source_code_hash=code.asset_hash,
            memory_size=settings.memory_mb,
            timeout=settings.timeout_seconds,
            reserved_concurrent_executions=settings.reserved_concurrency,
            layers=list(settings.layers),
            environment=LambdaFunctionEnvironment(
                variables={
                    "POWERTOOLS_SERVICE_NAME": id,
                    "POWERTOOLS_METRICS_NAMESPACE": naming.project,
                    "POWERTOOLS_LOG_LEVEL": "INFO",
                    **environment,
                }
            ),
            kms_key_arn=key.key_arn,
            tracing_config=LambdaFunctionTracingConfig(mode="Active"),
            vpc_config=LambdaFunctionVpcConfig(
                subnet_ids=network.private_subnet_ids, security_group_ids=[self.security_group_id]
            ),
            depends_on=[log_group],  # so that Lambda never creates an unencrypted group of its own first
        )
        self.function_name: str = function.function_name
        self.function_arn: str = function.arn
        self.invoke_arn: str = function.invoke_arn
        self.timeout_seconds = settings.timeout_seconds
        self._namespace = naming.project
        self._function = function

    def deploy_after(self, *resources: TerraformResource) -> None:
        """Terraform changes this function only after `resources`: a producer after the consumers that must
        read what its new code writes."""
        addresses = [f"{r.terraform_resource_type}.{r.friendly_unique_id}" for r in resources]
        self._function.depends_on = [*(self._function.depends_on or []), *addresses]

    @property
    def grant_principal(self) -> IamRole:
        return self.role

    def metric(self, name: str, statistic: str = "Sum") -> Metric:
        return Metric("AWS/Lambda", name, {"FunctionName": self.function_name}, statistic)

    def metric_published(self, name: str) -> Metric:
        """A metric the function's code publishes with Powertools: in the project's namespace, with the
        function's service name (POWERTOOLS_SERVICE_NAME) as its dimension."""
        return Metric(self._namespace, name, {"service": self.node.id})
