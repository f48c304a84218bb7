"""POST /v1/readings: validate sensor readings and put them on the Kinesis stream.

A request is validated as a whole: any problem gets a 400 that names every problem, and nothing is written.
Valid readings go to Kinesis in PutRecords calls of at most 500 entries; refused entries (and only those)
are retried with backoff. Readings still refused get a 503 that names them, so a client resends exactly those.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import fastjsonschema
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent, event_source
from aws_lambda_powertools.utilities.typing import LambdaContext

PUT_RECORDS_MAX_ENTRIES = 500  # Kinesis PutRecords limit
# A body of at most 4 MiB keeps every PutRecords call under its 5 MiB limit (canonical records add
# little: a longer timestamp and the partition key), so calls are split by count only.
MAX_BODY_BYTES_LIMIT = 4 * 1024 * 1024
BACKOFF_BASE_SECONDS = 0.1
BACKOFF_CAP_SECONDS = 2.0
# Every problem is counted; the list is cut so a 400 stays far below Lambda's 6 MB response limit.
MAX_LISTED_PROBLEMS = 1000
# DynamoDB rejects non-zero numbers smaller than this in magnitude; the stream must not carry them.
DYNAMODB_MIN_MAGNITUDE = 1e-130
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_MILLISECOND = timedelta(milliseconds=1)
DRAFT_04 = "http://json-schema.org/draft-04/schema#"
# What compile_check understands on an object schema; it refuses a schema that needs more.
OBJECT_KEYWORDS = {
    "$schema",
    "title",
    "description",
    "type",
    "required",
    "properties",
    "patternProperties",
    "additionalProperties",
    "minProperties",
    "maxProperties",
}


@dataclass(frozen=True)
class Config:
    stream_name: str
    max_batch_size: int
    max_body_bytes: int
    max_reading_age: timedelta
    max_clock_skew: timedelta
    put_records_max_attempts: int

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Config:
        max_body_bytes = _positive_int(env, "MAX_BODY_BYTES")
        if max_body_bytes > MAX_BODY_BYTES_LIMIT:
            raise ValueError(f"MAX_BODY_BYTES is {max_body_bytes}; set it to at most {MAX_BODY_BYTES_LIMIT}")
        return cls(
            stream_name=_required(env, "STREAM_NAME"),
            max_batch_size=_positive_int(env, "MAX_BATCH_SIZE"),
            max_body_bytes=max_body_bytes,
            max_reading_age=timedelta(seconds=_positive_int(env, "MAX_READING_AGE_SECONDS")),
            max_clock_skew=timedelta(seconds=_positive_int(env, "MAX_CLOCK_SKEW_SECONDS")),
            put_records_max_attempts=_positive_int(env, "PUT_RECORDS_MAX_ATTEMPTS"),
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


@dataclass(frozen=True)
class Problem:
    path: str
    message: str


class InvalidRequest(Exception):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(f"{len(problems)} problems")
        self.problems = problems


@dataclass(frozen=True)
class Reading:
    """A valid reading: where it was in the request, what identifies it to the client, its stream record."""

    index: int
    device_id: str
    timestamp: str | int
    data: bytes


@dataclass(frozen=True)
class Refused:
    index: int
    device_id: str
    timestamp: str | int
    error_code: str


class _NonFinite:
    """NaN and Infinity are not JSON, yet Python parses them: they become this, which no schema allows."""


def _non_finite(literal: str) -> _NonFinite:
    return _NonFinite()


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Rejects an object that repeats a key: which of the values would be the reading?"""
    document = dict(pairs)
    if len(document) != len(pairs):
        duplicates = sorted(key for key, count in Counter(key for key, _ in pairs).items() if count > 1)
        raise ValueError(f"duplicate keys {duplicates}")
    return document


def parse_readings(body: str, config: Config, now: datetime) -> list[Reading]:
    """The request's readings with their stream records; raises InvalidRequest naming every problem."""
    size = len(body.encode())
    if size > config.max_body_bytes:
        raise InvalidRequest([Problem("$", f"body is {size} bytes; the limit is {config.max_body_bytes}")])
    try:
        document = json.loads(body, parse_constant=_non_finite, object_pairs_hook=_unique_keys)
    except ValueError as error:
        raise InvalidRequest([Problem("$", f"body is not valid JSON: {error}")]) from None

    if isinstance(document, dict):
        items = [("$", document)]
    elif isinstance(document, list):
        items = [(f"$[{index}]", item) for index, item in enumerate(document)]
    else:
        raise InvalidRequest([Problem("$", "body must be a reading object or an array of readings")])

    problems = []
    if not items:
        problems.append(Problem("$", "batch is empty"))
    if len(items) > config.max_batch_size:
        problems.append(
            Problem("$", f"batch has {len(items)} readings; the limit is {config.max_batch_size}")
        )
    readings = []
    for index, (path, item) in enumerate(items):
        item_problems = _reading_problems(path, item, config, now)
        problems += item_problems
        if not item_problems:
            timestamp_ms = _epoch_ms(item["timestamp"])
            canonical = {**item, "timestamp": _canonical_timestamp(timestamp_ms)}
            data = json.dumps(canonical, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
            readings.append(Reading(index, item["device_id"], item["timestamp"], data))
    if problems:
        raise InvalidRequest(problems)
    return readings


Check = Callable[[Any, str], list[Problem]]


def compile_check(schema: Mapping[str, Any]) -> Check:
    """A check naming every problem of a value against a draft-04 schema.

    A closed object is checked member by member, so each bad member is named; any other value by
    fastjsonschema, which names its first problem. (fastjsonschema collects every error only from 2.22,
    newer than the one the Powertools layer bundles.)
    """
    if schema.get("type") != "object":
        return _value_check(fastjsonschema.compile({"$schema": DRAFT_04, **schema}))
    unsupported = schema.keys() - OBJECT_KEYWORDS
    if unsupported or schema.get("additionalProperties") is not False:
        raise ValueError(f"compile_check needs closed objects without {sorted(unsupported)}")
    required = schema.get("required", [])
    fewest, most = schema.get("minProperties", 0), schema.get("maxProperties", math.inf)
    properties = {name: compile_check(member) for name, member in schema.get("properties", {}).items()}
    # The schema's patterns are anchored (^...$); fullmatch also refuses the trailing newline $ lets through.
    patterns = [
        (re.compile(pattern), compile_check(member))
        for pattern, member in schema.get("patternProperties", {}).items()
    ]

    def check(value: Any, path: str) -> list[Problem]:
        if not isinstance(value, dict):
            return [Problem(path, "must be object")]
        problems = [Problem(f"{path}.{name}", "is required") for name in required if name not in value]
        if len(value) < fewest:
            problems.append(Problem(path, f"must have at least {fewest} members"))
        if len(value) > most:
            problems.append(Problem(path, f"must have at most {most} members"))
        for key, member in value.items():
            member_check = properties.get(key) or next((c for p, c in patterns if p.fullmatch(key)), None)
            if member_check is None:
                problems.append(Problem(f"{path}.{key}", "is not allowed"))
            else:
                problems += member_check(member, f"{path}.{key}")
        return problems

    return check


def _value_check(validate: Callable[[Any], Any]) -> Check:
    def check(value: Any, path: str) -> list[Problem]:
        try:
            validate(value)
        except fastjsonschema.JsonSchemaValueException as error:
            return [Problem(path, error.message.removeprefix("data "))]
        return []

    return check


check_reading = compile_check(json.loads((Path(__file__).parent / "reading_schema.json").read_text()))


def _reading_problems(path: str, item: Any, config: Config, now: datetime) -> list[Problem]:
    problems = check_reading(item, path)
    if not isinstance(item, dict):
        return problems

    metrics = item.get("metrics")
    if isinstance(metrics, dict):
        problems += [
            Problem(f"{path}.metrics.{name}", f"must be 0 or at least {DYNAMODB_MIN_MAGNITUDE} in magnitude")
            for name, value in metrics.items()
            if isinstance(value, float) and 0 < abs(value) < DYNAMODB_MIN_MAGNITUDE
        ]
    if "timestamp" in item and not any(problem.path == f"{path}.timestamp" for problem in problems):
        problems += _timestamp_problems(f"{path}.timestamp", item["timestamp"], config, now)
    return problems


def _timestamp_problems(path: str, timestamp: str | int, config: Config, now: datetime) -> list[Problem]:
    try:
        timestamp_ms = _epoch_ms(timestamp)
    except ValueError as error:
        return [Problem(path, f"is not a valid date and time: {error}")]
    if timestamp_ms < _ms_since_epoch(now - config.max_reading_age):
        return [Problem(path, f"is more than {config.max_reading_age.total_seconds():.0f} s in the past")]
    if timestamp_ms > _ms_since_epoch(now + config.max_clock_skew):
        return [Problem(path, f"is more than {config.max_clock_skew.total_seconds():.0f} s in the future")]
    return []


def _epoch_ms(timestamp: str | int) -> int:
    if isinstance(timestamp, int):
        return timestamp
    return _ms_since_epoch(datetime.fromisoformat(timestamp))


def _ms_since_epoch(moment: datetime) -> int:
    return (moment - EPOCH) // ONE_MILLISECOND


def _canonical_timestamp(epoch_ms: int) -> str:
    """UTC with milliseconds, e.g. 2026-11-23T17:04:05.123Z: one fixed-width form, so it sorts as text."""
    moment = EPOCH + epoch_ms * ONE_MILLISECOND
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def put_readings(kinesis: Any, stream_name: str, readings: list[Reading], max_attempts: int) -> list[Refused]:
    """Puts every reading on the stream; returns those Kinesis still refused after max_attempts."""
    refused: list[Refused] = []
    for start in range(0, len(readings), PUT_RECORDS_MAX_ENTRIES):
        chunk = readings[start : start + PUT_RECORDS_MAX_ENTRIES]
        refused += _put_chunk(kinesis, stream_name, chunk, max_attempts)
    return refused


def _put_chunk(kinesis: Any, stream_name: str, pending: list[Reading], max_attempts: int) -> list[Refused]:
    failed: list[tuple[Reading, str]] = []
    for attempt in range(max_attempts):
        if attempt:
            _sleep_before_retry(attempt)
        response = kinesis.put_records(
            StreamName=stream_name,
            Records=[{"Data": reading.data, "PartitionKey": reading.device_id} for reading in pending],
        )
        # Results are in request order; a failed entry carries an ErrorCode.
        failed = [
            (reading, result["ErrorCode"])
            for reading, result in zip(pending, response["Records"], strict=True)
            if "ErrorCode" in result
        ]
        if not failed:
            return []
        pending = [reading for reading, _ in failed]
    return [Refused(reading.index, reading.device_id, reading.timestamp, code) for reading, code in failed]


def _sleep_before_retry(attempt: int) -> None:
    """Exponential backoff with full jitter, so retrying clients spread out instead of colliding again."""
    time.sleep(random.uniform(0, min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2**attempt)))


def _response(status_code: int, body: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "statusCode": status_code,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps(body),
    }


CONFIG = Config.from_env(os.environ)
logger = Logger()
tracer = Tracer()
metrics = Metrics()
kinesis = boto3.client("kinesis")


@logger.inject_lambda_context
@tracer.capture_lambda_handler(capture_response=False)  # a 400 can outgrow X-Ray's 64 KB segment limit
@metrics.log_metrics
@event_source(data_class=APIGatewayProxyEvent)
def handler(event: APIGatewayProxyEvent, context: LambdaContext) -> dict[str, Any]:
    try:
        readings = parse_readings(event.body or "", CONFIG, datetime.now(UTC))
    except InvalidRequest as invalid:
        metrics.add_metric(name="InvalidRequests", unit=MetricUnit.Count, value=1)
        logger.info("Invalid request", problem_count=len(invalid.problems))
        return _response(
            400,
            {
                "message": "the request is invalid; nothing was accepted",
                "problem_count": len(invalid.problems),
                "problems": [asdict(problem) for problem in invalid.problems[:MAX_LISTED_PROBLEMS]],
            },
        )

    refused = put_readings(kinesis, CONFIG.stream_name, readings, CONFIG.put_records_max_attempts)
    accepted = len(readings) - len(refused)
    metrics.add_metric(name="AcceptedReadings", unit=MetricUnit.Count, value=accepted)
    if refused:
        metrics.add_metric(name="RefusedReadings", unit=MetricUnit.Count, value=len(refused))
        logger.warning("Kinesis refused readings", refused=[asdict(reading) for reading in refused])
        return _response(
            503,
            {
                "message": "some readings were not accepted; resend exactly those",
                "accepted": accepted,
                "refused": [asdict(reading) for reading in refused],
            },
        )
    return _response(202, {"accepted": accepted})
