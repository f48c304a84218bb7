"""Lambda functions packaged from functions/<name>/, and the stream's event source mapping."""

import hashlib
import json
import os
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import distribution
from pathlib import Path

from cdktf import AssetType, Fn, TerraformAsset, TerraformResourceLifecycle
from cdktf_cdktf_provider_aws.appautoscaling_policy import (
    AppautoscalingPolicy,
    AppautoscalingPolicyTargetTrackingScalingPolicyConfiguration,
    AppautoscalingPolicyTargetTrackingScalingPolicyConfigurationCustomizedMetricSpecification,
    AppautoscalingPolicyTargetTrackingScalingPolicyConfigurationCustomizedMetricSpecificationDimensions,
    AppautoscalingPolicyTargetTrackingScalingPolicyConfigurationPredefinedMetricSpecification,
)
from cdktf_cdktf_provider_aws.appautoscaling_target import AppautoscalingTarget
from cdktf_cdktf_provider_aws.cloudwatch_log_group import CloudwatchLogGroup
from cdktf_cdktf_provider_aws.ecr_lifecycle_policy import EcrLifecyclePolicy
from cdktf_cdktf_provider_aws.ecr_repository import (
    EcrRepository,
    EcrRepositoryEncryptionConfiguration,
    EcrRepositoryImageScanningConfiguration,
)
from cdktf_cdktf_provider_aws.ecs_cluster import EcsCluster, EcsClusterSetting
from cdktf_cdktf_provider_aws.ecs_service import (
    EcsService,
    EcsServiceDeploymentCircuitBreaker,
    EcsServiceNetworkConfiguration,
)
from cdktf_cdktf_provider_aws.ecs_task_definition import (
    EcsTaskDefinition,
    EcsTaskDefinitionVolume,
    EcsTaskDefinitionVolumeEfsVolumeConfiguration,
    EcsTaskDefinitionVolumeEfsVolumeConfigurationAuthorizationConfig,
)
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

from iot_constructs.account import Account
from iot_constructs.datastores import FileSystem
from iot_constructs.iam import allow, grant, service_role
from iot_constructs.kms import EncryptionKey
from iot_constructs.naming import Naming
from iot_constructs.network import Network
from iot_constructs.stream import DeadLetterQueue, Stream

FUNCTIONS_DIR = Path(__file__).resolve().parent.parent / "functions"
BUNDLES_DIR = Path(__file__).resolve().parent.parent / ".cache" / "function-bundles"
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
    account: Account
    component: str
    """The function is `<project>-<component>-<suffix>`; its code is functions/<component>/handler.py, with
    `_` for `-` in the directory name."""
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
    bundled_distributions: tuple[str, ...] = ()
    """Python distributions that neither the runtime nor the layers provide, added to the package from the
    synthesizing environment (so at the versions Pipfile.lock pins). Default: none."""


class Function(Construct):
    """A Python Lambda function with its own role, log group, security group and dead-letter queue.

    The role starts with only what running needs (its log group, its network interfaces, tracing, its
    dead-letter queue, its key); everything else comes from grants on the resources it uses.
    """

    def __init__(self, scope: Construct, id: str, props: FunctionProps) -> None:
        super().__init__(scope, id)
        source = FUNCTIONS_DIR / props.component.replace("-", "_")
        if not (source / "handler.py").is_file():
            raise ValueError(f"no function code at {source}/handler.py for component {props.component!r}")
        name = props.naming.name(props.component)
        code = TerraformAsset(
            self, "code", path=str(_package(source, props.bundled_distributions)), type=AssetType.FILE
        )
        log_group = CloudwatchLogGroup(
            self,
            "log-group",
            name=f"/aws/lambda/{name}",
            retention_in_days=props.log_retention_days,
            kms_key_id=props.logs_key.key_arn,
        )
        self.role: IamRole = service_role(
            self, "role", name=name, service="lambda.amazonaws.com", account=props.account
        )
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
        self.timeout_seconds = props.timeout_seconds
        self.dead_letter_queue_name: str = dead_letters.queue_name


def _package(source: Path, distributions: tuple[str, ...]) -> Path:
    """The function's zip: `source` and `distributions`, built once per content and reproducible.

    Zipped here rather than by cdktf (an ARCHIVE asset spawns a Node process per asset and stack); fixed
    entry times and order make the same code the same bytes, so Terraform only sees real changes.
    """
    files = {path.relative_to(source): path for path in sorted(source.rglob("*")) if _packaged(path)}
    for name in distributions:
        installed = distribution(name)
        located = {Path(file): Path(str(installed.locate_file(file))) for file in installed.files or []}
        files |= {
            relative: path
            for relative, path in located.items()
            if _packaged(path) and not relative.parts[0].startswith("..")  # scripts outside site-packages
        }
    digest = hashlib.sha256()
    for relative, path in sorted(files.items()):
        digest.update(str(relative).encode() + b"\0" + path.read_bytes())
    package = BUNDLES_DIR / digest.hexdigest()[:16] / f"{source.name}.zip"
    if not package.exists():
        package.parent.mkdir(parents=True, exist_ok=True)
        handle, staging = tempfile.mkstemp(dir=package.parent, suffix=".zip")
        with os.fdopen(handle, "wb") as file, zipfile.ZipFile(file, "w") as archive:
            for relative, path in sorted(files.items()):
                entry = zipfile.ZipInfo(relative.as_posix(), date_time=(1980, 1, 1, 0, 0, 0))
                entry.external_attr = 0o644 << 16
                archive.writestr(entry, path.read_bytes(), compress_type=zipfile.ZIP_DEFLATED)
        os.replace(staging, package)  # atomic: concurrent synths may build the same package
    return package


def _packaged(path: Path) -> bool:
    return path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"


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


WORKER_PORT_RANGE = (0, 65535)
# Pulling an image starts with ecr:GetAuthorizationToken, which has no resource: AWS requires "*".
ECR_PULL_ACTIONS = ("ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer")
KEPT_IMAGES = 20
WORKER_USER = "1000:1000"  # the image's non-root user (functions/stream_worker/Dockerfile)
WORKER_ARTEFACTS_DIR = "/mnt/artefacts"


@dataclass(frozen=True)
class WorkerProps:
    naming: Naming
    account: Account
    network: Network
    """Tasks run in its private subnets, without public IPs."""
    key: EncryptionKey
    """Encrypts the image repository."""
    logs_key: EncryptionKey
    log_retention_days: int
    image_tag: str
    """The tag of the image in the worker's repository to run; tags are immutable."""
    cpu: int
    memory_mb: int
    environment: Mapping[str, str]
    secrets: Mapping[str, str]
    """Environment variable -> Secrets Manager reference (`<secret arn>:<json key>::`), injected at start."""
    secret_arns: tuple[str, ...]
    """The secrets those references read, which the task's execution role may read (with `secret_key`)."""
    secret_key: EncryptionKey
    file_system: FileSystem
    """Mounted at WORKER_ARTEFACTS_DIR through its access point, with TLS and IAM authorization."""
    min_tasks: int
    max_tasks: int
    autoscaling: bool
    """Scale between min_tasks and max_tasks on CPU and on stream lag; without it, min_tasks run."""
    stream: Stream
    cpu_target_percent: int
    iterator_age_target_ms: int
    scale_in_cooldown_seconds: int
    scale_out_cooldown_seconds: int


class WorkerService(Construct):
    """The ECS Fargate stream worker: cluster, image repository, task definition, service, autoscaling.

    The task role starts empty; what the worker may touch comes from grants on the resources it uses.
    """

    def __init__(self, scope: Construct, id: str, props: WorkerProps) -> None:
        super().__init__(scope, id)
        if not 1 <= props.min_tasks <= props.max_tasks:
            raise ValueError(f"need 1 <= min_tasks <= max_tasks, got {props.min_tasks} and {props.max_tasks}")
        naming = props.naming
        name = naming.name("worker")

        cluster = EcsCluster(
            self, "cluster", name=name, setting=[EcsClusterSetting(name="containerInsights", value="enabled")]
        )
        repository = EcrRepository(
            self,
            "repository",
            name=name,
            image_tag_mutability="IMMUTABLE",
            image_scanning_configuration=EcrRepositoryImageScanningConfiguration(scan_on_push=True),
            encryption_configuration=[
                EcrRepositoryEncryptionConfiguration(encryption_type="KMS", kms_key=props.key.key_arn)
            ],
        )
        EcrLifecyclePolicy(
            self,
            "repository-lifecycle",
            repository=repository.name,
            policy=json.dumps(
                {
                    "rules": [
                        {
                            "rulePriority": 1,
                            "description": f"Keep the last {KEPT_IMAGES} images",
                            "selection": {
                                "tagStatus": "any",
                                "countType": "imageCountMoreThan",
                                "countNumber": KEPT_IMAGES,
                            },
                            "action": {"type": "expire"},
                        }
                    ]
                }
            ),
        )
        log_group = CloudwatchLogGroup(
            self,
            "log-group",
            name=f"/{naming.project}/{naming.suffix}/worker",
            retention_in_days=props.log_retention_days,
            kms_key_id=props.logs_key.key_arn,
        )

        execution_role = service_role(
            self,
            "execution-role",
            name=naming.name("worker-execution"),
            service="ecs-tasks.amazonaws.com",
            account=props.account,
        )
        grant(
            self,
            execution_role,
            "start-tasks",
            [
                allow(["ecr:GetAuthorizationToken"], ["*"]),
                allow(ECR_PULL_ACTIONS, [repository.arn]),
                allow(["kms:Decrypt"], [props.key.key_arn, props.secret_key.key_arn]),
                allow(["logs:CreateLogStream", "logs:PutLogEvents"], [f"{log_group.arn}:log-stream:*"]),
                # A statement needs resources: none when the task gets no secrets (the local environment).
                *(
                    [allow(["secretsmanager:GetSecretValue"], list(props.secret_arns))]
                    if props.secret_arns
                    else []
                ),
            ],
        )
        self.task_role: IamRole = service_role(
            self,
            "task-role",
            name=naming.name("worker-task"),
            service="ecs-tasks.amazonaws.com",
            account=props.account,
        )
        props.file_system.grant_mount(self.task_role)

        security_group = SecurityGroup(
            self,
            "security-group",
            name=name,
            description=f"{name}: no inbound; HTTPS to AWS APIs and the data stores inside the VPC",
            vpc_id=props.network.vpc_id,
        )
        for rule, cidr, (from_port, to_port) in (
            ("https-egress", "0.0.0.0/0", (443, 443)),
            # The data stores admit the worker by security group; this only lets it ask.
            ("vpc-egress", props.network.vpc_cidr, WORKER_PORT_RANGE),
        ):
            VpcSecurityGroupEgressRule(
                self,
                rule,
                security_group_id=security_group.id,
                description=rule,
                ip_protocol="tcp",
                from_port=from_port,
                to_port=to_port,
                cidr_ipv4=cidr,
            )
        self.security_group_id: str = security_group.id
        props.file_system.allow_connections_from("worker", security_group.id)

        container = {
            "name": "worker",
            "image": f"{repository.repository_url}:{props.image_tag}",
            "essential": True,
            "user": WORKER_USER,
            "readonlyRootFilesystem": True,
            "privileged": False,
            "environment": [{"name": k, "value": v} for k, v in sorted(props.environment.items())],
            "secrets": [{"name": k, "valueFrom": v} for k, v in sorted(props.secrets.items())],
            "mountPoints": [
                {"sourceVolume": "artefacts", "containerPath": WORKER_ARTEFACTS_DIR, "readOnly": False},
                {"sourceVolume": "tmp", "containerPath": "/tmp", "readOnly": False},
            ],
            "logConfiguration": {
                "logDriver": "awslogs",
                "options": {
                    "awslogs-group": log_group.name,
                    "awslogs-region": props.account.region,
                    "awslogs-stream-prefix": "worker",
                },
            },
        }
        task_definition = EcsTaskDefinition(
            self,
            "task-definition",
            family=name,
            requires_compatibilities=["FARGATE"],
            network_mode="awsvpc",
            cpu=str(props.cpu),
            memory=str(props.memory_mb),
            execution_role_arn=execution_role.arn,
            task_role_arn=self.task_role.arn,
            container_definitions=Fn.jsonencode([container]),
            volume=[
                EcsTaskDefinitionVolume(
                    name="artefacts",
                    efs_volume_configuration=EcsTaskDefinitionVolumeEfsVolumeConfiguration(
                        file_system_id=props.file_system.file_system_id,
                        transit_encryption="ENABLED",
                        authorization_config=EcsTaskDefinitionVolumeEfsVolumeConfigurationAuthorizationConfig(
                            access_point_id=props.file_system.access_point_id, iam="ENABLED"
                        ),
                    ),
                ),
                # The root filesystem is read-only; the task's ephemeral storage backs /tmp.
                EcsTaskDefinitionVolume(name="tmp"),
            ],
        )
        service = EcsService(
            self,
            "service",
            name=name,
            cluster=cluster.arn,
            task_definition=task_definition.arn,
            desired_count=props.min_tasks,
            launch_type="FARGATE",
            network_configuration=EcsServiceNetworkConfiguration(
                subnets=props.network.private_subnet_ids,
                security_groups=[security_group.id],
                assign_public_ip=False,
            ),
            deployment_circuit_breaker=EcsServiceDeploymentCircuitBreaker(enable=True, rollback=True),
            propagate_tags="SERVICE",
            # Autoscaling owns the task count once the service exists.
            lifecycle=TerraformResourceLifecycle(ignore_changes=["desired_count"]),
        )
        self.cluster_name: str = cluster.name
        self.service_name: str = service.name
        self.min_tasks = props.min_tasks
        self.repository_url: str = repository.repository_url
        if props.autoscaling:
            self._autoscaling(props, cluster, service)

    def _autoscaling(self, props: WorkerProps, cluster: EcsCluster, service: EcsService) -> None:
        target = AppautoscalingTarget(
            self,
            "scaling-target",
            service_namespace="ecs",
            resource_id=f"service/{cluster.name}/{service.name}",
            scalable_dimension="ecs:service:DesiredCount",
            min_capacity=props.min_tasks,
            max_capacity=props.max_tasks,
        )
        targets = {
            "cpu": (
                props.cpu_target_percent,
                {
                    "predefined_metric_specification": (
                        AppautoscalingPolicyTargetTrackingScalingPolicyConfigurationPredefinedMetricSpecification(
                            predefined_metric_type="ECSServiceAverageCPUUtilization"
                        )
                    )
                },
            ),
            # Lag: how old the newest record the consumers read is; more tasks read more shards at once.
            "iterator-age": (
                props.iterator_age_target_ms,
                {
                    "customized_metric_specification": (
                        AppautoscalingPolicyTargetTrackingScalingPolicyConfigurationCustomizedMetricSpecification(
                            namespace="AWS/Kinesis",
                            metric_name="GetRecords.IteratorAgeMilliseconds",
                            statistic="Maximum",
                            dimensions=[
                                AppautoscalingPolicyTargetTrackingScalingPolicyConfigurationCustomizedMetricSpecificationDimensions(
                                    name="StreamName", value=props.stream.stream_name
                                )
                            ],
                        )
                    )
                },
            ),
        }
        for metric, (target_value, specification) in targets.items():
            AppautoscalingPolicy(
                self,
                f"scale-on-{metric}",
                name=f"{props.naming.name('worker')}-{metric}",
                policy_type="TargetTrackingScaling",
                service_namespace=target.service_namespace,
                resource_id=target.resource_id,
                scalable_dimension=target.scalable_dimension,
                target_tracking_scaling_policy_configuration=AppautoscalingPolicyTargetTrackingScalingPolicyConfiguration(
                    target_value=target_value,
                    scale_in_cooldown=props.scale_in_cooldown_seconds,
                    scale_out_cooldown=props.scale_out_cooldown_seconds,
                    **specification,
                ),
            )
