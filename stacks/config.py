"""Every per-environment value of the platform, in one place: the constructs' own settings, composed.

The stack reads nothing from the process environment itself: `load_environments` is the only reader,
and it validates everything before anything is synthesized. The repository's layout (where each
function's code is) is known here, and reaches the constructs through their settings.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from iot_constructs.alert_topic import AlertSettings, Subscription
from iot_constructs.api import ApiSettings
from iot_constructs.backup import BackupSettings
from iot_constructs.cache import CacheSettings
from iot_constructs.data import DataSettings
from iot_constructs.database import DatabaseSettings
from iot_constructs.event_source import EventSourceSettings
from iot_constructs.function import FunctionSettings
from iot_constructs.ingestion import IngestionSettings
from iot_constructs.kms import KeySettings
from iot_constructs.naming import Naming
from iot_constructs.network import NetworkSettings
from iot_constructs.observability import AlarmThresholds
from iot_constructs.processing import ProcessingSettings, SinkSettings
from iot_constructs.stream import StreamSettings, TargetLoad
from iot_constructs.worker import WorkerSettings

PROJECT = "iot-platform"
OWNER = "platform-team"
DEFAULT_REGION = "us-east-1"
# The availability zones of the regions the platform deploys to, named explicitly: a stack's zones must
# never change under a plan, and zone letters have gaps (ca-central-1 has no c).
REGION_ZONES: dict[str, tuple[str, ...]] = {
    "us-east-1": tuple(f"us-east-1{letter}" for letter in "abcdef"),
    "eu-west-1": ("eu-west-1a", "eu-west-1b", "eu-west-1c"),
    "ca-central-1": ("ca-central-1a", "ca-central-1b", "ca-central-1d"),
}
# The AWS accounts the environments deploy to (AWS's documentation placeholders: replace them with
# yours). The provider refuses credentials of any other account, so a plan of prod with dev's
# credentials fails at once.
DEV_ACCOUNT = "111122223333"
PROD_ACCOUNT = "444455556666"
FUNCTIONS_DIR = Path(__file__).resolve().parent.parent / "functions"
READING_SCHEMA = FUNCTIONS_DIR / "readings" / "reading_schema.json"

# moto server's default address; `LOCAL_AWS_ENDPOINT` points the local environment elsewhere.
DEFAULT_LOCAL_ENDPOINT = "http://127.0.0.1:5000"
EMULATOR_ACCOUNT = "123456789012"  # moto's

SUFFIX_PATTERN = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
SUFFIX_RULE = (
    "lowercase letters, digits and single hyphens, starting with a letter and not ending with a hyphen"
)

# AWS name limits for names of the form <project>-<component>-<suffix>, each with the longest
# component the platform gives that kind of resource. They decide the longest allowed suffix; every other
# name the platform creates has a limit of 80 characters or more.
NAME_LIMITS: tuple[tuple[str, str, int], ...] = (
    ("ElastiCache replication group id", "redis", 40),
    ("AWS Backup vault name", "backups", 50),
    ("IAM role name", "postgres-monitoring", 64),
    ("Lambda function name", "redis-rotation", 64),
    ("RDS identifier", "postgres", 63),
)
MAX_SUFFIX_LENGTH = min(limit - len(f"{PROJECT}-{component}-") for _, component, limit in NAME_LIMITS)


class ConfigError(ValueError):
    """An environment name, suffix or setting that cannot be synthesized."""


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
    account_id: str
    """The only AWS account the provider accepts credentials for (the emulator's, locally)."""
    region: str
    network: NetworkSettings
    ingestion: IngestionSettings
    processing: ProcessingSettings
    data: DataSettings
    alarms: AlarmThresholds
    alerts: AlertSettings
    keys: KeySettings
    log_retention_days: int
    # Destroyable environments carry no deletion protection and skip final snapshots.
    destroyable: bool
    backend: StateBackend
    # Set for the local environment only: the AWS emulator every provider call and the state go to.
    emulator_endpoint: str | None = None
    deploy_role_arn: str | None = None
    """A role in `account_id` the provider assumes to plan and apply. Default: the caller's credentials (as
    in the workflows, whose OIDC role is the environment's deploy role)."""

    def __post_init__(self) -> None:
        if not self.destroyable and not self.alerts.subscriptions:
            raise ConfigError(
                f"environment {self.name!r} has no alert subscriptions: its alarms would reach no one; "
                "add an email, https or sms Subscription to its AlertSettings in stacks/config.py"
            )

    @property
    def stack_name(self) -> str:
        return f"{PROJECT}-{self.name}"

    @property
    def naming(self) -> Naming:
        return Naming(PROJECT, self.name)

    @property
    def functions(self) -> dict[str, FunctionSettings]:
        """Every Lambda function's settings, by the component it is named after."""
        return {
            "ingest": self.ingestion.ingest,
            "processor": self.processing.processor,
            "query": self.ingestion.query,
            **({"redis-rotation": self.data.token_rotator} if self.data.cache else {}),
        }


_DEFAULT_BACKEND = StateBackend(bucket=f"{PROJECT}-terraform-state", region=DEFAULT_REGION)

_PROD_ENDPOINTS = ("kinesis-streams", "secretsmanager", "logs", "sts", "ecr.api", "ecr.dkr", "ssm", "kms")

# Powertools for AWS Lambda (Python), the AWS-managed layer; the Pipfile pins the same library for tests.
POWERTOOLS_LAYER_ARN = (
    "arn:aws:lambda:{region}:017000801446:layer:AWSLambdaPowertoolsPythonV3-python311-x86_64:27"
)


def _zones(region: str, count: int) -> tuple[str, ...]:
    """The region's first `count` availability zones; a ConfigError if it has fewer or is unknown."""
    if region not in REGION_ZONES:
        raise ConfigError(
            f"region {region!r} is not one the platform knows the availability zones of: "
            f"use one of {', '.join(REGION_ZONES)}, or add it to REGION_ZONES in stacks/config.py"
        )
    zones = REGION_ZONES[region]
    if len(zones) < count:
        raise ConfigError(f"region {region!r} has {len(zones)} availability zones; the network needs {count}")
    return zones[:count]


# Client libraries in neither the runtime nor the layer, bundled at the versions Pipfile.lock pins: redis-py
# (it needs nothing else on Python 3.11.3 and later)...
REDIS_DISTRIBUTIONS = ("redis",)
# ... and pg8000 with what it requires, recursively (scramp needs asn1crypto; python-dateutil needs six).
POSTGRES_DISTRIBUTIONS = ("pg8000", "scramp", "asn1crypto", "python-dateutil", "six")
# What each function bundles: the Redis clients (the owners map, the latest readings, the rotated token) and
# the PostgreSQL reader (rollups).
BUNDLED_DISTRIBUTIONS = {
    "ingest": REDIS_DISTRIBUTIONS,
    "query": REDIS_DISTRIBUTIONS + POSTGRES_DISTRIBUTIONS,
    "redis_rotation": REDIS_DISTRIBUTIONS,
}


def _function(
    name: str, memory_mb: int, timeout_seconds: int, reserved_concurrency: int, region: str = DEFAULT_REGION
) -> FunctionSettings:
    """A function whose code is functions/<name>/, running with the Powertools layer of its region."""
    return FunctionSettings(
        source=FUNCTIONS_DIR / name,
        memory_mb=memory_mb,
        timeout_seconds=timeout_seconds,
        reserved_concurrency=reserved_concurrency,
        layers=(POWERTOOLS_LAYER_ARN.format(region=region),),
        # The readings package: the one schema and record format ingest, processor and query share.
        libraries=() if name == "redis_rotation" else (FUNCTIONS_DIR / "readings",),
        bundled_distributions=BUNDLED_DISTRIBUTIONS.get(name, ()),
    )


def _ingestion(stream: StreamSettings, sizes: tuple[int, int, int], api: ApiSettings) -> IngestionSettings:
    """`sizes`: the ingest and query functions' memory and their reserved concurrency each."""
    memory_mb, ingest_concurrency, query_concurrency = sizes
    return IngestionSettings(
        stream=stream,
        ingest=_function("ingest", memory_mb, 10, ingest_concurrency),
        query=_function("query", memory_mb, 10, query_concurrency),
        api=api,
    )


def _data(
    database: DatabaseSettings, cache: CacheSettings | None, backup: BackupSettings | None
) -> DataSettings:
    return DataSettings(
        database=database,
        # Rotation waits up to 10 minutes for ElastiCache to apply a token (ELASTICACHE_WAIT_SECONDS),
        # one rotation at a time.
        token_rotator=_function("redis_rotation", 256, 900, 1),
        cache=cache,
        backup=backup,
    )


def on_emulator(config: EnvironmentConfig, endpoint: str) -> EnvironmentConfig:
    """A destroyable environment on the emulator at `endpoint`, without what the emulator cannot run
    (stacks/emulator.py): ElastiCache, AWS Backup selections, autoscaling targets, Aurora (and it holds one DB
    instance per server); without NAT or interface endpoints, which would reach nothing."""
    if not config.destroyable:
        raise ConfigError(f"{config.name} is not destroyable, so it never runs on the emulator")
    return replace(
        config,
        account_id=EMULATOR_ACCOUNT,
        network=replace(config.network, nat_mode="none", interface_endpoints=()),
        data=_data(
            DatabaseSettings(engine="rds", backup_retention_days=1, instance_class="db.t4g.micro"),
            cache=None,
            backup=None,
        ),
        processing=replace(
            config.processing,
            worker=WorkerSettings(
                image_tag="0.1.0", cpu=256, memory_mb=512, min_tasks=1, max_tasks=1, autoscaling=False
            ),
        ),
        emulator_endpoint=endpoint,
    )


# The seeds' target fleet: 10,000 devices reporting once a second, through gateways that send 10 readings a
# request, with three times that as headroom for bursts and growth. Prod's stream, and the worker tasks that
# read it (one per shard at most), are sized from it.
PROD_LOAD = TargetLoad(devices=10_000, readings_per_device_per_second=1, readings_per_request=10, headroom=3)

# Where the alerts of protected environments go (a placeholder address: replace it with your on-call's).
_ONCALL = AlertSettings(subscriptions=(Subscription("email", "iot-platform-oncall@example.com"),))

_DEV = EnvironmentConfig(
    name="dev",
    account_id=DEV_ACCOUNT,
    region=DEFAULT_REGION,
    network=NetworkSettings(
        cidr="10.10.0.0/16", availability_zones=_zones(DEFAULT_REGION, 2), nat_mode="single"
    ),
    ingestion=_ingestion(
        StreamSettings(mode="on-demand", retention_hours=24),
        (256, 10, 5),
        ApiSettings(
            reading_schema=READING_SCHEMA,
            throttle_rate=100,
            throttle_burst=200,
            client_rate=50,
            client_burst=100,
            client_quota_per_day=100_000,
            logging_level="INFO",
            manage_account_logging_role=True,
        ),
    ),
    processing=ProcessingSettings(
        processor=_function("processor", 512, 60, 5),
        event_source=EventSourceSettings(
            batch_size=10,  # records: ~2,000 packed readings, about a second of the processor's work
            batching_window_seconds=1,
            parallelization_factor=1,
            max_retry_attempts=3,
            max_record_age_seconds=3600,
        ),
        worker=WorkerSettings(image_tag="0.1.0", cpu=256, memory_mb=512, min_tasks=1, max_tasks=2),
    ),
    # Scales to zero when idle: dev pays for storage only.
    data=_data(
        DatabaseSettings(engine="aurora-serverless", backup_retention_days=1, min_capacity=0, max_capacity=2),
        CacheSettings(node_type="cache.t4g.micro", shards=1, replicas_per_shard=0, snapshot_retention_days=1),
        BackupSettings(retention_days=7),
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
    alerts=AlertSettings(),
    keys=KeySettings(deletion_window_days=7),
    log_retention_days=30,
    destroyable=True,
    backend=_DEFAULT_BACKEND,
)

_ENVIRONMENTS: dict[str, EnvironmentConfig] = {
    "dev": _DEV,
    "staging": replace(
        _DEV,
        name="staging",
        network=NetworkSettings(
            cidr="10.20.0.0/16",
            availability_zones=_zones(DEFAULT_REGION, 2),
            nat_mode="single",
            interface_endpoints=_PROD_ENDPOINTS,
        ),
        # Staging shares dev's account, whose stack owns API Gateway's logging role.
        ingestion=_ingestion(
            StreamSettings(mode="provisioned", shard_count=2, retention_hours=48),
            (512, 20, 10),
            ApiSettings(
                reading_schema=READING_SCHEMA,
                throttle_rate=200,
                throttle_burst=400,
                client_rate=100,
                client_burst=200,
                client_quota_per_day=1_000_000,
                logging_level="INFO",
                manage_account_logging_role=False,
                firewall=True,
            ),
        ),
        processing=replace(
            _DEV.processing,
            processor=_function("processor", 1024, 60, 4),
            event_source=replace(_DEV.processing.event_source, parallelization_factor=2),
            # At most one task per shard: async-kinesis leases whole shards, so more tasks would idle.
            worker=WorkerSettings(image_tag="0.1.0", cpu=512, memory_mb=1024, min_tasks=2, max_tasks=2),
        ),
        data=_data(
            DatabaseSettings(
                engine="aurora-serverless",
                backup_retention_days=7,
                min_capacity=0.5,
                max_capacity=4,
                reader=True,
            ),
            CacheSettings(
                node_type="cache.t4g.small", shards=2, replicas_per_shard=1, snapshot_retention_days=3
            ),
            BackupSettings(retention_days=35),
        ),
        alarms=replace(_DEV.alarms, api_5xx_percent=2, iterator_age_ms=10_000),
        alerts=_ONCALL,
        keys=KeySettings(deletion_window_days=30),
        log_retention_days=90,
        destroyable=False,
    ),
    "prod": replace(
        _DEV,
        name="prod",
        account_id=PROD_ACCOUNT,
        network=NetworkSettings(
            cidr="10.30.0.0/16",
            availability_zones=_zones(DEFAULT_REGION, 3),
            nat_mode="per-az",
            interface_endpoints=_PROD_ENDPOINTS,
        ),
        ingestion=_ingestion(
            StreamSettings(
                mode="provisioned",
                shard_count=PROD_LOAD.shards(),
                retention_hours=168,
                shard_level_metrics=True,
            ),
            (1024, 200, 50),
            ApiSettings(
                reading_schema=READING_SCHEMA,
                throttle_rate=1_000,
                throttle_burst=2_000,
                client_rate=200,
                client_burst=400,
                client_quota_per_day=20_000_000,
                logging_level="ERROR",
                manage_account_logging_role=True,
                firewall=True,
            ),
        ),
        processing=ProcessingSettings(
            processor=_function("processor", 1024, 60, 50),
            event_source=EventSourceSettings(
                batch_size=10,  # records: ~2,000 packed readings, about a second of the processor's work
                batching_window_seconds=1,
                parallelization_factor=5,
                max_retry_attempts=5,
                max_record_age_seconds=6 * 3600,
            ),
            # The seeds ask for lag under 2 s: scale out before the iterator age reaches a second.
            worker=WorkerSettings(
                image_tag="0.1.0", cpu=1024, memory_mb=2048, min_tasks=2, max_tasks=PROD_LOAD.shards()
            ),
            sink=SinkSettings(reading_ttl_days=90),
        ),
        data=_data(
            DatabaseSettings(
                engine="rds",
                backup_retention_days=30,
                instance_class="db.r6g.large",
                allocated_storage_gb=200,
                multi_az=True,
            ),
            CacheSettings(
                node_type="cache.r7g.large", shards=3, replicas_per_shard=1, snapshot_retention_days=7
            ),
            BackupSettings(retention_days=90),
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
        alerts=_ONCALL,
        keys=KeySettings(deletion_window_days=30),
        log_retention_days=365,
        destroyable=False,
    ),
    "local": on_emulator(
        replace(
            _DEV,
            name="local",
            network=replace(_DEV.network, cidr="10.40.0.0/16"),
            log_retention_days=7,
        ),
        DEFAULT_LOCAL_ENDPOINT,
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
    """A destroyable environment named by `suffix` (for example pr-123), sized like dev, in dev's account and
    in the region AWS_REGION names (dev's by default); on the emulator at LOCAL_AWS_ENDPOINT when that is set,
    as the local environment is."""
    ingestion = replace(_DEV.ingestion, api=replace(_DEV.ingestion.api, manage_account_logging_role=False))
    config = replace(_DEV, name=validate_suffix(suffix), log_retention_days=7, ingestion=ingestion)
    config = _in_region(config, environ.get("AWS_REGION") or _DEV.region)
    emulator = environ.get("LOCAL_AWS_ENDPOINT")
    return _with_overrides(on_emulator(config, emulator) if emulator else config, environ)


def configuration(name: str, environ: Mapping[str, str]) -> EnvironmentConfig:
    """A standing environment's configuration, or a short-lived one's (a suffix such as pr-7)."""
    if name in STANDING_ENVIRONMENTS:
        return environment(name, environ)
    return short_lived_environment(name, environ)


def _in_region(config: EnvironmentConfig, region: str) -> EnvironmentConfig:
    """`config` moved to `region`: its zones (as many as before) and its functions' layers."""
    zones = _zones(region, len(config.network.availability_zones))

    def moved(function: FunctionSettings) -> FunctionSettings:
        return replace(function, layers=(POWERTOOLS_LAYER_ARN.format(region=region),))

    ingestion, processing, data = config.ingestion, config.processing, config.data
    return replace(
        config,
        region=region,
        network=replace(config.network, availability_zones=zones),
        ingestion=replace(ingestion, ingest=moved(ingestion.ingest), query=moved(ingestion.query)),
        processing=replace(processing, processor=moved(processing.processor)),
        data=replace(data, token_rotator=moved(data.token_rotator)),
    )


def load_environments(environ: Mapping[str, str]) -> list[EnvironmentConfig]:
    """Every environment main.py synthesizes: the standing ones, plus ENVIRONMENT_SUFFIX's when it is set."""
    environments = [environment(name, environ) for name in _ENVIRONMENTS]
    suffix = environ.get("ENVIRONMENT_SUFFIX", "")
    if suffix:
        environments.append(short_lived_environment(suffix, environ))
    return environments


def _with_overrides(config: EnvironmentConfig, environ: Mapping[str, str]) -> EnvironmentConfig:
    """Apply the settings that come from the process environment: state location, emulator address, and the
    worker image a deployment built (WORKER_IMAGE_TAG, the commit it was built from)."""
    backend = replace(
        config.backend,
        bucket=environ.get("TF_STATE_BUCKET") or config.backend.bucket,
        region=environ.get("TF_STATE_REGION") or config.backend.region,
        kms_key_id=environ.get("TF_STATE_KMS_KEY_ID") or config.backend.kms_key_id,
    )
    emulator = config.emulator_endpoint and (environ.get("LOCAL_AWS_ENDPOINT") or config.emulator_endpoint)
    worker = replace(
        config.processing.worker,
        image_tag=environ.get("WORKER_IMAGE_TAG") or config.processing.worker.image_tag,
    )
    processing = replace(config.processing, worker=worker)
    return replace(config, backend=backend, emulator_endpoint=emulator, processing=processing)
