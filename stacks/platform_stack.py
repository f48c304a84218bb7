from collections.abc import Callable
from typing import Any

from cdktf import S3Backend, TerraformOutput, TerraformResourceLifecycle, TerraformStack
from cdktf_cdktf_provider_aws.provider import AwsProvider, AwsProviderDefaultTags, AwsProviderEndpoints
from cdktf_cdktf_provider_aws.ssm_parameter import SsmParameter
from constructs import Construct

from iot_constructs.account import Account
from iot_constructs.api import Api, ApiProps
from iot_constructs.compute import (
    WORKER_ARTEFACTS_DIR,
    Function,
    FunctionProps,
    StreamEventSource,
    StreamEventSourceProps,
    WorkerProps,
    WorkerService,
)
from iot_constructs.datastores import (
    Cache,
    CacheProps,
    Database,
    DatabaseProps,
    FileSystem,
    FileSystemProps,
    Table,
    TableProps,
)
from iot_constructs.iam import allow, grant
from iot_constructs.kms import EncryptionKey, EncryptionKeyProps
from iot_constructs.network import Network, NetworkProps
from iot_constructs.observability import Observability, ObservabilityProps
from iot_constructs.stream import Stream, StreamProps
from stacks.config import OWNER, PROJECT, EnvironmentConfig
from stacks.emulator import apply_workarounds

# Every AWS service the platform calls; in the local environment each one goes to the emulator.
# Spelled as AwsProviderEndpoints' arguments ("lambda_" is the provider's "lambda").
EMULATED_SERVICES = (
    "apigateway",
    "applicationautoscaling",
    "cloudwatch",
    "dynamodb",
    "ec2",
    "ecr",
    "ecs",
    "efs",
    "elasticache",
    "iam",
    "kinesis",
    "kms",
    "lambda_",
    "logs",
    "rds",
    "s3",
    "secretsmanager",
    "sns",
    "sqs",
    "ssm",
    "sts",
    "wafv2",
)
# moto accepts any credentials; these fixed ones are its documented test values, not secrets.
EMULATOR_CREDENTIALS = {"access_key": "testing", "secret_key": "testing"}


class PlatformStack(TerraformStack):
    """The whole platform for one environment, named `iot-platform-<environment>`."""

    def __init__(self, scope: Construct, config: EnvironmentConfig) -> None:
        super().__init__(scope, config.stack_name)
        self._terraform_settings(config)
        naming = config.naming
        account = Account.of(self)

        def key(id: str, purpose: str, **service_access: bool) -> EncryptionKey:
            return EncryptionKey(
                self,
                f"{id}-key",
                EncryptionKeyProps(
                    account=account,
                    alias=naming.name(id),
                    description=f"Encrypts {purpose} of {config.stack_name}",
                    deletion_window_days=config.kms_deletion_window_days,
                    **service_access,
                ),
            )

        logs_key = key("logs", "the log groups", cloudwatch_logs=True)
        stream_key = key("stream", "the reading stream and its dead-letter queue")
        alerts_key = key("alerts", "the alert topic", cloudwatch_alarms=True)
        data_key = key("data", "the data stores, their secrets, function settings, dead letters and images")

        network = Network(
            self,
            "network",
            NetworkProps(
                naming=naming,
                account=account,
                cidr=config.network.cidr,
                availability_zones=config.availability_zones,
                nat_mode=config.network.nat_mode,
                interface_endpoints=config.network.interface_endpoints,
                flow_log_key=logs_key,
                flow_log_retention_days=config.log_retention_days,
            ),
        )
        stream = Stream(
            self,
            "stream",
            StreamProps(
                naming=naming,
                account=account,
                mode=config.stream.mode,
                shard_count=config.stream.shard_count,
                retention_hours=config.stream.retention_hours,
                shard_level_metrics=config.stream.shard_level_metrics,
                stream_key=stream_key,
                alerts_key=alerts_key,
            ),
        )

        def table(id: str, sort_key: str) -> Table:
            return Table(
                self,
                f"{id}-table",
                TableProps(
                    name=naming.name(id),
                    partition_key="device_id",
                    sort_key=sort_key,
                    ttl_attribute="expires_at",
                    key=data_key,
                    deletion_protection=not config.destroyable,
                ),
            )

        raw_readings = table("readings", sort_key="timestamp")
        aggregates = table("aggregates", sort_key="minute")
        thresholds = SsmParameter(
            self,
            "thresholds",
            name=f"/{PROJECT}/{config.name}/thresholds",
            description="Alert thresholds per metric (JSON); change it here, no deploy needed",
            type="String",
            value=config.readings.initial_thresholds,
            lifecycle=TerraformResourceLifecycle(ignore_changes=["value"]),
        )

        def function(
            component: str, environment: dict[str, str], bundled_distributions: tuple[str, ...] = ()
        ) -> Function:
            sizing = config.functions[component]
            return Function(
                self,
                component,
                FunctionProps(
                    naming=naming,
                    account=account,
                    component=component,
                    environment={
                        "POWERTOOLS_SERVICE_NAME": component,
                        "POWERTOOLS_METRICS_NAMESPACE": PROJECT,
                        "POWERTOOLS_LOG_LEVEL": "INFO",
                        **environment,
                    },
                    memory_mb=sizing.memory_mb,
                    timeout_seconds=sizing.timeout_seconds,
                    reserved_concurrency=sizing.reserved_concurrency,
                    log_retention_days=config.log_retention_days,
                    logs_key=logs_key,
                    key=data_key,
                    network=network,
                    layers=(config.powertools_layer_arn,),
                    bundled_distributions=bundled_distributions,
                ),
            )

        readings = config.readings
        ingest = function(
            "ingest",
            {
                "STREAM_NAME": stream.stream_name,
                "MAX_BATCH_SIZE": str(readings.max_batch_size),
                "MAX_BODY_BYTES": str(readings.max_body_bytes),
                "MAX_CLOCK_SKEW_SECONDS": str(readings.max_clock_skew_seconds),
                "MAX_READING_AGE_SECONDS": str(readings.max_reading_age_seconds),
                "PUT_RECORDS_MAX_ATTEMPTS": str(readings.put_records_max_attempts),
            },
        )
        stream.grant_write(ingest.role)

        processor = function(
            "processor",
            {
                "RAW_TABLE_NAME": raw_readings.table_name,
                "AGGREGATES_TABLE_NAME": aggregates.table_name,
                "ALERT_TOPIC_ARN": stream.alert_topic_arn,
                "THRESHOLDS_PARAMETER_NAME": thresholds.name,
                # How long the processor caches the thresholds: operators' changes apply within this.
                "POWERTOOLS_PARAMETERS_MAX_AGE": "120",
                "READING_TTL_DAYS": str(readings.reading_ttl_days),
                "AGGREGATE_TTL_DAYS": str(readings.aggregate_ttl_days),
                "DYNAMODB_MAX_ATTEMPTS": str(readings.dynamodb_max_attempts),
            },
        )
        raw_readings.grant_read_write_data(processor.role)
        aggregates.grant_read_write_data(processor.role)
        stream.grant_publish_alerts(processor.role)
        grant(self, processor.role, "read-thresholds", [allow(["ssm:GetParameter"], [thresholds.arn])])
        processing = config.processing
        StreamEventSource(
            self,
            "processor-events",
            StreamEventSourceProps(
                function=processor,
                stream=stream,
                batch_size=processing.batch_size,
                batching_window_seconds=processing.batching_window_seconds,
                parallelization_factor=processing.parallelization_factor,
                max_retry_attempts=processing.max_retry_attempts,
                max_record_age_seconds=processing.max_record_age_seconds,
            ),
        )

        query = function("query", {"RAW_TABLE_NAME": raw_readings.table_name})
        raw_readings.grant_read_data(query.role)

        database_config = config.database
        database = Database(
            self,
            "postgres",
            DatabaseProps(
                naming=naming,
                account=account,
                engine=database_config.engine,
                network=network,
                key=data_key,
                logs_key=logs_key,
                log_retention_days=config.log_retention_days,
                backup_retention_days=database_config.backup_retention_days,
                protected=not config.destroyable,
                password_rotation_days=database_config.password_rotation_days,
                instance_class=database_config.instance_class,
                allocated_storage_gb=database_config.allocated_storage_gb,
                multi_az=database_config.multi_az,
                min_capacity=database_config.min_capacity,
                max_capacity=database_config.max_capacity,
                reader=database_config.reader,
            ),
        )
        file_system = FileSystem(
            self,
            "artefacts",
            FileSystemProps(
                naming=naming, network=network, key=data_key, automatic_backups=config.file_system_backups
            ),
        )
        cache = self._cache(config, function, network, data_key, logs_key) if config.cache else None

        worker_config = config.worker
        worker = WorkerService(
            self,
            "worker",
            WorkerProps(
                naming=naming,
                account=account,
                network=network,
                key=data_key,
                logs_key=logs_key,
                log_retention_days=config.log_retention_days,
                image_tag=worker_config.image_tag,
                cpu=worker_config.cpu,
                memory_mb=worker_config.memory_mb,
                environment={
                    "POWERTOOLS_SERVICE_NAME": "stream-worker",
                    "POWERTOOLS_LOG_LEVEL": "INFO",
                    "STREAM_NAME": stream.stream_name,
                    "RAW_TABLE_NAME": raw_readings.table_name,
                    "AGGREGATES_TABLE_NAME": aggregates.table_name,
                    "ALERT_TOPIC_ARN": stream.alert_topic_arn,
                    "THRESHOLDS_PARAMETER_NAME": thresholds.name,
                    "READING_TTL_DAYS": str(readings.reading_ttl_days),
                    "AGGREGATE_TTL_DAYS": str(readings.aggregate_ttl_days),
                    "DYNAMODB_MAX_ATTEMPTS": str(readings.dynamodb_max_attempts),
                    "DATABASE_HOST": database.endpoint,
                    "DATABASE_PORT": str(database.port),
                    "ARTEFACTS_DIR": WORKER_ARTEFACTS_DIR,
                    **(
                        {"REDIS_HOST": cache.configuration_endpoint, "REDIS_PORT": str(cache.port)}
                        if cache
                        else {}
                    ),
                },
                secrets=(
                    {"REDIS_AUTH_TOKEN": f"{cache.auth_token_secret_arn}:auth_token::"} if cache else {}
                ),
                secret_arns=(cache.auth_token_secret_arn,) if cache else (),
                secret_key=data_key,
                file_system=file_system,
                min_tasks=worker_config.min_tasks,
                max_tasks=worker_config.max_tasks,
                autoscaling=worker_config.autoscaling,
                stream=stream,
                cpu_target_percent=worker_config.cpu_target_percent,
                iterator_age_target_ms=worker_config.iterator_age_target_ms,
                scale_in_cooldown_seconds=worker_config.scale_in_cooldown_seconds,
                scale_out_cooldown_seconds=worker_config.scale_out_cooldown_seconds,
            ),
        )
        stream.grant_read(worker.task_role)
        raw_readings.grant_read_write_data(worker.task_role)
        aggregates.grant_read_write_data(worker.task_role)
        stream.grant_publish_alerts(worker.task_role)
        grant(self, worker.task_role, "read-thresholds", [allow(["ssm:GetParameter"], [thresholds.arn])])
        database.grant_connect(worker.task_role)
        database.allow_connections_from("worker", worker.security_group_id)
        if cache:
            cache.allow_connections_from("worker", worker.security_group_id)

        api_config = config.api
        api = Api(
            self,
            "api",
            ApiProps(
                naming=naming,
                account=account,
                ingest=ingest,
                query=query,
                logs_key=logs_key,
                log_retention_days=config.log_retention_days,
                logging_level=api_config.logging_level,
                throttle_rate=api_config.throttle_rate,
                throttle_burst=api_config.throttle_burst,
                client_rate=api_config.client_rate,
                client_burst=api_config.client_burst,
                client_quota_per_day=api_config.client_quota_per_day,
                manage_account_logging_role=api_config.manage_account_logging_role,
                waf_rate_limit=api_config.waf_rate_limit,
            ),
        )

        observability = Observability(
            self,
            "observability",
            ObservabilityProps(
                naming=naming,
                account=account,
                alert_topic_arn=stream.alert_topic_arn,
                thresholds=config.alarms,
                api=api,
                functions=[ingest, processor, query, *([cache.token_rotator] if cache else [])],
                stream=stream,
                tables=[raw_readings, aggregates],
                database=database,
                worker=worker,
                cache=cache,
            ),
        )

        outputs = {
            "vpc_id": (network.vpc_id, "The platform's VPC"),
            "private_subnet_ids": (network.private_subnet_ids, "Subnets with NAT egress, for compute"),
            "isolated_subnet_ids": (
                network.isolated_subnet_ids,
                "Subnets without internet routes, for data stores",
            ),
            "stream_name": (stream.stream_name, "The Kinesis stream every reading goes through"),
            "raw_table_name": (raw_readings.table_name, "Raw readings by device_id and timestamp"),
            "aggregates_table_name": (aggregates.table_name, "Per-minute aggregates by device_id and minute"),
            "alert_topic_arn": (stream.alert_topic_arn, "SNS topic for threshold breaches and alarms"),
            "thresholds_parameter_name": (thresholds.name, "SSM parameter with the alert thresholds"),
            "processing_dlq_url": (
                stream.processing_dead_letters.queue_url,
                "Records the processor gave up on",
            ),
            "ingest_function_name": (ingest.function_name, "Handles POST /v1/readings"),
            "processor_function_name": (processor.function_name, "Consumes the stream"),
            "query_function_name": (query.function_name, "Handles GET /v1/devices/{device_id}/readings"),
            "database_endpoint": (database.endpoint, "PostgreSQL writer endpoint (TLS, port 5432)"),
            "database_secret_arn": (
                database.master_secret_arn,
                "Master credentials, managed and rotated by RDS",
            ),
            "file_system_id": (file_system.file_system_id, "EFS file system for shared artefacts"),
            "file_system_access_point_id": (file_system.access_point_id, "The only way into the file system"),
            "worker_cluster_name": (worker.cluster_name, "ECS cluster of the stream worker"),
            "worker_service_name": (worker.service_name, "ECS service of the stream worker"),
            "worker_repository_url": (worker.repository_url, "Push the worker image here, tagged immutably"),
            "api_invoke_url": (api.invoke_url, "Base URL of the readings API (SigV4 and an API key)"),
            "api_key_id": (api.api_key_id, "Id of the default client's API key (the value stays in AWS)"),
            "alarm_names": (observability.alarm_names, "Every alarm, each notifying the alert topic"),
            **(
                {
                    "redis_configuration_endpoint": (
                        cache.configuration_endpoint,
                        "Redis cluster endpoint (TLS)",
                    ),
                    "redis_auth_token_secret_arn": (cache.auth_token_secret_arn, "Redis AUTH token, rotated"),
                }
                if cache
                else {}
            ),
        }
        for name, (value, description) in outputs.items():
            TerraformOutput(self, name, value=value, description=description)
        if config.emulator_endpoint:
            apply_workarounds(self)

    def _cache(
        self,
        config: EnvironmentConfig,
        function: Callable[..., Function],
        network: Network,
        data_key: EncryptionKey,
        logs_key: EncryptionKey,
    ) -> Cache:
        """Redis and the function that rotates its AUTH token."""
        cache_config = config.cache
        assert cache_config is not None
        rotator = function(
            "redis-rotation",
            {"REPLICATION_GROUP_ID": config.naming.name("redis")},
            bundled_distributions=("redis",),  # redis-py is in neither the runtime nor the layer
        )
        return Cache(
            self,
            "redis",
            CacheProps(
                naming=config.naming,
                network=network,
                key=data_key,
                logs_key=logs_key,
                log_retention_days=config.log_retention_days,
                node_type=cache_config.node_type,
                shards=cache_config.shards,
                replicas_per_shard=cache_config.replicas_per_shard,
                snapshot_retention_days=cache_config.snapshot_retention_days,
                token_rotator=rotator,
                token_rotation_days=cache_config.token_rotation_days,
            ),
        )

    def _terraform_settings(self, config: EnvironmentConfig) -> None:
        """Provider, state backend and Terraform version: the only place the emulator is mentioned."""
        emulator = config.emulator_endpoint
        emulator_settings: dict[str, Any] = (
            {
                **EMULATOR_CREDENTIALS,
                "skip_credentials_validation": True,
                "skip_requesting_account_id": True,
                "skip_metadata_api_check": "true",
                "s3_use_path_style": True,
                "endpoints": [AwsProviderEndpoints(**{service: emulator for service in EMULATED_SERVICES})],
            }
            if emulator
            else {}
        )
        AwsProvider(
            self,
            "aws",
            region=config.region,
            default_tags=[
                AwsProviderDefaultTags(
                    tags={
                        "project": PROJECT,
                        "environment": config.name,
                        "owner": OWNER,
                        "managed-by": "cdktf",
                    }
                )
            ],
            **emulator_settings,
        )

        backend = config.backend
        emulator_backend: dict[str, Any] = (
            {
                **EMULATOR_CREDENTIALS,
                "endpoints": {"s3": emulator, "sts": emulator},
                "use_path_style": True,
                "skip_credentials_validation": True,
                "skip_requesting_account_id": True,
                "skip_metadata_api_check": True,
                "skip_s3_checksum": True,
            }
            if emulator
            else {}
        )
        S3Backend(
            self,
            bucket=backend.bucket,
            region=backend.region,
            key=f"{backend.key_prefix}/{config.name}/terraform.tfstate",
            encrypt=True,
            kms_key_id=backend.kms_key_id,
            **emulator_backend,
        )
        # Native S3 state locking (Terraform >= 1.10); cdktf 0.21's S3Backend predates the argument.
        self.add_override("terraform.backend.s3.use_lockfile", True)
        self.add_override("terraform.required_version", ">= 1.10")
