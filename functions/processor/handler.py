"""Kinesis -> DynamoDB: store raw readings, keep per-minute aggregates exactly once, alert on thresholds.

A reading is identified by (device_id, timestamp). Raw items are keyed by it, so rewriting one is harmless.
The aggregate item of a device and minute lists the readings it has counted (their millisecond of the
minute) and changes only by one conditional write that carries the new totals together with that list.
There is no moment at which a reading is counted but not marked, or marked but not counted: a crash
leaves the old item or the new one, and a replay (of a record, or of a reading a client sent twice)
skips what the item has already counted. No separate idempotency store is needed.

Records that cannot be decoded or stored are reported as batch item failures, so after the mapping's
bounded retries they go to its on-failure destination. Anything else that fails (DynamoDB or SNS still
refusing after retries, a conflicting write) fails the invocation: Lambda retries the batch, harmlessly.
"""

from __future__ import annotations

import json
import os
import random
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.kinesis_stream_event import KinesisStreamRecord
from aws_lambda_powertools.utilities.parameters import SSMProvider
from aws_lambda_powertools.utilities.typing import LambdaContext

# The stream carries what ingest writes: a reading valid against functions/ingest/reading_schema.json,
# serialized with its timestamp in one canonical form. This function cannot import ingest's files, and it
# only needs to know that a record is storable, so it checks that with its own few rules; the patterns it
# shares with the schema are kept equal to it by tests/functions/test_contract.py.
DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
METRIC_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
CANONICAL_TIMESTAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z")
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
MINUTE_FORMAT = "%Y-%m-%dT%H:%MZ"
REQUIRED_FIELDS = {"device_id", "timestamp", "metrics"}
OPTIONAL_FIELDS = {"sequence", "firmware"}
# Ingest's bounds for metric values, within DynamoDB's numbers (38 significant digits, magnitude at least
# 1e-130) and low enough that per-minute sums stay within them too.
MAX_MAGNITUDE = Decimal("1e15")
MIN_MAGNITUDE = Decimal("1e-130")
MAX_DIGITS = 38

BATCH_WRITE_MAX_ITEMS = 25
BATCH_GET_MAX_KEYS = 100
TRANSACT_MAX_ITEMS = 100
# TransactWriteItems accepts 4 MB; a write's JSON is longer than its DynamoDB size, so this is a safe bound.
TRANSACT_MAX_JSON_CHARS = 4_000_000
PUBLISH_BATCH_MAX_ENTRIES = 10
BACKOFF_BASE_SECONDS = 0.1
BACKOFF_CAP_SECONDS = 2.0

Number = int | Decimal
AggregateKey = tuple[str, str]  # (device_id, minute)


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
            raw_table_name=_required(env, "RAW_TABLE_NAME"),
            aggregates_table_name=_required(env, "AGGREGATES_TABLE_NAME"),
            alert_topic_arn=_required(env, "ALERT_TOPIC_ARN"),
            thresholds_parameter_name=_required(env, "THRESHOLDS_PARAMETER_NAME"),
            reading_ttl=timedelta(days=_positive_int(env, "READING_TTL_DAYS")),
            aggregate_ttl=timedelta(days=_positive_int(env, "AGGREGATE_TTL_DAYS")),
            dynamodb_max_attempts=_positive_int(env, "DYNAMODB_MAX_ATTEMPTS"),
        )


def _required(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "")
    if not value:
        raise ValueError(f"environment variable {name} is required")
    return value


def _positive_int(env: Mapping[str, str], name: str) -> int:
    value = _required(env, name)
    if not (value.isascii() and value.isdigit() and int(value) > 0):
        raise ValueError(f"{name} is {value!r}; set it to a positive integer")
    return int(value)


class InvalidRecord(ValueError):
    pass


class NotProcessed(RuntimeError):
    """AWS still refused part of a request after the retries; the invocation fails and Lambda retries it."""


@dataclass(frozen=True)
class Reading:
    device_id: str
    timestamp: str  # canonical: UTC with milliseconds, e.g. 2026-11-23T17:04:05.123Z
    metrics: dict[str, Number]
    sequence: int | None
    firmware: str | None

    @property
    def minute(self) -> str:
        return self.timestamp[:16] + "Z"

    @property
    def millisecond_of_minute(self) -> int:
        return int(self.timestamp[17:19]) * 1000 + int(self.timestamp[20:23])


def decode_record(record: KinesisStreamRecord) -> Reading:
    """The record's reading; raises for a record that cannot be stored, so the batch reports it."""
    return decode_data(record.kinesis.data_as_bytes())


def decode_data(data: bytes) -> Reading:
    """The reading in a record's data; raises if it cannot be stored. The stream worker decodes with it."""
    return parse_reading(json.loads(data, parse_float=Decimal, parse_constant=_reject))


def _reject(literal: str) -> None:
    raise InvalidRecord(f"{literal} is not a JSON number")


def parse_reading(document: Any) -> Reading:
    if not isinstance(document, dict):
        raise InvalidRecord("record is not a JSON object")
    fields = document.keys()
    if not fields >= REQUIRED_FIELDS or fields - REQUIRED_FIELDS - OPTIONAL_FIELDS:
        raise InvalidRecord(f"record has fields {sorted(fields)}")
    device_id, timestamp, metrics = document["device_id"], document["timestamp"], document["metrics"]
    sequence, firmware = document.get("sequence"), document.get("firmware")
    if not (isinstance(device_id, str) and DEVICE_ID.fullmatch(device_id)):
        raise InvalidRecord(f"device_id {device_id!r} is not valid")
    if not (isinstance(timestamp, str) and CANONICAL_TIMESTAMP.fullmatch(timestamp)):
        raise InvalidRecord(f"timestamp {timestamp!r} is not canonical")
    datetime.strptime(timestamp, TIMESTAMP_FORMAT)  # rejects dates that do not exist
    if not (isinstance(metrics, dict) and metrics):
        raise InvalidRecord("metrics must be a non-empty object")
    for name, value in metrics.items():
        if not (METRIC_NAME.fullmatch(name) and _storable(value)):
            raise InvalidRecord(f"metric {name!r} = {value!r} is not valid")
    if sequence is not None and not (type(sequence) is int and sequence >= 0):
        raise InvalidRecord(f"sequence {sequence!r} is not a non-negative integer")
    if firmware is not None and not (isinstance(firmware, str) and firmware):
        raise InvalidRecord(f"firmware {firmware!r} is not a non-empty string")
    return Reading(device_id, timestamp, metrics, sequence, firmware)


def _storable(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        return False
    number = Decimal(value)
    magnitude = abs(number)
    in_range = magnitude <= MAX_MAGNITUDE and (magnitude == 0 or magnitude >= MIN_MAGNITUDE)
    return in_range and len(number.as_tuple().digits) <= MAX_DIGITS


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


def raw_item(reading: Reading, ttl: timedelta) -> dict[str, Any]:
    item: dict[str, Any] = {
        "device_id": {"S": reading.device_id},
        "timestamp": {"S": reading.timestamp},
        "metrics": {"M": {name: {"N": str(value)} for name, value in reading.metrics.items()}},
        "expires_at": {"N": str(_expires_at(reading.timestamp, TIMESTAMP_FORMAT, ttl))},
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
        "expires_at": {"N": str(_expires_at(aggregate.minute, MINUTE_FORMAT, ttl))},
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


def _expires_at(moment: str, moment_format: str, ttl: timedelta) -> int:
    """TTL counts from the reading's own time, so a replay writes the same item."""
    return int((datetime.strptime(moment, moment_format).replace(tzinfo=UTC) + ttl).timestamp())


@dataclass(frozen=True)
class Outcome:
    stored: int  # distinct readings written to the raw table
    counted: int  # readings newly counted in the aggregates; the others had been counted before
    breaches: int


def store_readings(
    readings: list[Reading], thresholds: dict[str, dict[str, float]], config: Config, dynamodb: Any, sns: Any
) -> Outcome:
    distinct = list({(reading.device_id, reading.timestamp): reading for reading in readings}.values())
    write_raw_readings(dynamodb, config, distinct)
    aggregates = load_aggregates(
        dynamodb, config, {(reading.device_id, reading.minute) for reading in distinct}
    )
    fresh, writes = count_readings(aggregates, distinct, config)
    breaches = find_breaches(fresh, thresholds)
    # Alerts go out before the readings are marked counted: a crash between repeats an alert, never loses one.
    publish_breaches(sns, config.alert_topic_arn, breaches)
    for transaction in group_transactions(writes):
        dynamodb.transact_write_items(TransactItems=transaction)
    return Outcome(stored=len(distinct), counted=len(fresh), breaches=len(breaches))


def write_raw_readings(dynamodb: Any, config: Config, readings: list[Reading]) -> None:
    for start in range(0, len(readings), BATCH_WRITE_MAX_ITEMS):
        chunk = readings[start : start + BATCH_WRITE_MAX_ITEMS]
        requests = [{"PutRequest": {"Item": raw_item(reading, config.reading_ttl)}} for reading in chunk]
        _until_processed(
            dynamodb.batch_write_item,
            {config.raw_table_name: requests},
            "UnprocessedItems",
            config.dynamodb_max_attempts,
        )


def load_aggregates(dynamodb: Any, config: Config, keys: set[AggregateKey]) -> dict[AggregateKey, Aggregate]:
    """The stored aggregate for each key, or an empty one; read consistently, as the writes build on them."""
    aggregates = {key: Aggregate(*key) for key in keys}
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
        for response in _until_processed(
            dynamodb.batch_get_item, request, "UnprocessedKeys", config.dynamodb_max_attempts
        ):
            for item in response["Responses"].get(config.aggregates_table_name, []):
                aggregate = aggregate_from_item(item)
                aggregates[(aggregate.device_id, aggregate.minute)] = aggregate
    return aggregates


def count_readings(
    aggregates: dict[AggregateKey, Aggregate], readings: list[Reading], config: Config
) -> tuple[list[Reading], list[dict[str, Any]]]:
    """Adds the readings not counted yet to their aggregates; returns them and the writes that commit them.

    Each write succeeds only if the item is still the version that was read.
    """
    versions: dict[AggregateKey, int] = {}
    fresh = []
    for reading in readings:
        key = (reading.device_id, reading.minute)
        aggregate = aggregates[key]
        if reading.millisecond_of_minute in aggregate.counted:
            continue
        versions.setdefault(key, aggregate.reading_count)
        aggregate.add(reading)
        fresh.append(reading)
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
        writes.append({"Put": put})
    return fresh, writes


def group_transactions(writes: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """Groups writes into TransactWriteItems calls: at most 100 writes and 4 MB each."""
    transaction: list[dict[str, Any]] = []
    size = 0
    for write in writes:
        write_size = len(json.dumps(write))
        if transaction and (
            len(transaction) == TRANSACT_MAX_ITEMS or size + write_size > TRANSACT_MAX_JSON_CHARS
        ):
            yield transaction
            transaction, size = [], 0
        transaction.append(write)
        size += write_size
    if transaction:
        yield transaction


def publish_breaches(sns: Any, topic_arn: str, breaches: list[Breach]) -> None:
    for start in range(0, len(breaches), PUBLISH_BATCH_MAX_ENTRIES):
        chunk = breaches[start : start + PUBLISH_BATCH_MAX_ENTRIES]
        entries = [
            # Metric values are Decimals; JSON carries them as numbers.
            {"Id": str(index), "Message": json.dumps(asdict(breach), default=float)}
            for index, breach in enumerate(chunk)
        ]
        response = sns.publish_batch(TopicArn=topic_arn, PublishBatchRequestEntries=entries)
        if response["Failed"]:
            raise NotProcessed(f"SNS refused alerts: {response['Failed']}")


def _until_processed(
    call: Callable[..., dict[str, Any]],
    request_items: dict[str, Any],
    unprocessed_key: str,
    max_attempts: int,
) -> list[dict[str, Any]]:
    """Sends a DynamoDB batch request, then resends what it left unprocessed, with backoff."""
    responses = []
    for attempt in range(max_attempts):
        if attempt:
            _sleep_before_retry(attempt)
        response = call(RequestItems=request_items)
        responses.append(response)
        request_items = response.get(unprocessed_key) or {}
        if not request_items:
            return responses
    raise NotProcessed(f"DynamoDB left {unprocessed_key} after {max_attempts} attempts")


def _sleep_before_retry(attempt: int) -> None:
    """Exponential backoff with full jitter."""
    time.sleep(random.uniform(0, min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2**attempt)))


CONFIG = Config.from_env(os.environ)
logger = Logger()
tracer = Tracer()
metrics = Metrics()
dynamodb = boto3.client("dynamodb")
sns = boto3.client("sns")
# Caches for POWERTOOLS_PARAMETERS_MAX_AGE seconds, so operators' changes arrive without a deploy.
ssm = SSMProvider(boto3_client=boto3.client("ssm"))
batch = BatchProcessor(event_type=EventType.KinesisDataStreams, raise_on_entire_batch_failure=False)


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    with batch(records=event["Records"], handler=decode_record):
        outcomes = batch.process()
    readings = [reading for status, reading, _ in outcomes if status == "success"]
    for status, error, record in outcomes:
        if status == "fail":
            logger.warning("Invalid record", sequence_number=record.kinesis.sequence_number, error=error)
    metrics.add_metric(name="InvalidRecords", unit=MetricUnit.Count, value=len(outcomes) - len(readings))

    if readings:
        thresholds = parse_thresholds(ssm.get(CONFIG.thresholds_parameter_name, transform="json"))
        outcome = store_readings(readings, thresholds, CONFIG, dynamodb, sns)
        metrics.add_metric(name="StoredReadings", unit=MetricUnit.Count, value=outcome.stored)
        metrics.add_metric(name="CountedReadings", unit=MetricUnit.Count, value=outcome.counted)
        metrics.add_metric(name="ThresholdBreaches", unit=MetricUnit.Count, value=outcome.breaches)
    return batch.response()
