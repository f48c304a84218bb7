"""Kinesis -> DynamoDB: store raw readings, keep per-minute aggregates exactly once, alert on thresholds.

A record holds one reading or, packed by ingest, several (readings.unpack reads both). A reading is
identified by (device_id, timestamp). Raw items are keyed by it, so rewriting one is harmless. The aggregate
item of a device and minute lists the readings it has counted (their millisecond of the minute) and changes
only by one conditional write that carries the new totals together with that list. There is no moment at
which a reading is counted but not marked, or marked but not counted: a crash leaves the old item or the new
one, and a replay (of a record, or of a reading a client sent twice) skips what the item has already counted.
No separate idempotency store is needed.

A record is reported as a batch item failure when one of its readings cannot be stored (it breaks the rules
that ingest applies), or when AWS still refused a write of one of its readings after the retries. Lambda
then retries from the first record reported, harmlessly, and after the mapping's bounded retries hands the
batch to its on-failure destination. The other readings, of that record and of the others, are stored all
the same. Only what no record can fix fails the invocation: an unreadable or malformed thresholds parameter.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes import KinesisStreamEvent, event_source
from aws_lambda_powertools.utilities.parameters import SSMProvider
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.exceptions import BotoCoreError, ClientError
from readings import Identity, Number, Reading, Unpacked, batches, epoch_ms, unpack
from readings.settings import positive_int, required

BATCH_WRITE_MAX_ITEMS = 25
BATCH_GET_MAX_KEYS = 100
TRANSACT_MAX_ITEMS = 100
# TransactWriteItems accepts 4 MB; a write's JSON is longer than its DynamoDB size, so this is a safe bound.
TRANSACT_MAX_JSON_CHARS = 4_000_000
PUBLISH_BATCH_MAX_ENTRIES = 10
BACKOFF_BASE_SECONDS = 0.1
BACKOFF_CAP_SECONDS = 2.0
# A record's problems are logged up to this many (a packed record holds some 200 readings); all are counted.
MAX_LOGGED_PROBLEMS = 100

AggregateKey = tuple[str, str]  # (device_id, minute)
# What a failed AWS call raises once botocore's own retries are spent: a service error, or no answer at all.
AWS_ERRORS = (BotoCoreError, ClientError)


@dataclass(frozen=True)
class Config:
    raw_table_name: str
    aggregates_table_name: str
    alert_topic_arn: str
    thresholds_parameter_name: str
    reading_ttl: timedelta
    aggregate_ttl: timedelta
    dynamodb_max_attempts: int

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Config:
        return cls(
            raw_table_name=required(env, "RAW_TABLE_NAME"),
            aggregates_table_name=required(env, "AGGREGATES_TABLE_NAME"),
            alert_topic_arn=required(env, "ALERT_TOPIC_ARN"),
            thresholds_parameter_name=required(env, "THRESHOLDS_PARAMETER_NAME"),
            reading_ttl=timedelta(days=positive_int(env, "READING_TTL_DAYS")),
            aggregate_ttl=timedelta(days=positive_int(env, "AGGREGATE_TTL_DAYS")),
            dynamodb_max_attempts=positive_int(env, "DYNAMODB_MAX_ATTEMPTS"),
        )


def expires_at(epoch_seconds: int, ttl: timedelta) -> int:
    """TTL counts from the data's own time, so a replay writes the same item. Whole seconds: no date can
    overflow, however late its reading is."""
    return epoch_seconds + int(ttl.total_seconds())


def parse_thresholds(document: Any) -> dict[str, dict[str, float]]:
    """Bounds by metric, e.g. {"temperature": {"max": 80}, "humidity": {"min": 10, "max": 90}}.

    A malformed document raises: processing stops, visibly, rather than silently sending no alerts.
    """
    if not isinstance(document, dict):
        raise ValueError(f"thresholds must be a JSON object, got {document!r}")
    for metric, bounds in document.items():
        valid = (
            isinstance(bounds, dict)
            and bounds
            and bounds.keys() <= {"min", "max"}
            and all(
                isinstance(limit, int | float) and not isinstance(limit, bool) for limit in bounds.values()
            )
        )
        if not valid:
            raise ValueError(f"thresholds for {metric!r} must be an object with a numeric min and/or max")
    return document


@dataclass(frozen=True)
class Breach:
    device_id: str
    timestamp: str
    metric: str
    value: Number
    bound: str  # "min" or "max"
    limit: float

    @property
    def identity(self) -> Identity:
        return (self.device_id, self.timestamp)


def find_breaches(readings: list[Reading], thresholds: dict[str, dict[str, float]]) -> list[Breach]:
    return [
        Breach(reading.device_id, reading.timestamp, metric, value, bound, limit)
        for reading in readings
        for metric, value in reading.metrics.items()
        for bound, limit in thresholds.get(metric, {}).items()
        if (value > limit if bound == "max" else value < limit)
    ]


@dataclass(frozen=True)
class Stats:
    count: int
    minimum: Number
    maximum: Number
    total: Number

    def with_value(self, value: Number) -> Stats:
        return Stats(self.count + 1, min(self.minimum, value), max(self.maximum, value), self.total + value)


@dataclass
class Aggregate:
    device_id: str
    minute: str
    # Grows with every write, so it is also the item's version for optimistic locking.
    reading_count: int = 0
    counted: set[int] = field(default_factory=set)  # millisecond of the minute of each counted reading
    metrics: dict[str, Stats] = field(default_factory=dict)

    def add(self, reading: Reading) -> None:
        self.reading_count += 1
        self.counted.add(reading.millisecond_of_minute)
        for name, value in reading.metrics.items():
            stats = self.metrics.get(name)
            self.metrics[name] = Stats(1, value, value, value) if stats is None else stats.with_value(value)


def aggregate_key(reading: Reading) -> AggregateKey:
    return (reading.device_id, reading.minute)


def raw_item(reading: Reading, ttl: timedelta) -> dict[str, Any]:
    item: dict[str, Any] = {
        "device_id": {"S": reading.device_id},
        "timestamp": {"S": reading.timestamp},
        "metrics": {"M": {name: {"N": str(value)} for name, value in reading.metrics.items()}},
        "expires_at": {"N": str(expires_at(reading.epoch_seconds, ttl))},
    }
    if reading.sequence is not None:
        item["sequence"] = {"N": str(reading.sequence)}
    if reading.firmware is not None:
        item["firmware"] = {"S": reading.firmware}
    return item


def aggregate_item(aggregate: Aggregate, ttl: timedelta) -> dict[str, Any]:
    return {
        "device_id": {"S": aggregate.device_id},
        "minute": {"S": aggregate.minute},
        "reading_count": {"N": str(aggregate.reading_count)},
        "counted_ms": {"NS": [str(millisecond) for millisecond in sorted(aggregate.counted)]},
        "metrics": {
            "M": {
                name: {
                    "M": {
                        "count": {"N": str(stats.count)},
                        "min": {"N": str(stats.minimum)},
                        "max": {"N": str(stats.maximum)},
                        "sum": {"N": str(stats.total)},
                    }
                }
                for name, stats in aggregate.metrics.items()
            }
        },
        "expires_at": {"N": str(expires_at(epoch_ms(aggregate.minute) // 1000, ttl))},
    }


def aggregate_from_item(item: Mapping[str, Any]) -> Aggregate:
    return Aggregate(
        device_id=item["device_id"]["S"],
        minute=item["minute"]["S"],
        reading_count=int(item["reading_count"]["N"]),
        counted={int(millisecond) for millisecond in item["counted_ms"]["NS"]},
        metrics={
            name: Stats(
                int(stats["M"]["count"]["N"]),
                Decimal(stats["M"]["min"]["N"]),
                Decimal(stats["M"]["max"]["N"]),
                Decimal(stats["M"]["sum"]["N"]),
            )
            for name, stats in item["metrics"]["M"].items()
        },
    )


@dataclass(frozen=True)
class Outcome:
    stored: int  # distinct readings written to the raw table
    counted: int  # readings newly counted in the aggregates; the others had been counted before
    breaches: int  # alerts published
    unstored: set[Identity]  # readings AWS refused to take in full after the retries: their records fail


def store_readings(
    readings: list[Reading], thresholds: dict[str, dict[str, float]], config: Config, dynamodb: Any, sns: Any
) -> Outcome:
    """Stores the readings, counts those not counted yet and alerts on their breaches, each once.

    A reading whose raw item, aggregate or alert AWS did not take is left out of the steps after, so a retry
    finds it as new as before; the aggregates of the others are written all the same.
    """
    distinct = list({reading.identity: reading for reading in readings}.values())
    unstored = write_raw_readings(dynamodb, config, distinct)
    written = [reading for reading in distinct if reading.identity not in unstored]
    aggregates, unread = load_aggregates(dynamodb, config, {aggregate_key(r) for r in written})
    unstored |= {reading.identity for reading in written if aggregate_key(reading) in unread}
    fresh = [
        reading
        for reading in written
        if aggregate_key(reading) not in unread
        and reading.millisecond_of_minute not in aggregates[aggregate_key(reading)].counted
    ]
    breaches = find_breaches(fresh, thresholds)
    # Alerts go out before the readings are marked counted: a crash between repeats an alert, never loses one.
    unpublished = publish_breaches(sns, config.alert_topic_arn, breaches)
    unstored |= unpublished
    counting = [reading for reading in fresh if reading.identity not in unpublished]
    uncommitted = commit_aggregates(dynamodb, count_readings(aggregates, counting, config))
    unstored |= uncommitted
    return Outcome(
        stored=len(written),
        counted=sum(reading.identity not in uncommitted for reading in counting),
        breaches=sum(breach.identity not in unpublished for breach in breaches),
        unstored=unstored,
    )


def write_raw_readings(dynamodb: Any, config: Config, readings: list[Reading]) -> set[Identity]:
    """Writes the raw items; returns the readings whose items DynamoDB had not taken after the retries."""
    unwritten: set[Identity] = set()
    for start in range(0, len(readings), BATCH_WRITE_MAX_ITEMS):
        chunk = readings[start : start + BATCH_WRITE_MAX_ITEMS]
        requests = [{"PutRequest": {"Item": raw_item(reading, config.reading_ttl)}} for reading in chunk]
        _, left = _until_processed(
            dynamodb.batch_write_item,
            {config.raw_table_name: requests},
            "UnprocessedItems",
            config.dynamodb_max_attempts,
        )
        unwritten |= {
            (request["PutRequest"]["Item"]["device_id"]["S"], request["PutRequest"]["Item"]["timestamp"]["S"])
            for request in left.get(config.raw_table_name, [])
        }
    return unwritten


def load_aggregates(
    dynamodb: Any, config: Config, keys: set[AggregateKey]
) -> tuple[dict[AggregateKey, Aggregate], set[AggregateKey]]:
    """The stored aggregate for each key, or an empty one, and the keys DynamoDB did not answer for after the
    retries. Read consistently, as the writes build on them."""
    aggregates = {key: Aggregate(*key) for key in keys}
    unread: set[AggregateKey] = set()
    ordered = sorted(keys)
    for start in range(0, len(ordered), BATCH_GET_MAX_KEYS):
        request = {
            config.aggregates_table_name: {
                "Keys": [
                    {"device_id": {"S": device_id}, "minute": {"S": minute}}
                    for device_id, minute in ordered[start : start + BATCH_GET_MAX_KEYS]
                ],
                "ConsistentRead": True,
            }
        }
        responses, left = _until_processed(
            dynamodb.batch_get_item, request, "UnprocessedKeys", config.dynamodb_max_attempts
        )
        for response in responses:
            for item in response["Responses"].get(config.aggregates_table_name, []):
                aggregate = aggregate_from_item(item)
                aggregates[(aggregate.device_id, aggregate.minute)] = aggregate
        unread |= {
            (key["device_id"]["S"], key["minute"]["S"])
            for key in left.get(config.aggregates_table_name, {}).get("Keys", [])
        }
    return aggregates, unread


@dataclass(frozen=True)
class AggregateWrite:
    """A conditional put of an aggregate, and the readings it counts."""

    request: dict[str, Any]
    readings: list[Identity]

    @property
    def json_size(self) -> int:
        return len(json.dumps(self.request))


def count_readings(
    aggregates: dict[AggregateKey, Aggregate], readings: list[Reading], config: Config
) -> list[AggregateWrite]:
    """Adds the readings to their aggregates; returns the writes that commit them.

    Each write succeeds only if the item is still the version that was read.
    """
    versions: dict[AggregateKey, int] = {}
    counted: dict[AggregateKey, list[Identity]] = {}
    for reading in readings:
        key = aggregate_key(reading)
        versions.setdefault(key, aggregates[key].reading_count)
        aggregates[key].add(reading)
        counted.setdefault(key, []).append(reading.identity)
    writes = []
    for key, version in versions.items():
        put: dict[str, Any] = {
            "TableName": config.aggregates_table_name,
            "Item": aggregate_item(aggregates[key], config.aggregate_ttl),
        }
        if version:
            put["ConditionExpression"] = "reading_count = :version"
            put["ExpressionAttributeValues"] = {":version": {"N": str(version)}}
        else:
            put["ConditionExpression"] = "attribute_not_exists(device_id)"
        writes.append(AggregateWrite({"Put": put}, counted[key]))
    return writes


def commit_aggregates(dynamodb: Any, writes: list[AggregateWrite]) -> set[Identity]:
    """Writes the aggregates in TransactWriteItems calls of at most 100 writes and 4 MB; returns the readings
    of the writes DynamoDB refused (a condition, a conflict, throttling) after its client's own retries."""
    uncommitted: set[Identity] = set()
    for transaction in batches(
        writes, max_items=TRANSACT_MAX_ITEMS, max_bytes=TRANSACT_MAX_JSON_CHARS, size=lambda w: w.json_size
    ):
        try:
            dynamodb.transact_write_items(TransactItems=[write.request for write in transaction])
        except AWS_ERRORS as error:
            logger.warning("Aggregates were not written", count=len(transaction), error=str(error))
            uncommitted |= {identity for write in transaction for identity in write.readings}
    return uncommitted


def publish_breaches(sns: Any, topic_arn: str, breaches: list[Breach]) -> set[Identity]:
    """Publishes an alert per breach; returns the readings with an alert SNS did not take."""
    unpublished: set[Identity] = set()
    for start in range(0, len(breaches), PUBLISH_BATCH_MAX_ENTRIES):
        chunk = breaches[start : start + PUBLISH_BATCH_MAX_ENTRIES]
        entries = [
            # Metric values are Decimals; JSON carries them as numbers.
            {"Id": str(index), "Message": json.dumps(asdict(breach), default=float)}
            for index, breach in enumerate(chunk)
        ]
        try:
            response = sns.publish_batch(TopicArn=topic_arn, PublishBatchRequestEntries=entries)
        except AWS_ERRORS as error:
            logger.warning("Alerts were not published", count=len(chunk), error=str(error))
            unpublished |= {breach.identity for breach in chunk}
            continue
        if response["Failed"]:
            logger.warning("SNS refused alerts", failed=response["Failed"])
        unpublished |= {chunk[int(failure["Id"])].identity for failure in response["Failed"]}
    return unpublished


def _until_processed(
    call: Callable[..., dict[str, Any]],
    request_items: dict[str, Any],
    unprocessed_key: str,
    max_attempts: int,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Sends a DynamoDB batch request, then resends what it left unprocessed (all of it, if the call failed),
    with backoff. Returns the responses, and what was still unprocessed after max_attempts."""
    responses = []
    for attempt in range(max_attempts):
        if attempt:
            _sleep_before_retry(attempt)
        try:
            response = call(RequestItems=request_items)
        except AWS_ERRORS as error:
            logger.warning("A DynamoDB batch call failed", attempt=attempt + 1, error=str(error))
            continue
        responses.append(response)
        request_items = response.get(unprocessed_key) or {}
        if not request_items:
            break
    return responses, request_items


def _sleep_before_retry(attempt: int) -> None:
    """Exponential backoff with full jitter."""
    time.sleep(random.uniform(0, min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2**attempt)))


def failed_records(unpacked: Mapping[str, Unpacked], unstored: set[Identity]) -> list[str]:
    """The sequence numbers of the records with a reading that cannot be stored, or that was not."""
    return [
        sequence_number
        for sequence_number, record in unpacked.items()
        if record.problems or any(reading.identity in unstored for reading in record.readings)
    ]


CONFIG = Config.from_env(os.environ)
logger = Logger()
tracer = Tracer()
metrics = Metrics()
dynamodb = boto3.client("dynamodb")
sns = boto3.client("sns")
# Caches for POWERTOOLS_PARAMETERS_MAX_AGE seconds, so operators' changes arrive without a deploy.
ssm = SSMProvider(boto3_client=boto3.client("ssm"))


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
@event_source(data_class=KinesisStreamEvent)
def handler(event: KinesisStreamEvent, context: LambdaContext) -> PartialItemFailureResponse:
    unpacked = {
        record.kinesis.sequence_number: unpack(record.kinesis.data_as_bytes()) for record in event.records
    }
    for sequence_number, record in unpacked.items():
        if record.problems:
            logger.warning(
                "Readings that cannot be stored",
                sequence_number=sequence_number,
                problem_count=len(record.problems),
                problems=[asdict(problem) for problem in record.problems[:MAX_LOGGED_PROBLEMS]],
            )
    invalid = sum(bool(record.problems) for record in unpacked.values())
    metrics.add_metric(name="InvalidRecords", unit=MetricUnit.Count, value=invalid)

    readings = [reading for record in unpacked.values() for reading in record.readings]
    unstored: set[Identity] = set()
    if readings:
        thresholds = parse_thresholds(ssm.get(CONFIG.thresholds_parameter_name, transform="json"))
        outcome = store_readings(readings, thresholds, CONFIG, dynamodb, sns)
        unstored = outcome.unstored
        metrics.add_metric(name="StoredReadings", unit=MetricUnit.Count, value=outcome.stored)
        metrics.add_metric(name="CountedReadings", unit=MetricUnit.Count, value=outcome.counted)
        metrics.add_metric(name="ThresholdBreaches", unit=MetricUnit.Count, value=outcome.breaches)
        metrics.add_metric(name="UnstoredReadings", unit=MetricUnit.Count, value=len(unstored))
    failed = failed_records(unpacked, unstored)
    metrics.add_metric(name="FailedRecords", unit=MetricUnit.Count, value=len(failed))
    return {"batchItemFailures": [{"itemIdentifier": sequence_number} for sequence_number in failed]}
