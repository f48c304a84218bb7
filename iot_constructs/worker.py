"""The ECS Fargate stream worker: cluster, image repository, task definitions (the worker's, which migrates
the database first, and the admin task's), service and autoscaling."""

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
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
WORKER_CONTAINER = "worker"  # the worker's container in its task definition; "migrate" runs before it
# Applies the database's pending migrations (functions/stream_worker/migrations) under an advisory lock, and
# does nothing when none is pending; the admin task runs other admin commands with a command override.
MIGRATE_COMMAND = ("python", "-m", "stream_worker.migrate")
# The admin task only talks to PostgreSQL: Fargate's smallest size.
ADMIN_CPU = 256
ADMIN_MEMORY_MB = 512


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
class ContainerEnvironment:
    """What a container of the worker's image is given: variables, and secrets ECS injects at task start."""

    variables: Mapping[str, str]
    secrets: Mapping[str, SecretValue] = field(default_factory=dict)


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
    """The stream worker on ECS Fargate, in the private subnets without public IPs, and the admin task that
    applies the database's migrations.

    Each worker task first runs the migrations in its init container "migrate" and starts the worker once
    they have succeeded, so that a deployment never runs code ahead of its schema; the admin task definition
    (output `admin_task_definition_arn`) runs the same container alone, for `make migrate` and the other
    admin commands. The task role starts empty; what the worker may touch comes from grants on the resources
    it uses. The file system is mounted at ARTEFACTS_DIR through its access point, with TLS and IAM
    authorization.
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
        worker: ContainerEnvironment,
        admin: ContainerEnvironment,
    ) -> None:
        """`key` encrypts the image repository (ECR decrypts for pulls itself); `worker` is what the worker
        runs with, `admin` what the migrations and admin commands run with (the database's admin
        credentials: only that container gets them)."""
        super().__init__(scope, id)
        self._naming = naming = context.naming
        name = naming.name("worker")
        cluster = EcsCluster(
            self, "cluster", name=name, setting=[EcsClusterSetting(name="containerInsights", value="enabled")]
        )
        repository = self._repository(name, key)
        log_group = context.log_group(self, "log-group", f"/{naming.project}/{naming.suffix}/worker")
        execution_role = self._execution_role(
            context, repository, log_group, [*worker.secrets.values(), *admin.secrets.values()]
        )
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

        image = f"{repository.repository_url}:{settings.image_tag}"
        logs = {
            "logDriver": "awslogs",
            "options": {
                "awslogs-group": log_group.name,
                "awslogs-region": context.account.region,
                "awslogs-stream-prefix": "worker",
            },
        }
        worker_container = _container(
            WORKER_CONTAINER,
            image,
            logs,
            worker,
            essential=True,
            volumes={"artefacts": ARTEFACTS_DIR, "tmp": "/tmp"},
            after_success_of="migrate",
        )
        migrate = _container("migrate", image, logs, admin, essential=False, command=MIGRATE_COMMAND)
        task_definition = self._task_definition(
            "task-definition",
            name,
            (settings.cpu, settings.memory_mb),
            [migrate, worker_container],
            execution_role.arn,
            file_system,
        )
        admin_task_definition = self._task_definition(
            "admin-task-definition",
            naming.name("worker-admin"),
            (ADMIN_CPU, ADMIN_MEMORY_MB),
            [_container("migrate", image, logs, admin, essential=True, command=MIGRATE_COMMAND)],
            execution_role.arn,
            None,
        )
        self.service = service = EcsService(
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
        export(
            scope,
            "worker_security_group_id",
            self.security_group_id,
            "The worker's security group: one-off tasks that reach the data stores run with it",
        )
        export(
            scope,
            "admin_task_definition_arn",
            admin_task_definition.arn,
            "Runs the database migrations (or, with a command override, another admin command) once, in "
            "the private subnets with the worker's security group",
        )

    @property
    def grant_principal(self) -> IamRole:
        return self.task_role

    def _execution_role(
        self,
        context: Context,
        repository: EcrRepository,
        log_group: CloudwatchLogGroup,
        secrets: Sequence[SecretValue],
    ) -> ServiceRole:
        """The role ECS starts tasks with: pulls the image, writes the log group, reads the secrets."""
        role = service_role(
            self,
            "execution-role",
            name=context.naming.name("worker-execution"),
            service="ecs-tasks.amazonaws.com",
            account=context.account,
        )
        secret_arns = list(dict.fromkeys(secret.secret_arn for secret in secrets))
        secret_keys = {secret.key.key_arn: secret.key for secret in secrets}.values()
        grant(
            self,
            role,
            "start-tasks",
            allow(["ecr:GetAuthorizationToken"], ["*"]),
            allow(ECR_PULL_ACTIONS, [repository.arn]),
            allow(["logs:CreateLogStream", "logs:PutLogEvents"], [f"{log_group.arn}:log-stream:*"]),
            allow(["secretsmanager:GetSecretValue"], secret_arns),
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
        id: str,
        family: str,
        size: tuple[int, int],
        containers: list[dict[str, Any]],
        execution_role_arn: str,
        file_system: FileSystem | None,
    ) -> EcsTaskDefinition:
        """A Fargate task definition of `containers`, `size` (CPU units, memory in MB) large, with the task
        role when `file_system` (the worker's) is mounted: the admin task calls no AWS API."""
        cpu, memory_mb = size
        # The root filesystem is read-only; the task's ephemeral storage backs /tmp.
        volumes = [EcsTaskDefinitionVolume(name="tmp")]
        if file_system:
            volumes.insert(
                0,
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
            )
        return EcsTaskDefinition(
            self,
            id,
            family=family,
            requires_compatibilities=["FARGATE"],
            network_mode="awsvpc",
            cpu=str(cpu),
            memory=str(memory_mb),
            execution_role_arn=execution_role_arn,
            task_role_arn=self.task_role.arn if file_system else None,
            container_definitions=Fn.jsonencode(containers),
            volume=volumes,
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


def _container(
    name: str,
    image: str,
    logs: dict[str, Any],
    environment: ContainerEnvironment,
    *,
    essential: bool,
    command: Sequence[str] = (),
    volumes: Mapping[str, str] | None = None,
    after_success_of: str | None = None,
) -> dict[str, Any]:
    """A container of the worker's image: non-root, read-only root filesystem, logs to the worker's group,
    /tmp writable. `command` replaces the image's (the worker); `volumes` maps the task's volumes to where
    they are mounted (default: /tmp only); `after_success_of` names a container that must exit 0 first."""
    definition: dict[str, Any] = {
        "name": name,
        "image": image,
        "essential": essential,
        "user": WORKER_USER,
        "readonlyRootFilesystem": True,
        "privileged": False,
        "environment": [{"name": k, "value": v} for k, v in sorted(environment.variables.items())],
        "secrets": [{"name": k, "valueFrom": v.reference} for k, v in sorted(environment.secrets.items())],
        "mountPoints": [
            {"sourceVolume": volume, "containerPath": path, "readOnly": False}
            for volume, path in (volumes or {"tmp": "/tmp"}).items()
        ],
        "logConfiguration": logs,
    }
    if command:
        definition["command"] = list(command)
    if after_success_of:
        definition["dependsOn"] = [{"containerName": after_success_of, "condition": "SUCCESS"}]
    return definition
