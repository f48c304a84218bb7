"""The Kinesis stream every reading goes through."""

import math
from dataclasses import dataclass
from typing import Literal, get_args

from cdktf_cdktf_provider_aws.kinesis_stream import KinesisStream, KinesisStreamStreamModeDetails
from constructs import Construct

from iot_constructs.context import Context, Metric, export
from iot_constructs.dead_letter_queue import DeadLetterQueue
from iot_constructs.iam import Grant, Grantable, allow, grant
from iot_constructs.kms import EncryptionKey

# What a consumer reading shards calls; a Lambda event source mapping also describes the stream.
READ_ACTIONS = ("kinesis:GetRecords", "kinesis:GetShardIterator", "kinesis:ListShards")
EVENT_SOURCE_ACTIONS = ("kinesis:DescribeStream", "kinesis:DescribeStreamSummary", *READ_ACTIONS)
WRITE_ACTIONS = ("kinesis:PutRecords",)
SHARD_LEVEL_METRICS = (
    "IncomingBytes",
    "IncomingRecords",
    "IteratorAgeMilliseconds",
    "OutgoingBytes",
    "OutgoingRecords",
    "ReadProvisionedThroughputExceeded",
    "WriteProvisionedThroughputExceeded",
)

# What a shard takes in a second, whichever comes first; partition keys count towards the bytes.
SHARD_RECORDS_PER_SECOND = 1_000
SHARD_BYTES_PER_SECOND = 1_048_576
# Ingest packs the readings of a request into records of at most MAX_RECORD_BYTES, each with a partition
# key of PARTITION_KEY_LENGTH characters (functions/readings). A typical reading (a device id, a timestamp,
# three metrics, a sequence number and a firmware version) takes about PACKED_READING_BYTES in a record.
# tests/test_streaming.py checks all three against the readings package.
MAX_RECORD_BYTES = 25_000
PARTITION_KEY_LENGTH = 16
PACKED_READING_BYTES = 180

StreamMode = Literal["on-demand", "provisioned"]


@dataclass(frozen=True)
class TargetLoad:
    """The write load a provisioned stream is sized for."""

    devices: int
    readings_per_device_per_second: float
    readings_per_request: int
    """Readings per POST: devices behind a gateway arrive batched, and ingest packs a request's readings
    into records together."""
    headroom: float
    """Capacity over the target load, for bursts and growth: 3 provisions three times the target."""

    @property
    def readings_per_second(self) -> float:
        return self.devices * self.readings_per_device_per_second

    def shards(self) -> int:
        """The shards that take the target load times the headroom, by records and by bytes."""
        records_per_request = math.ceil(self.readings_per_request * PACKED_READING_BYTES / MAX_RECORD_BYTES)
        records = self.readings_per_second / self.readings_per_request * records_per_request
        data = self.readings_per_second * PACKED_READING_BYTES + records * PARTITION_KEY_LENGTH
        needed = max(records / SHARD_RECORDS_PER_SECOND, data / SHARD_BYTES_PER_SECOND)
        return math.ceil(needed * self.headroom)


@dataclass(frozen=True)
class StreamSettings:
    mode: StreamMode = "on-demand"
    """"on-demand" scales by itself; "provisioned" has `shard_count` shards."""
    shard_count: int | None = None
    """Shards of a provisioned stream; not set for on-demand."""
    retention_hours: int = 24
    """How long records stay readable, 24 to 8760 hours."""
    shard_level_metrics: bool = False
    """Publish per-shard metrics (they cost extra). Default: stream-level metrics only."""

    def __post_init__(self) -> None:
        if self.mode not in get_args(StreamMode):
            raise ValueError(f"mode must be one of {get_args(StreamMode)}, got {self.mode!r}")
        if (self.mode == "provisioned") != (self.shard_count is not None):
            raise ValueError(
                f"shard_count is set with mode 'provisioned' only; got mode {self.mode!r}, "
                f"shard_count {self.shard_count}"
            )
        if not 24 <= self.retention_hours <= 8760:
            raise ValueError(f"retention_hours must be between 24 and 8760, got {self.retention_hours}")


class Stream(Construct):
    """The Kinesis stream every reading goes through, encrypted with `key`, and the dead-letter queue of the
    records its consumers gave up on."""

    def __init__(
        self, scope: Construct, id: str, settings: StreamSettings, *, context: Context, key: EncryptionKey
    ) -> None:
        super().__init__(scope, id)
        naming = context.naming
        stream = KinesisStream(
            self,
            "stream",
            name=naming.name("readings"),
            retention_period=settings.retention_hours,
            shard_count=settings.shard_count,
            stream_mode_details=KinesisStreamStreamModeDetails(
                stream_mode=settings.mode.replace("-", "_").upper()
            ),
            encryption_type="KMS",
            kms_key_id=key.key_arn,
            shard_level_metrics=list(SHARD_LEVEL_METRICS) if settings.shard_level_metrics else None,
        )
        self.stream_name: str = stream.name
        self.stream_arn: str = stream.arn
        self.retention_hours = settings.retention_hours
        self._key = key
        self.processing_dead_letters = DeadLetterQueue(
            self, "processing-dead-letters", name=naming.name("processing-dlq"), key=key
        )
        export(scope, "stream_name", self.stream_name, "The Kinesis stream every reading goes through")
        export(
            scope,
            "processing_dlq_url",
            self.processing_dead_letters.queue_url,
            "Records the processor gave up on",
        )

    def grant_read(self, grantee: Grantable) -> Grant:
        """Let `grantee` read the stream's shards, as a consumer does."""
        return self._grant_read(grantee, READ_ACTIONS)

    def grant_read_as_event_source(self, grantee: Grantable) -> Grant:
        """Let a Lambda event source mapping read the stream with `grantee`'s role."""
        return self._grant_read(grantee, EVENT_SOURCE_ACTIONS)

    def _grant_read(self, grantee: Grantable, actions: tuple[str, ...]) -> Grant:
        return grant(
            self,
            grantee,
            "read-readings-stream",
            allow(actions, [self.stream_arn]),
            self._key.grant_decrypt(),
        )

    def grant_write(self, grantee: Grantable) -> Grant:
        """Let `grantee` put records (PutRecords only: the producer's one call)."""
        return grant(
            self,
            grantee,
            "write-readings-stream",
            allow(WRITE_ACTIONS, [self.stream_arn]),
            self._key.grant_generate_data_key(),
        )

    def metric(self, name: str, statistic: str = "Sum") -> Metric:
        return Metric("AWS/Kinesis", name, {"StreamName": self.stream_name}, statistic)

    def metric_get_records_iterator_age_milliseconds(self) -> Metric:
        """How far its consumers lag: the age of the last record read, maximum over the period."""
        return self.metric("GetRecords.IteratorAgeMilliseconds", "Maximum")

    def metric_incoming_records(self) -> Metric:
        return self.metric("IncomingRecords")

    def metric_write_provisioned_throughput_exceeded(self) -> Metric:
        return self.metric("WriteProvisionedThroughputExceeded")
