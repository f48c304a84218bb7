"""The stream's two consumers and what each owns: the processor function writes the DynamoDB tables and the
alerts (the sink); the ECS worker writes PostgreSQL, Redis and the archive on EFS."""

from dataclasses import dataclass, field

from cdktf import TerraformResource, TerraformResourceLifecycle
from cdktf_cdktf_provider_aws.ssm_parameter import SsmParameter
from constructs import Construct

from iot_constructs.alert_topic import AlertTopic
from iot_constructs.context import Context, export
from iot_constructs.data import Data
from iot_constructs.database import WRITER_USER
from iot_constructs.event_source import EventSourceSettings, StreamEventSource
from iot_constructs.function import Function, FunctionSettings
from iot_constructs.iam import Grant, Grantable, allow, grant
from iot_constructs.kms import Keys
from iot_constructs.network import Network
from iot_constructs.stream import Stream
from iot_constructs.worker import (
    ARTEFACTS_DIR,
    ContainerEnvironment,
    SecretValue,
    WorkerService,
    WorkerSettings,
)


@dataclass(frozen=True)
class SinkSettings:
    reading_ttl_days: int = 30
    aggregate_ttl_days: int = 365
    dynamodb_max_attempts: int = 5
    thresholds_max_age_seconds: int = 120
    """How long consumers cache the thresholds: operators' changes apply within this."""
    initial_thresholds: str = '{"temperature": {"max": 80}, "humidity": {"min": 5, "max": 95}}'
    """Written once; operators then change the parameter without a deploy."""


@dataclass(frozen=True)
class ProcessingSettings:
    processor: FunctionSettings
    worker: WorkerSettings
    event_source: EventSourceSettings = field(default_factory=EventSourceSettings)
    sink: SinkSettings = field(default_factory=SinkSettings)


class Sink:
    """Where the processor puts processed readings: the raw and aggregate tables, and alerts on the topic
    when a reading crosses the thresholds (an SSM parameter). Its one writer; the worker writes elsewhere."""

    def __init__(
        self, scope: Construct, settings: SinkSettings, *, context: Context, data: Data, alerts: AlertTopic
    ) -> None:
        naming = context.naming
        self._scope = scope
        self._thresholds = SsmParameter(
            scope,
            "thresholds",
            name=f"/{naming.project}/{naming.suffix}/thresholds",
            description="Alert thresholds per metric (JSON); change it here, no deploy needed",
            type="String",
            value=settings.initial_thresholds,
            lifecycle=TerraformResourceLifecycle(ignore_changes=["value"]),
        )
        self._data = data
        self._alerts = alerts
        self.environment = {
            "RAW_TABLE_NAME": data.readings.table_name,
            "AGGREGATES_TABLE_NAME": data.aggregates.table_name,
            "ALERT_TOPIC_ARN": alerts.topic_arn,
            "THRESHOLDS_PARAMETER_NAME": self._thresholds.name,
            "POWERTOOLS_PARAMETERS_MAX_AGE": str(settings.thresholds_max_age_seconds),
            "READING_TTL_DAYS": str(settings.reading_ttl_days),
            "AGGREGATE_TTL_DAYS": str(settings.aggregate_ttl_days),
            "DYNAMODB_MAX_ATTEMPTS": str(settings.dynamodb_max_attempts),
        }
        export(
            scope,
            "thresholds_parameter_name",
            self._thresholds.name,
            "SSM parameter with the alert thresholds",
        )

    def grant_write(self, grantee: Grantable) -> list[Grant]:
        return [
            self._data.readings.grant(grantee, "write-readings-table", "dynamodb:BatchWriteItem"),
            self._data.aggregates.grant(
                grantee, "read-write-aggregates-table", "dynamodb:BatchGetItem", "dynamodb:PutItem"
            ),
            self._alerts.grant_publish(grantee),
            grant(
                self._scope, grantee, "read-thresholds", allow(["ssm:GetParameter"], [self._thresholds.arn])
            ),
        ]


class Processing:
    """The processor function, fed by the stream's event source mapping, and the worker service.

    A grouping, not a construct: its parts are built in `scope`, so that their Terraform addresses stay
    where deployed stacks have them.
    """

    def __init__(
        self,
        scope: Construct,
        settings: ProcessingSettings,
        *,
        context: Context,
        network: Network,
        keys: Keys,
        stream: Stream,
        data: Data,
        alerts: AlertTopic,
    ) -> None:
        sink = Sink(scope, settings.sink, context=context, data=data, alerts=alerts)
        self.processor = Function(
            scope,
            "processor",
            settings.processor,
            context=context,
            key=keys.data,
            network=network,
            environment=sink.environment,
        )
        sink.grant_write(self.processor)
        events = StreamEventSource(
            scope, "processor-events", settings.event_source, function=self.processor, stream=stream
        )
        export(scope, "processor_function_name", self.processor.function_name, "Consumes the stream")
        self.worker = self._worker(scope, settings.worker, context, network, keys, stream, data)
        self.consumers: list[TerraformResource] = [events.mapping, self.worker.service]
        """What reads the stream: a deploy changes them before what writes it, so that records in a new
        format are never written before they can be read."""

    @staticmethod
    def _worker(
        scope: Construct,
        settings: WorkerSettings,
        context: Context,
        network: Network,
        keys: Keys,
        stream: Stream,
        data: Data,
    ) -> WorkerService:
        """The worker and its admin task: the one writer of PostgreSQL (as WRITER_USER, with IAM tokens),
        Redis and the archive on the file system."""
        database, cache = data.database, data.cache
        secrets: dict[str, SecretValue] = {"REDIS_AUTH_TOKEN": cache.auth_token} if cache else {}
        worker = WorkerService(
            scope,
            "worker",
            settings,
            context=context,
            network=network,
            key=keys.data,
            file_system=data.file_system,
            stream=stream,
            worker=ContainerEnvironment(
                {
                    "POWERTOOLS_SERVICE_NAME": "stream-worker",
                    "POWERTOOLS_LOG_LEVEL": "INFO",
                    "AWS_REGION": context.account.region,
                    "STREAM_NAME": stream.stream_name,
                    # How far back the stream can deliver a reading again: how long the worker remembers
                    # what it has counted.
                    "STREAM_RETENTION_HOURS": str(stream.retention_hours),
                    **database.environment,
                    "DATABASE_USER": WRITER_USER,
                    # Under the access point's root, which the worker's user owns: it creates this itself.
                    "ARCHIVE_DIR": f"{ARTEFACTS_DIR}/archive",
                    **(cache.environment if cache else {}),
                },
                secrets,
            ),
            # The region names the RDS CA bundle that verifies the server (TLS verify-full).
            admin=ContainerEnvironment(
                {**database.environment, "AWS_REGION": context.account.region}, database.admin_credentials
            ),
        )
        stream.grant_read(worker)
        database.grant_connect(worker, WRITER_USER)
        database.allow_connections_from(worker, "worker")
        if cache:
            cache.allow_connections_from(worker, "worker")
        return worker
