"""POST /v1/readings: validate sensor readings and put them on the Kinesis stream, packed into records.

A request is checked as a whole: a body that is not JSON text gets a 415 or a 400, a reading that cannot be
stored a 400 naming every problem, and then nothing is written. Nor is anything written for a valid request
that names a device not registered to the calling API client (403, naming such devices), or that comes while
the device registry cannot be read (503: never "allow all"; see readings.ownership). A reading that the
request repeats (the same device, millisecond and values) is sent once and counted as a duplicate; two
different readings of one device and millisecond are refused, since only one of them could be stored. The
readings are packed into as few stream records as fit (readings.pack), which go to Kinesis in PutRecords
calls; refused records (and only those) are retried with backoff. Readings still not on the stream get a
503 that names them, so that a client resends exactly those.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import random
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent, event_source
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.exceptions import BotoCoreError, ClientError
from readings import (
    EPOCH,
    ONE_MILLISECOND,
    Identity,
    InvalidJson,
    Problem,
    Reading,
    Record,
    batches,
    epoch_ms,
    pack,
    parse_json,
    reading_problems,
)
from readings.ownership import RedisSettings, Registry, SharedRedis
from readings.settings import positive_int, required

MEDIA_TYPE = "application/json"
PUT_RECORDS_MAX_ENTRIES = 500  # Kinesis PutRecords limits
PUT_RECORDS_MAX_BYTES = 5 * 1024 * 1024  # data and partition keys
# Lambda takes requests of up to 6 MB; a body of at most 4 MiB fits even base64-encoded (4/3 of it).
MAX_BODY_BYTES_LIMIT = 4 * 1024 * 1024
BACKOFF_BASE_SECONDS = 0.1
BACKOFF_CAP_SECONDS = 2.0
# Every problem is counted; the list is cut so a 400 stays far below Lambda's 6 MB response limit.
MAX_LISTED_PROBLEMS = 1000


@dataclass(frozen=True)
class Config:
    stream_name: str
    max_batch_size: int
    max_body_bytes: int
    max_reading_age: timedelta
    max_clock_skew: timedelta
    put_records_max_attempts: int
    redis: RedisSettings

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Config:
        max_body_bytes = positive_int(env, "MAX_BODY_BYTES")
        if max_body_bytes > MAX_BODY_BYTES_LIMIT:
            raise ValueError(f"MAX_BODY_BYTES is {max_body_bytes}; set it to at most {MAX_BODY_BYTES_LIMIT}")
        return cls(
            stream_name=required(env, "STREAM_NAME"),
            max_batch_size=positive_int(env, "MAX_BATCH_SIZE"),
            max_body_bytes=max_body_bytes,
            max_reading_age=timedelta(seconds=positive_int(env, "MAX_READING_AGE_SECONDS")),
            max_clock_skew=timedelta(seconds=positive_int(env, "MAX_CLOCK_SKEW_SECONDS")),
            put_records_max_attempts=positive_int(env, "PUT_RECORDS_MAX_ATTEMPTS"),
            redis=RedisSettings.from_env(env),
        )


class InvalidRequest(Exception):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(f"{len(problems)} problems")
        self.problems = problems


@dataclass(frozen=True)
class Sent:
    """One reading of the request: where it was, and what identifies it to the client."""

    index: int
    device_id: str
    timestamp: str | int  # as sent


@dataclass
class Distinct:
    """A reading to put on the stream, and each place the request holds it: the first, then its repeats."""

    reading: Reading
    sent: list[Sent] = field(default_factory=list)


@dataclass(frozen=True)
class Refused:
    index: int
    device_id: str
    timestamp: str | int
    error_code: str


def media_type_problem(content_type: str | None) -> str | None:
    """Why a body of this Content-Type is not one this function reads, if it is not: only JSON, in UTF-8."""
    if content_type is None:
        return f"the request has no Content-Type; send {MEDIA_TYPE}"
    media_type, *parameters = content_type.split(";")
    if media_type.strip().lower() != MEDIA_TYPE:
        return f"the Content-Type is {content_type!r}; send {MEDIA_TYPE}"
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() != "utf-8":
            return f"the Content-Type is {content_type!r}; JSON is sent in utf-8"
    return None


def request_body(body: str | None, is_base64_encoded: bool, max_bytes: int) -> str:
    """The body as text: base64-decoded if API Gateway encoded it, and UTF-8. Raises InvalidRequest if not."""
    if is_base64_encoded:
        try:
            data = base64.b64decode(body or "", validate=True)
        except (binascii.Error, ValueError):
            raise InvalidRequest(
                [Problem("$", "the body is marked base64-encoded but is not base64")]
            ) from None
    else:
        try:
            data = (body or "").encode()
        except UnicodeEncodeError as error:
            problem = f"the body is not Unicode text: {error.reason} at character {error.start}"
            raise InvalidRequest([Problem("$", problem)]) from None
    if len(data) > max_bytes:
        raise InvalidRequest([Problem("$", f"body is {len(data)} bytes; the limit is {max_bytes}")])
    try:
        return data.decode()
    except UnicodeDecodeError as error:
        raise InvalidRequest(
            [Problem("$", f"the body is not UTF-8: {error.reason} at byte {error.start}")]
        ) from None


def parse_readings(body: str, config: Config, now: datetime) -> list[Distinct]:
    """The request's distinct readings, in request order; raises InvalidRequest naming every problem."""
    try:
        document = parse_json(body)
    except InvalidJson as error:
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
    distinct: dict[Identity, Distinct] = {}
    for index, (path, item) in enumerate(items):
        item_problems = _reading_problems(path, item, config, now)
        if item_problems:
            problems += item_problems
            continue
        reading = Reading.from_document(item)
        first = distinct.setdefault(reading.identity, Distinct(reading))
        if first.reading != reading:
            problems.append(
                Problem(
                    path,
                    f"has the device_id and the timestamp (to the millisecond) of $[{first.sent[0].index}] "
                    "but other values; only one of them can be stored",
                )
            )
        else:
            first.sent.append(Sent(index, item["device_id"], item["timestamp"]))
    if problems:
        raise InvalidRequest(problems)
    return list(distinct.values())


def _reading_problems(path: str, item: Any, config: Config, now: datetime) -> list[Problem]:
    """What stops the item from being stored, and whether its time is within what this function accepts."""
    problems = reading_problems(item, path)
    timestamp_path = f"{path}.timestamp"
    if isinstance(item, dict) and "timestamp" in item and all(p.path != timestamp_path for p in problems):
        problems += _age_problems(timestamp_path, item["timestamp"], config, now)
    return problems


def _age_problems(path: str, timestamp: str | int, config: Config, now: datetime) -> list[Problem]:
    milliseconds = epoch_ms(timestamp)
    if milliseconds < (now - config.max_reading_age - EPOCH) // ONE_MILLISECOND:
        return [Problem(path, f"is more than {config.max_reading_age.total_seconds():.0f} s in the past")]
    if milliseconds > (now + config.max_clock_skew - EPOCH) // ONE_MILLISECOND:
        return [Problem(path, f"is more than {config.max_clock_skew.total_seconds():.0f} s in the future")]
    return []


def put_readings(
    kinesis: Any, stream_name: str, distinct: list[Distinct], max_attempts: int
) -> list[tuple[Distinct, str]]:
    """Puts every reading on the stream, packed; returns those Kinesis still refused, with its error code."""
    records = pack([entry.reading for entry in distinct])
    return [
        (distinct[position], error_code)
        for record, error_code in put_records(kinesis, stream_name, records, max_attempts)
        for position in record.readings
    ]


def put_records(
    kinesis: Any, stream_name: str, records: list[Record], max_attempts: int
) -> list[tuple[Record, str]]:
    """Puts the records in PutRecords calls; returns those still refused after max_attempts, with why."""
    refused = []
    for call in batches(
        records, max_items=PUT_RECORDS_MAX_ENTRIES, max_bytes=PUT_RECORDS_MAX_BYTES, size=lambda r: r.size
    ):
        refused += _put_call(kinesis, stream_name, call, max_attempts)
    return refused


def _put_call(
    kinesis: Any, stream_name: str, pending: list[Record], max_attempts: int
) -> list[tuple[Record, str]]:
    failed: list[tuple[Record, str]] = []
    for attempt in range(max_attempts):
        if attempt:
            _sleep_before_retry(attempt)
        entries = [{"Data": record.data, "PartitionKey": record.partition_key} for record in pending]
        try:
            response = kinesis.put_records(StreamName=stream_name, Records=entries)
        # The call failed as a whole (throttled beyond the client's own retries, a timeout, ...): whether or
        # not Kinesis took some of the records, sending them again is harmless; readings have identities.
        except (BotoCoreError, ClientError) as error:
            code = error.response["Error"]["Code"] if isinstance(error, ClientError) else type(error).__name__
            failed = [(record, code) for record in pending]
            continue
        # Results are in request order; a failed entry carries an ErrorCode.
        failed = [
            (record, result["ErrorCode"])
            for record, result in zip(pending, response["Records"], strict=True)
            if "ErrorCode" in result
        ]
        if not failed:
            return []
        pending = [record for record, _ in failed]
    return failed


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
registry = Registry(SharedRedis(CONFIG.redis, boto3.client("secretsmanager")))


@logger.inject_lambda_context
@tracer.capture_lambda_handler(capture_response=False)  # a 400 can outgrow X-Ray's 64 KB segment limit
@metrics.log_metrics
@event_source(data_class=APIGatewayProxyEvent)
def handler(event: APIGatewayProxyEvent, context: LambdaContext) -> dict[str, Any]:
    unsupported = media_type_problem(event.headers.get("content-type"))
    if unsupported:
        metrics.add_metric(name="InvalidRequests", unit=MetricUnit.Count, value=1)
        return _response(415, {"message": unsupported})
    try:
        body = request_body(event.body, bool(event.is_base64_encoded), CONFIG.max_body_bytes)
        distinct = parse_readings(body, CONFIG, datetime.now(UTC))
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

    refusal = registry.refusal(
        event.request_context.identity.api_key_id, {entry.reading.device_id for entry in distinct}
    )
    if refusal:
        metrics.add_metric(
            name="RegistryUnavailable" if refusal.status_code == 503 else "ForbiddenRequests",
            unit=MetricUnit.Count,
            value=1,
        )
        logger.warning(
            "Refused by the device registry",
            status_code=refusal.status_code,
            refusal=refusal.body,
            cause=refusal.cause,
        )
        return _response(refusal.status_code, refusal.body)

    refused = put_readings(kinesis, CONFIG.stream_name, distinct, CONFIG.put_records_max_attempts)
    accepted = len(distinct) - len(refused)
    duplicates = sum(len(entry.sent) - 1 for entry in distinct)
    metrics.add_metric(name="AcceptedReadings", unit=MetricUnit.Count, value=accepted)
    metrics.add_metric(name="DuplicateReadings", unit=MetricUnit.Count, value=duplicates)
    if refused:
        named = sorted(
            (
                Refused(sent.index, sent.device_id, sent.timestamp, code)
                for entry, code in refused
                for sent in entry.sent
            ),
            key=lambda reading: reading.index,
        )
        metrics.add_metric(name="RefusedReadings", unit=MetricUnit.Count, value=len(named))
        logger.warning("Kinesis refused readings", refused=[asdict(reading) for reading in named])
        return _response(
            503,
            {
                "message": "some readings were not accepted; resend exactly those",
                "accepted": accepted,
                "duplicates": duplicates,
                "refused": [asdict(reading) for reading in named],
            },
        )
    return _response(202, {"accepted": accepted, "duplicates": duplicates})
