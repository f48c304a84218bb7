"""Every per-environment value of the platform, in one place.

The stack reads nothing from the process environment itself: `load_environments` is the only reader,
and it validates everything before anything is synthesized.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from iot_constructs.alarm_thresholds import AlarmThresholds
from iot_constructs.naming import Naming

if TYPE_CHECKING:  # the construct modules load the provider bindings: too slow for validating input
    from iot_constructs.datastores import DatabaseEngine
    from iot_constructs.network import NatMode
    from iot_constructs.stream import StreamMode

PROJECT = "iot-platform"
OWNER = "platform-team"
DEFAULT_REGION = "us-east-1"

# moto server's default address; `LOCAL_AWS_ENDPOINT` points the local environment elsewhere.
DEFAULT_LOCAL_ENDPOINT = "http://127.0.0.1:5000"

SUFFIX_PATTERN = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
SUFFIX_RULE = (
    "lowercase letters, digits and single hyphens, starting with a letter and not ending with a hyphen"
)

# AWS name limits for names of the form <project>-<component>-<suffix>, each with the longest
# component the platform uses for that kind of resource. They decide the longest allowed suffix.
NAME_LIMITS: tuple[tuple[str, str, int], ...] = (
    ("ElastiCache replication group id", "redis", 40),
    ("load balancer / target group name", "worker", 32),
    ("IAM role / Lambda function name", "redis-rotation", 64),
    ("RDS identifier", "postgres", 63),
    ("S3 bucket name", "artifacts", 63),
)
MAX_SUFFIX_LENGTH = min(limit - len(f"{PROJECT}-{component}-") for _, component, limit in NAME_LIMITS)


class ConfigError(ValueError):
    """An environment name, suffix or setting that cannot be synthesized."""


@dataclass(frozen=True)
class NetworkConfig:
    cidr: str
    az_count: int
    nat_mode: NatMode
    interface_endpoints: tuple[str, ...]


@dataclass(frozen=True)
class StreamConfig:
    mode: StreamMode
    shard_count: int | None  # provisioned streams only
    retention_hours: int
    shard_level_metrics: bool


@dataclass(frozen=True)
class FunctionSizing:
    memory_mb: int
    timeout_seconds: int
    reserved_concurrency: int


@dataclass(frozen=True)
class ProcessingConfig:
    """How the processor function reads the stream."""

    batch_size: int
    batching_window_seconds: int
    parallelization_factor: int
    """Concurrent batches per shard (1 to 10); readings of one device stay in order either way."""
    max_retry_attempts: int
    max_record_age_seconds: int


@dataclass(frozen=True)
class ReadingsConfig:
    """What the ingest function accepts and how long the tables keep readings."""

    max_batch_size: int = 500  # one PutRecords call
    max_body_bytes: int = 262_144
    max_clock_skew_seconds: int = 300
    max_reading_age_seconds: int = 86_400
    put_records_max_attempts: int = 5
    dynamodb_max_attempts: int = 5
    reading_ttl_days: int = 30
    aggregate_ttl_days: int = 365
    # Written once; operators then change the parameter without a deploy.
    initial_thresholds: str = '{"temperature": {"max": 80}, "humidity": {"min": 5, "max": 95}}'


@dataclass(frozen=True)
class DatabaseConfig:
    engine: DatabaseEngine
    backup_retention_days: int
    password_rotation_days: int = 30
    # RDS
    instance_class: str = "db.t4g.medium"
    allocated_storage_gb: int = 20
    multi_az: bool = False
    # Aurora Serverless v2, in ACUs
    min_capacity: float = 0.5
    max_capacity: float = 4
    reader: bool = False


@dataclass(frozen=True)
class CacheConfig:
    node_type: str
    shards: int
    replicas_per_shard: int
    snapshot_retention_days: int
    token_rotation_days: int = 30


@dataclass(frozen=True)
class WorkerConfig:
    """The ECS stream worker's size and scaling."""

    image_tag: str
    cpu: int
    memory_mb: int
    min_tasks: int
    max_tasks: int
    autoscaling: bool
    cpu_target_percent: int = 60
    iterator_age_target_ms: int = 1000
    scale_in_cooldown_seconds: int = 300
    scale_out_cooldown_seconds: int = 60


@dataclass(frozen=True)
class ApiConfig:
    """Throttling of the whole stage and per client (API key), execution logging, and the WAF."""

    throttle_rate: int
    throttle_burst: int
    client_rate: int
    client_burst: int
    client_quota_per_day: int
    logging_level: str
    # API Gateway's CloudWatch role is one per account and region: the one stack per account that owns it.
    manage_account_logging_role: bool
    waf_rate_limit: int | None  # requests per 5 minutes from one IP; None: no WAF


@dataclass(frozen=True)
class StateBackend:
    """Where Terraform keeps this environment's state: s3://<bucket>/<key_prefix>/<env>/terraform.tfstate."""

    bucket: str
    region: str
    key_prefix: str = PROJECT
    kms_key_id: str | None = None  # SSE-S3 with `encrypt` when unset; a CMK ARN or alias otherwise


@dataclass(frozen=True)
class EnvironmentConfig:
    name: str
    region: str
    network: NetworkConfig
    stream: StreamConfig
    functions: dict[str, FunctionSizing]
    """Sizing per function: ingest, processor, query."""
    processing: ProcessingConfig
    readings: ReadingsConfig
    database: DatabaseConfig
    cache: CacheConfig | None
    """None where Redis cannot run (the emulator)."""
    file_system_backups: bool
    worker: WorkerConfig
    api: ApiConfig
    alarms: AlarmThresholds
    log_retention_days: int
    kms_deletion_window_days: int
    # Destroyable environments carry no deletion protection and skip final snapshots.
    destroyable: bool
    backend: StateBackend
    # Set for the local environment only: the AWS emulator every provider call and the state go to.
    emulator_endpoint: str | None = None

    @property
    def stack_name(self) -> str:
        return f"{PROJECT}-{self.name}"

    @property
    def availability_zones(self) -> tuple[str, ...]:
        """The region's first `az_count` zones."""
        return tuple(f"{self.region}{letter}" for letter in "abcdef"[: self.network.az_count])

    @property
    def powertools_layer_arn(self) -> str:
        return POWERTOOLS_LAYER_ARN.format(region=self.region)

    @property
    def naming(self) -> Naming:
        return Naming(PROJECT, self.name)


_DEFAULT_BACKEND = StateBackend(bucket=f"{PROJECT}-terraform-state", region=DEFAULT_REGION)

_PROD_ENDPOINTS = ("kinesis-streams", "secretsmanager", "logs", "sts", "ecr.api", "ecr.dkr", "ssm", "kms")

# Powertools for AWS Lambda (Python), the AWS-managed layer; the Pipfile pins the same library for tests.
POWERTOOLS_LAYER_ARN = (
    "arn:aws:lambda:{region}:017000801446:layer:AWSLambdaPowertoolsPythonV3-python311-x86_64:27"
)

# Rotation waits up to 10 minutes for ElastiCache to apply a token (ELASTICACHE_WAIT_SECONDS), one at a time.
_ROTATION = {"redis-rotation": FunctionSizing(memory_mb=256, timeout_seconds=900, reserved_concurrency=1)}

_DEV = EnvironmentConfig(
    name="dev",
    region=DEFAULT_REGION,
    network=NetworkConfig(cidr="10.10.0.0/16", az_count=2, nat_mode="single", interface_endpoints=()),
    stream=StreamConfig(mode="on-demand", shard_count=None, retention_hours=24, shard_level_metrics=False),
    functions={
        "ingest": FunctionSizing(memory_mb=256, timeout_seconds=10, reserved_concurrency=10),
        "processor": FunctionSizing(memory_mb=512, timeout_seconds=60, reserved_concurrency=5),
        "query": FunctionSizing(memory_mb=256, timeout_seconds=10, reserved_concurrency=5),
        **_ROTATION,
    },
    processing=ProcessingConfig(
        batch_size=100,
        batching_window_seconds=1,
        parallelization_factor=1,
        max_retry_attempts=3,
        max_record_age_seconds=3600,
    ),
    readings=ReadingsConfig(),
    # Scales to zero when idle: dev pays for storage only.
    database=DatabaseConfig(
        engine="aurora-serverless", backup_retention_days=1, min_capacity=0, max_capacity=2
    ),
    cache=CacheConfig(node_type="cache.t4g.micro", shards=1, replicas_per_shard=0, snapshot_retention_days=1),
    file_system_backups=True,
    worker=WorkerConfig(
        image_tag="0.1.0", cpu=256, memory_mb=512, min_tasks=1, max_tasks=2, autoscaling=True
    ),
    api=ApiConfig(
        throttle_rate=100,
        throttle_burst=200,
        client_rate=50,
        client_burst=100,
        client_quota_per_day=100_000,
        logging_level="INFO",
        manage_account_logging_role=True,
        waf_rate_limit=None,
    ),
    alarms=AlarmThresholds(
        api_5xx_percent=5,
        api_p99_latency_ms=3000,
        function_duration_percent_of_timeout=80,
        iterator_age_ms=60_000,
        database_cpu_percent=90,
        database_free_storage_gb=2,
        database_connections=80,
        redis_cpu_percent=90,
        redis_memory_percent=90,
        ecs_cpu_percent=90,
        ecs_memory_percent=90,
        silent_stream_minutes=None,  # dev is often quiet
    ),
    log_retention_days=30,
    kms_deletion_window_days=7,
    destroyable=True,
    backend=_DEFAULT_BACKEND,
)

_ENVIRONMENTS: dict[str, EnvironmentConfig] = {
    "dev": _DEV,
    "staging": replace(
        _DEV,
        name="staging",
        network=NetworkConfig(
            cidr="10.20.0.0/16", az_count=2, nat_mode="single", interface_endpoints=_PROD_ENDPOINTS
        ),
        stream=StreamConfig(mode="provisioned", shard_count=2, retention_hours=48, shard_level_metrics=False),
        functions={
            "ingest": FunctionSizing(memory_mb=512, timeout_seconds=10, reserved_concurrency=20),
            "processor": FunctionSizing(memory_mb=1024, timeout_seconds=60, reserved_concurrency=4),
            "query": FunctionSizing(memory_mb=512, timeout_seconds=10, reserved_concurrency=10),
            **_ROTATION,
        },
        processing=replace(_DEV.processing, parallelization_factor=2),
        database=DatabaseConfig(
            engine="aurora-serverless", backup_retention_days=7, min_capacity=0.5, max_capacity=4, reader=True
        ),
        cache=CacheConfig(
            node_type="cache.t4g.small", shards=2, replicas_per_shard=1, snapshot_retention_days=3
        ),
        # At most one task per shard: async-kinesis leases whole shards, so more tasks would idle.
        worker=WorkerConfig(
            image_tag="0.1.0", cpu=512, memory_mb=1024, min_tasks=2, max_tasks=2, autoscaling=True
        ),
        # Staging shares dev's account, whose stack owns API Gateway's logging role.
        api=ApiConfig(
            throttle_rate=200,
            throttle_burst=400,
            client_rate=100,
            client_burst=200,
            client_quota_per_day=1_000_000,
            logging_level="INFO",
            manage_account_logging_role=False,
            waf_rate_limit=2_000,
        ),
        alarms=replace(_DEV.alarms, api_5xx_percent=2, iterator_age_ms=10_000),
        log_retention_days=90,
        destroyable=False,
        kms_deletion_window_days=30,
    ),
    "prod": replace(
        _DEV,
        name="prod",
        network=NetworkConfig(
            cidr="10.30.0.0/16", az_count=3, nat_mode="per-az", interface_endpoints=_PROD_ENDPOINTS
        ),
        stream=StreamConfig(
            mode="provisioned", shard_count=10, retention_hours=168, shard_level_metrics=True
        ),
        functions={
            "ingest": FunctionSizing(memory_mb=1024, timeout_seconds=10, reserved_concurrency=200),
            "processor": FunctionSizing(memory_mb=1024, timeout_seconds=60, reserved_concurrency=50),
            "query": FunctionSizing(memory_mb=1024, timeout_seconds=10, reserved_concurrency=50),
            **_ROTATION,
        },
        processing=ProcessingConfig(
            batch_size=500,
            batching_window_seconds=1,
            parallelization_factor=5,
            max_retry_attempts=5,
            max_record_age_seconds=6 * 3600,
        ),
        readings=replace(_DEV.readings, reading_ttl_days=90),
        database=DatabaseConfig(
            engine="rds",
            backup_retention_days=30,
            instance_class="db.r6g.large",
            allocated_storage_gb=200,
            multi_az=True,
        ),
        cache=CacheConfig(
            node_type="cache.r7g.large", shards=3, replicas_per_shard=1, snapshot_retention_days=7
        ),
        # The seeds ask for lag under 2 s: scale out before the iterator age reaches a second.
        worker=WorkerConfig(
            image_tag="0.1.0", cpu=1024, memory_mb=2048, min_tasks=2, max_tasks=10, autoscaling=True
        ),
        api=ApiConfig(
            throttle_rate=1_000,
            throttle_burst=2_000,
            client_rate=200,
            client_burst=400,
            client_quota_per_day=20_000_000,
            logging_level="ERROR",
            manage_account_logging_role=True,
            waf_rate_limit=10_000,
        ),
        # The seeds ask for stream lag under 2 s; devices report every minute: 10 silent minutes is an outage.
        alarms=AlarmThresholds(
            api_5xx_percent=1,
            api_p99_latency_ms=1000,
            function_duration_percent_of_timeout=80,
            iterator_age_ms=2_000,
            database_cpu_percent=75,
            database_free_storage_gb=20,
            database_connections=400,
            redis_cpu_percent=75,
            redis_memory_percent=80,
            ecs_cpu_percent=80,
            ecs_memory_percent=80,
            silent_stream_minutes=10,
        ),
        log_retention_days=365,
        destroyable=False,
        kms_deletion_window_days=30,
    ),
    # The local environment runs on the emulator: no NAT (nothing to reach), no interface endpoints.
    "local": replace(
        _DEV,
        name="local",
        network=NetworkConfig(cidr="10.40.0.0/16", az_count=2, nat_mode="none", interface_endpoints=()),
        log_retention_days=7,
        # What the emulator cannot run (stacks/emulator.py): ElastiCache, EFS backup policies, autoscaling
        # targets; and it holds one DB instance per server.
        database=DatabaseConfig(engine="rds", backup_retention_days=1, instance_class="db.t4g.micro"),
        cache=None,
        file_system_backups=False,
        worker=WorkerConfig(
            image_tag="0.1.0", cpu=256, memory_mb=512, min_tasks=1, max_tasks=1, autoscaling=False
        ),
        emulator_endpoint=DEFAULT_LOCAL_ENDPOINT,
    ),
}

STANDING_ENVIRONMENTS = tuple(_ENVIRONMENTS)


def validate_suffix(suffix: str) -> str:
    """Return `suffix` if it can name a short-lived environment, else raise ConfigError saying why."""
    if suffix in _ENVIRONMENTS:
        raise ConfigError(
            f"ENVIRONMENT_SUFFIX {suffix!r} is the name of a standing environment; "
            f"a short-lived suffix must differ from {', '.join(_ENVIRONMENTS)}"
        )
    if not SUFFIX_PATTERN.fullmatch(suffix):
        raise ConfigError(f"ENVIRONMENT_SUFFIX {suffix!r} is invalid: use {SUFFIX_RULE} (for example pr-123)")
    if len(suffix) > MAX_SUFFIX_LENGTH:
        kind, component, limit = min(NAME_LIMITS, key=lambda n: n[2] - len(n[1]))
        raise ConfigError(
            f"ENVIRONMENT_SUFFIX {suffix!r} is {len(suffix)} characters; at most {MAX_SUFFIX_LENGTH} fit, "
            f"because the {kind} {PROJECT}-{component}-<suffix> must stay within {limit} characters"
        )
    return suffix


def environment(name: str, environ: Mapping[str, str]) -> EnvironmentConfig:
    """The configuration of a standing environment (dev, staging, prod, local)."""
    if name not in _ENVIRONMENTS:
        raise ConfigError(
            f"unknown environment {name!r}: choose one of {', '.join(_ENVIRONMENTS)}, "
            "or set ENVIRONMENT_SUFFIX for a short-lived one"
        )
    return _with_overrides(_ENVIRONMENTS[name], environ)


def short_lived_environment(suffix: str, environ: Mapping[str, str]) -> EnvironmentConfig:
    """A destroyable environment named by `suffix` (for example pr-123), sized like dev, in dev's account."""
    config = replace(
        _DEV,
        name=validate_suffix(suffix),
        log_retention_days=7,
        api=replace(_DEV.api, manage_account_logging_role=False),
    )
    return _with_overrides(config, environ)


def load_environments(environ: Mapping[str, str]) -> list[EnvironmentConfig]:
    """Every environment main.py synthesizes: the standing ones, plus ENVIRONMENT_SUFFIX's when it is set."""
    environments = [environment(name, environ) for name in _ENVIRONMENTS]
    suffix = environ.get("ENVIRONMENT_SUFFIX", "")
    if suffix:
        environments.append(short_lived_environment(suffix, environ))
    return environments


def _with_overrides(config: EnvironmentConfig, environ: Mapping[str, str]) -> EnvironmentConfig:
    """Apply the settings that come from the process environment: state location and emulator address."""
    backend = replace(
        config.backend,
        bucket=environ.get("TF_STATE_BUCKET") or config.backend.bucket,
        region=environ.get("TF_STATE_REGION") or config.backend.region,
    )
    emulator = config.emulator_endpoint and (environ.get("LOCAL_AWS_ENDPOINT") or config.emulator_endpoint)
    return replace(config, backend=backend, emulator_endpoint=emulator)
