"""The ECS Fargate stream worker: cluster, image repository, task definition, service and autoscaling."""

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cdktf import Fn, TerraformResourceLifecycle
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
from constructs import Construct

from iot_constructs.context import Context, Metric, export
from iot_constructs.file_system import FileSystem
from iot_constructs.iam import ServiceRole, allow, grant, service_role
from iot_constructs.kms import EncryptionKey
from iot_constructs.network import Network
from iot_constructs.stream import Stream

# Pulling an image starts with ecr:GetAuthorizationToken, which has no resource: AWS requires "*".
ECR_PULL_ACTIONS = ("ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer")
KEPT_IMAGES = 20
WORKER_USER = "1000:1000"  # the image's non-root user (functions/stream_worker/Dockerfile)
ARTEFACTS_DIR = "/mnt/artefacts"


@dataclass(frozen=True)
class SecretValue:
    """One JSON key of a Secrets Manager secret encrypted with `key`."""

    secret_arn: str
    json_key: str
    key: EncryptionKey

    @property
    def reference(self) -> str:
        """How ECS names it in a task definition."""
        return f"{self.secret_arn}:{self.json_key}::"


@dataclass(frozen=True)
class WorkerSettings:
    """The worker's image, size and scaling."""

    image_tag: str
    """The tag of the image in the worker's repository to run; tags are immutable."""
    cpu: int = 256
    memory_mb: int = 512
    min_tasks: int = 1
    max_tasks: int = 2
    autoscaling: bool = True
    """Scale between min_tasks and max_tasks on CPU and on stream lag; without it, min_tasks run."""
    cpu_target_percent: int = 60
    iterator_age_target_ms: int = 1000
    scale_in_cooldown_seconds: int = 300
    scale_out_cooldown_seconds: int = 60

    def __post_init__(self) -> None:
        if not 1 <= self.min_tasks <= self.max_tasks:
            raise ValueError(f"need 1 <= min_tasks <= max_tasks, got {self.min_tasks} and {self.max_tasks}")


class WorkerService(Construct):
    """The stream worker on ECS Fargate, in the private subnets without public IPs.

    The task role starts empty; what the worker may touch comes from grants on the resources it uses. The
    file system is mounted at ARTEFACTS_DIR through its access point, with TLS and IAM authorization.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        settings: WorkerSettings,
        *,
        context: Context,
        network: Network,
        key: EncryptionKey,
        file_system: FileSystem,
        stream: Stream,
        environment: Mapping[str, str],
        secrets: Mapping[str, SecretValue],
    ) -> None:
        """`key` encrypts the image repository (ECR decrypts for pulls itself); `secrets` are injected into
        the environment when a task starts."""
        super().__init__(scope, id)
        self._naming = naming = context.naming
        name = naming.name("worker")
        cluster = EcsCluster(
            self, "cluster", name=name, setting=[EcsClusterSetting(name="containerInsights", value="enabled")]
        )
        repository = self._repository(name, key)
        log_group = context.log_group(self, "log-group", f"/{naming.project}/{naming.suffix}/worker")
        execution_role = self._execution_role(context, repository, log_group, secrets)
        self.task_role: IamRole = service_role(
            self,
            "task-role",
            name=naming.name("worker-task"),
            service="ecs-tasks.amazonaws.com",
            account=context.account,
        ).role
        file_system.grant_mount(self)
        self.security_group_id = network.compute_security_group(
            self, name, "no inbound; HTTPS to AWS APIs and the data stores inside the VPC"
        )
        file_system.allow_connections_from(self, "worker")

        container = self._container(settings, context, repository, log_group, environment, secrets)
        task_definition = self._task_definition(name, settings, container, execution_role.arn, file_system)
        service = EcsService(
            self,
            "service",
            name=name,
            cluster=cluster.arn,
            task_definition=task_definition.arn,
            desired_count=settings.min_tasks,
            launch_type="FARGATE",
            network_configuration=EcsServiceNetworkConfiguration(
                subnets=network.private_subnet_ids,
                security_groups=[self.security_group_id],
                assign_public_ip=False,
            ),
            deployment_circuit_breaker=EcsServiceDeploymentCircuitBreaker(enable=True, rollback=True),
            propagate_tags="SERVICE",
            # Autoscaling owns the task count once the service exists.
            lifecycle=TerraformResourceLifecycle(ignore_changes=["desired_count"]),
        )
        self.cluster_name: str = cluster.name
        self.service_name: str = service.name
        self.min_tasks = settings.min_tasks
        self.repository_url: str = repository.repository_url
        if settings.autoscaling:
            self._autoscaling(settings, f"service/{cluster.name}/{service.name}", stream)
        export(scope, "worker_cluster_name", self.cluster_name, "ECS cluster of the stream worker")
        export(scope, "worker_service_name", self.service_name, "ECS service of the stream worker")
        export(
            scope,
            "worker_repository_url",
            self.repository_url,
            "Push the worker image here, tagged immutably",
        )

    @property
    def grant_principal(self) -> IamRole:
        return self.task_role

    @staticmethod
    def _container(
        settings: WorkerSettings,
        context: Context,
        repository: EcrRepository,
        log_group: CloudwatchLogGroup,
        environment: Mapping[str, str],
        secrets: Mapping[str, SecretValue],
    ) -> dict[str, Any]:
        """The worker's container: non-root, read-only root filesystem, logs to its group."""
        return {
            "name": "worker",
            "image": f"{repository.repository_url}:{settings.image_tag}",
            "essential": True,
            "user": WORKER_USER,
            "readonlyRootFilesystem": True,
            "privileged": False,
            "environment": [{"name": k, "value": v} for k, v in sorted(environment.items())],
            "secrets": [{"name": k, "valueFrom": v.reference} for k, v in sorted(secrets.items())],
            "mountPoints": [
                {"sourceVolume": "artefacts", "containerPath": ARTEFACTS_DIR, "readOnly": False},
                {"sourceVolume": "tmp", "containerPath": "/tmp", "readOnly": False},
            ],
            "logConfiguration": {
                "logDriver": "awslogs",
                "options": {
                    "awslogs-group": log_group.name,
                    "awslogs-region": context.account.region,
                    "awslogs-stream-prefix": "worker",
                },
            },
        }

    def _execution_role(
        self,
        context: Context,
        repository: EcrRepository,
        log_group: CloudwatchLogGroup,
        secrets: Mapping[str, SecretValue],
    ) -> ServiceRole:
        """The role ECS starts tasks with: pulls the image, writes the log group, reads the secrets."""
        role = service_role(
            self,
            "execution-role",
            name=context.naming.name("worker-execution"),
            service="ecs-tasks.amazonaws.com",
            account=context.account,
        )
        secret_arns = list(dict.fromkeys(secret.secret_arn for secret in secrets.values()))
        secret_keys = {secret.key.key_arn: secret.key for secret in secrets.values()}.values()
        grant(
            self,
            role,
            "start-tasks",
            allow(["ecr:GetAuthorizationToken"], ["*"]),
            allow(ECR_PULL_ACTIONS, [repository.arn]),
            allow(["logs:CreateLogStream", "logs:PutLogEvents"], [f"{log_group.arn}:log-stream:*"]),
            # A statement needs resources: none when the task gets no secrets (the local environment).
            *([allow(["secretsmanager:GetSecretValue"], secret_arns)] if secret_arns else []),
            *(secret_key.grant_decrypt() for secret_key in secret_keys),
        )
        return role

    def _repository(self, name: str, key: EncryptionKey) -> EcrRepository:
        repository = EcrRepository(
            self,
            "repository",
            name=name,
            image_tag_mutability="IMMUTABLE",
            image_scanning_configuration=EcrRepositoryImageScanningConfiguration(scan_on_push=True),
            encryption_configuration=[
                EcrRepositoryEncryptionConfiguration(encryption_type="KMS", kms_key=key.key_arn)
            ],
        )
        keep_last = {
            "rulePriority": 1,
            "description": f"Keep the last {KEPT_IMAGES} images",
            "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": KEPT_IMAGES},
            "action": {"type": "expire"},
        }
        EcrLifecyclePolicy(
            self,
            "repository-lifecycle",
            repository=repository.name,
            policy=json.dumps({"rules": [keep_last]}),
        )
        return repository

    def _task_definition(
        self,
        name: str,
        settings: WorkerSettings,
        container: dict[str, Any],
        execution_role_arn: str,
        file_system: FileSystem,
    ) -> EcsTaskDefinition:
        return EcsTaskDefinition(
            self,
            "task-definition",
            family=name,
            requires_compatibilities=["FARGATE"],
            network_mode="awsvpc",
            cpu=str(settings.cpu),
            memory=str(settings.memory_mb),
            execution_role_arn=execution_role_arn,
            task_role_arn=self.task_role.arn,
            container_definitions=Fn.jsonencode([container]),
            volume=[
                EcsTaskDefinitionVolume(
                    name="artefacts",
                    efs_volume_configuration=EcsTaskDefinitionVolumeEfsVolumeConfiguration(
                        file_system_id=file_system.file_system_id,
                        transit_encryption="ENABLED",
                        authorization_config=EcsTaskDefinitionVolumeEfsVolumeConfigurationAuthorizationConfig(
                            access_point_id=file_system.access_point_id, iam="ENABLED"
                        ),
                    ),
                ),
                # The root filesystem is read-only; the task's ephemeral storage backs /tmp.
                EcsTaskDefinitionVolume(name="tmp"),
            ],
        )

    def _autoscaling(self, settings: WorkerSettings, resource_id: str, stream: Stream) -> None:
        target = AppautoscalingTarget(
            self,
            "scaling-target",
            service_namespace="ecs",
            resource_id=resource_id,
            scalable_dimension="ecs:service:DesiredCount",
            min_capacity=settings.min_tasks,
            max_capacity=settings.max_tasks,
        )
        # Lag: how old the newest record the consumers read is; more tasks read more shards at once.
        lag = stream.metric_get_records_iterator_age_milliseconds()
        targets: dict[str, tuple[int, dict[str, Any]]] = {
            "cpu": (
                settings.cpu_target_percent,
                {
                    "predefined_metric_specification": (
                        AppautoscalingPolicyTargetTrackingScalingPolicyConfigurationPredefinedMetricSpecification(
                            predefined_metric_type="ECSServiceAverageCPUUtilization"
                        )
                    )
                },
            ),
            "iterator-age": (
                settings.iterator_age_target_ms,
                {
                    "customized_metric_specification": (
                        AppautoscalingPolicyTargetTrackingScalingPolicyConfigurationCustomizedMetricSpecification(
                            namespace=lag.namespace,
                            metric_name=lag.name,
                            statistic=lag.statistic,
                            dimensions=[
                                AppautoscalingPolicyTargetTrackingScalingPolicyConfigurationCustomizedMetricSpecificationDimensions(
                                    name=name, value=value
                                )
                                for name, value in lag.dimensions.items()
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
                name=f"{self._naming.name('worker')}-{metric}",
                policy_type="TargetTrackingScaling",
                service_namespace=target.service_namespace,
                resource_id=target.resource_id,
                scalable_dimension=target.scalable_dimension,
                target_tracking_scaling_policy_configuration=AppautoscalingPolicyTargetTrackingScalingPolicyConfiguration(
                    target_value=target_value,
                    scale_in_cooldown=settings.scale_in_cooldown_seconds,
                    scale_out_cooldown=settings.scale_out_cooldown_seconds,
                    **specification,
                ),
            )

    def metric(self, namespace: str, name: str, statistic: str) -> Metric:
        return Metric(
            namespace, name, {"ClusterName": self.cluster_name, "ServiceName": self.service_name}, statistic
        )
