"""The device routes of the API, each answered for the device's owner only:

- GET /v1/devices/{device_id}/readings?from=&to=&limit=&next_token=: the device's raw readings, oldest first,
  from DynamoDB (as long as the raw table's TTL keeps them).
- GET /v1/devices/{device_id}/latest: its newest reading, from Redis (the stream worker keeps it there).
- GET /v1/devices/{device_id}/rollups?from=&to=&resolution=hour|day&limit=&next_token=: count, sum, min, max
  and mean per metric and UTC hour or day, oldest first, from PostgreSQL's hourly rollups (kept for years).

A request is checked first (400 naming every bad parameter), then its caller: a device not registered to the
calling API client gets a 403, and a registry that cannot be read a 503 (readings.ownership). A store that
cannot be reached gets a 503 too.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import ssl
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

import boto3
import pg8000.native  # type: ignore[import-untyped]  # pg8000 ships no type information
from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent, event_source
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.exceptions import BotoCoreError
from readings import (
    CANONICAL_TIMESTAMP,
    DEVICE_ID,
    EPOCH,
    MAX_DECIMAL_PLACES,
    ONE_MILLISECOND,
    canonical_timestamp,
    rds,
)
from readings.ownership import RedisSettings, Registry, SharedRedis, Unavailable
from readings.settings import required
from redis import Redis, RedisCluster

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
READINGS_PARAMETERS = {"from", "to", "limit", "next_token"}
ROLLUPS_PARAMETERS = READINGS_PARAMETERS | {"resolution"}
EARLIEST = "0000-01-01T00:00:00.000Z"
LATEST = "9999-12-31T23:59:59.999Z"
# Readings start in 1970 (the schema), and PostgreSQL has no year 0.
EARLIEST_ROLLUP = canonical_timestamp(0)
RESOLUTIONS = {"hour": timedelta(hours=1), "day": timedelta(days=1)}
# A statement is cancelled by the server after STATEMENT_TIMEOUT_MS (a page of 1,000 days of 64 metrics takes
# some 3 s); the connection gives up on a server silent for longer (DATABASE_TIMEOUT_SECONDS, connecting
# included). At worst, a kept connection that fails and a new one that cannot connect: 8 s, within the
# function's timeout (10 s).
STATEMENT_TIMEOUT_MS = 3000
DATABASE_TIMEOUT_SECONDS = 4
STATEMENT_TIMEOUT_SQLSTATE = "57014"  # query_canceled
# SQLSTATE classes of a database that cannot serve now (connection exceptions, insufficient resources,
# operator intervention such as a failover's shutdown, and a refused login: RDS may refuse IAM logins when
# too many arrive): a new connection may succeed, and else it is a 503.
UNAVAILABLE_SQLSTATE_CLASSES = ("08", "28", "53", "57")


@dataclass(frozen=True)
class Config:
    raw_table_name: str
    redis: RedisSettings
    database: rds.DatabaseSettings

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Config:
        return cls(
            raw_table_name=required(env, "RAW_TABLE_NAME"),
            redis=RedisSettings.from_env(env),
            database=rds.DatabaseSettings.from_env(env),
        )


@dataclass(frozen=True)
class Problem:
    parameter: str
    message: str


class InvalidQuery(Exception):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(f"{len(problems)} problems")
        self.problems = problems


@dataclass(frozen=True)
class ReadingsQuery:
    device_id: str
    start: str  # canonical timestamps, both inclusive
    end: str
    limit: int
    start_key: dict[str, Any] | None


@dataclass(frozen=True)
class RollupsQuery:
    device_id: str
    resolution: str
    start: str  # canonical timestamps, both inclusive: the periods that begin within them
    end: str
    limit: int  # periods


def parse_readings_query(
    path_parameters: Mapping[str, str] | None, query_parameters: Mapping[str, str] | None
) -> ReadingsQuery:
    """The readings query the request asks for; raises InvalidQuery naming every problem."""
    parameters = query_parameters or {}
    problems = _unknown_parameters(parameters, READINGS_PARAMETERS)
    device_id = _device_id(path_parameters, problems)
    start, end = _range(parameters, EARLIEST, problems)
    limit = _limit(parameters, problems)
    start_key = None
    if "next_token" in parameters:
        start_key = _start_key(parameters["next_token"], device_id, start, end)
        if start_key is None:
            problems.append(Problem("next_token", "is not a token that this query returned"))
    if problems:
        raise InvalidQuery(problems)
    return ReadingsQuery(device_id, start, end, limit, start_key)


def parse_latest_query(
    path_parameters: Mapping[str, str] | None, query_parameters: Mapping[str, str] | None
) -> str:
    """The device whose latest reading the request asks for; raises InvalidQuery naming every problem."""
    problems = _unknown_parameters(query_parameters or {}, set())
    device_id = _device_id(path_parameters, problems)
    if problems:
        raise InvalidQuery(problems)
    return device_id


def parse_rollups_query(
    path_parameters: Mapping[str, str] | None, query_parameters: Mapping[str, str] | None
) -> RollupsQuery:
    """The rollups query the request asks for; raises InvalidQuery naming every problem.

    A page goes on from the period after its token's, so the token moves `start` on.
    """
    parameters = query_parameters or {}
    problems = _unknown_parameters(parameters, ROLLUPS_PARAMETERS)
    device_id = _device_id(path_parameters, problems)
    start, end = _range(parameters, EARLIEST_ROLLUP, problems)
    limit = _limit(parameters, problems)
    resolution = parameters.get("resolution", "hour")
    if resolution not in RESOLUTIONS:
        problems.append(Problem("resolution", f"{resolution!r} is not one of {', '.join(RESOLUTIONS)}"))
    elif "next_token" in parameters:
        after = _period_after(parameters["next_token"], device_id, resolution, start, end)
        if after is None:
            problems.append(Problem("next_token", "is not a token that this query returned"))
        else:
            start = after
    if problems:
        raise InvalidQuery(problems)
    return RollupsQuery(device_id, resolution, start, end, limit)


def _unknown_parameters(parameters: Mapping[str, str], known: set[str]) -> list[Problem]:
    return [Problem(name, "is not a parameter of this API") for name in sorted(parameters.keys() - known)]


def _device_id(path_parameters: Mapping[str, str] | None, problems: list[Problem]) -> str:
    device_id = (path_parameters or {}).get("device_id", "")
    if not DEVICE_ID.fullmatch(device_id):
        problems.append(Problem("device_id", f"{device_id!r} does not match {DEVICE_ID.pattern}"))
    return device_id


def _range(parameters: Mapping[str, str], earliest: str, problems: list[Problem]) -> tuple[str, str]:
    start = _timestamp(parameters, "from", earliest, problems)
    end = _timestamp(parameters, "to", LATEST, problems)
    if start > end:
        problems.append(Problem("from", "is after to"))
    return start, end


def _limit(parameters: Mapping[str, str], problems: list[Problem]) -> int:
    limit = parameters.get("limit", str(DEFAULT_LIMIT))
    if not (limit.isascii() and limit.isdigit() and 1 <= int(limit) <= MAX_LIMIT):
        problems.append(Problem("limit", f"{limit!r} is not a whole number from 1 to {MAX_LIMIT}"))
        return DEFAULT_LIMIT
    return int(limit)


def _timestamp(parameters: Mapping[str, str], name: str, default: str, problems: list[Problem]) -> str:
    """The parameter as a canonical timestamp; the default if it is absent or (noted as a problem) invalid."""
    if name not in parameters:
        return default
    text = parameters[name]
    try:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is not None:
            return canonical_timestamp((moment - EPOCH) // ONE_MILLISECOND)
    except (ValueError, OverflowError):
        pass
    problems.append(
        Problem(name, f"{text!r} is not an ISO-8601 date and time with a zone, e.g. 2026-11-23T17:04:00Z")
    )
    return default


def encode_token(position: Mapping[str, str]) -> str:
    """An opaque position: urlsafe base64 of its JSON, unpadded so it needs no URL escaping."""
    return base64.urlsafe_b64encode(json.dumps(position).encode()).decode().rstrip("=")


def _decode_token(token: str) -> Any:
    """The JSON a token holds; None if it holds none."""
    try:
        return json.loads(base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_", validate=True))
    except (binascii.Error, ValueError, RecursionError):  # RecursionError: JSON nested too deeply
        return None


def _start_key(token: str, device_id: str, start: str, end: str) -> dict[str, Any] | None:
    """The DynamoDB key a token stands for, if it is one this device's query could have returned."""
    key = _decode_token(token)
    valid = (
        isinstance(key, dict)
        and key.keys() == {"device_id", "timestamp"}
        and key["device_id"] == device_id
        and isinstance(key["timestamp"], str)
        and CANONICAL_TIMESTAMP.fullmatch(key["timestamp"]) is not None
        # DynamoDB rejects a start key outside the key condition.
        and start <= key["timestamp"] <= end
    )
    return {"device_id": {"S": device_id}, "timestamp": {"S": key["timestamp"]}} if valid else None


def _period_after(token: str, device_id: str, resolution: str, start: str, end: str) -> str | None:
    """The moment just after the period a token names, if it is one this query could have returned."""
    position = _decode_token(token)
    if not (
        isinstance(position, dict)
        and position.keys() == {"device_id", "resolution", "period"}
        and position["device_id"] == device_id
        and position["resolution"] == resolution
        and isinstance(position["period"], str)
        and CANONICAL_TIMESTAMP.fullmatch(position["period"]) is not None
        and start <= position["period"] <= end
    ):
        return None
    try:
        milliseconds = (datetime.fromisoformat(position["period"]) - EPOCH) // ONE_MILLISECOND
    except ValueError:  # the pattern lets through dates that do not exist
        return None
    if milliseconds % (RESOLUTIONS[resolution] // ONE_MILLISECOND):
        return None
    return canonical_timestamp(milliseconds + 1)


def query_readings(dynamodb: Any, table_name: str, query: ReadingsQuery) -> dict[str, Any]:
    request: dict[str, Any] = {
        "TableName": table_name,
        "KeyConditionExpression": "device_id = :device_id AND #timestamp BETWEEN :start AND :end",
        "ExpressionAttributeNames": {"#timestamp": "timestamp"},  # a reserved word
        "ExpressionAttributeValues": {
            ":device_id": {"S": query.device_id},
            ":start": {"S": query.start},
            ":end": {"S": query.end},
        },
        "Limit": query.limit,
    }
    if query.start_key:
        request["ExclusiveStartKey"] = query.start_key
    response = dynamodb.query(**request)
    last_key = response.get("LastEvaluatedKey")
    return {
        "device_id": query.device_id,
        "readings": [_reading(item) for item in response["Items"]],
        "next_token": (
            encode_token({"device_id": last_key["device_id"]["S"], "timestamp": last_key["timestamp"]["S"]})
            if last_key
            else None
        ),
    }


def _reading(item: Mapping[str, Any]) -> dict[str, Any]:
    reading: dict[str, Any] = {
        "timestamp": item["timestamp"]["S"],
        "metrics": {name: _number(value["N"]) for name, value in item["metrics"]["M"].items()},
    }
    if "sequence" in item:
        reading["sequence"] = int(item["sequence"]["N"])
    if "firmware" in item:
        reading["firmware"] = item["firmware"]["S"]
    return reading


def _number(text: str) -> int | float:
    return int(text) if text.lstrip("-").isdigit() else float(text)


def latest_reading_key(device_id: str) -> str:
    """Where the stream worker keeps a device's newest reading (stream_worker.worker.latest_reading_key): a
    hash whose field `reading` is the reading's canonical JSON (readings.Reading.data)."""
    return f"latest-reading:{device_id}"


def latest_reading(client: Redis | RedisCluster, device_id: str) -> dict[str, Any] | None:
    stored = client.hget(latest_reading_key(device_id), "reading")
    if stored is None:
        return None
    reading: dict[str, Any] = json.loads(stored)
    del reading["device_id"]
    return reading


# The page's periods are found first, one index probe each (PostgreSQL's recursive "loose index scan"):
# the first that has rows at or after `start`, then each next one, up to limit + 1 of them (the last only
# tells whether there are more). Only the page's own rows are then aggregated, however long the range.
# A period is in range if it begins within [start, end]; the `hour` bounds beside that let the primary key's
# index find the rows. Days are 24 UTC hours, whatever the session's time zone.
ROLLUPS_SQL = """
WITH RECURSIVE periods (period, n) AS (
    SELECT (
        SELECT date_trunc(:unit, hour, 'UTC') FROM hourly_rollups
        WHERE device_id = :device_id
            AND hour >= CAST(:start AS timestamptz)
            AND hour < CAST(:end AS timestamptz) + CAST(:step AS interval)
            AND date_trunc(:unit, hour, 'UTC') >= CAST(:start AS timestamptz)
            AND date_trunc(:unit, hour, 'UTC') <= CAST(:end AS timestamptz)
        ORDER BY hour LIMIT 1
    ), 1
    UNION ALL
    SELECT (
        SELECT date_trunc(:unit, hour, 'UTC') FROM hourly_rollups
        WHERE device_id = :device_id
            AND hour >= periods.period + CAST(:step AS interval)
            AND hour < CAST(:end AS timestamptz) + CAST(:step AS interval)
            AND date_trunc(:unit, hour, 'UTC') <= CAST(:end AS timestamptz)
        ORDER BY hour LIMIT 1
    ), n + 1
    FROM periods WHERE periods.period IS NOT NULL AND n <= :limit
),
page AS (SELECT min(period) AS first, max(period) AS last FROM periods WHERE n <= :limit),
stats AS (
    SELECT
        date_trunc(:unit, hour, 'UTC') AS period,
        metric,
        json_build_object(
            'count', sum(count)::bigint,
            'sum', trim_scale(sum(sum)),
            'min', trim_scale(min(min)),
            'max', trim_scale(max(max)),
            'mean', trim_scale(round(sum(sum) / sum(count), :mean_places))
        ) AS stats
    FROM hourly_rollups, page
    WHERE device_id = :device_id AND hour >= page.first AND hour < page.last + CAST(:step AS interval)
    GROUP BY 1, 2
),
rollups AS (
    SELECT period, json_object_agg(metric, stats ORDER BY metric) AS metrics FROM stats GROUP BY period
)
SELECT
    coalesce(
        json_agg(
            json_build_object('start', to_char(period AT TIME ZONE 'UTC', :format), 'metrics', metrics)
            ORDER BY period
        ),
        '[]'
    )::text,
    to_char(max(period) AT TIME ZONE 'UTC', :format),
    (SELECT count(period) > :limit FROM periods)
FROM rollups
"""
# PostgreSQL's to_char pattern of readings.canonical_timestamp's form.
CANONICAL_FORMAT = 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'


def query_rollups(database: Database, query: RollupsQuery) -> str:
    """A page of rollups, as the response's JSON text.

    PostgreSQL writes the page's JSON, and with it the numbers, exactly (numeric has no binary rounding;
    trim_scale drops trailing zeros). Python's json would write a Decimal only through a binary float, and an
    hour's or a day's sum can have more significant digits than a float keeps; and the driver, pure Python,
    reads one row far faster than one per period and metric. The mean is rounded, halves away from zero,
    to the values' own 6 decimal places.
    """
    ((rollups, last, more),) = database.run(
        ROLLUPS_SQL,
        device_id=query.device_id,
        unit=query.resolution,
        step=f"{RESOLUTIONS[query.resolution].total_seconds():.0f} seconds",
        start=query.start,
        end=query.end,
        limit=query.limit,
        mean_places=MAX_DECIMAL_PLACES,
        format=CANONICAL_FORMAT,
    )
    next_token = None
    if more:  # a period after the page's last
        next_token = encode_token(
            {"device_id": query.device_id, "resolution": query.resolution, "period": last}
        )
    return (
        f'{{"device_id":{json.dumps(query.device_id)},"resolution":"{query.resolution}",'
        f'"rollups":{rollups},"next_token":{json.dumps(next_token)}}}'
    )


class DatabaseUnavailable(Exception):
    """PostgreSQL cannot be reached, or cannot serve now."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(repr(error))
        self.timed_out = (
            isinstance(error, TimeoutError)
            or isinstance(error.__cause__, TimeoutError)
            or _sqlstate(error) == STATEMENT_TIMEOUT_SQLSTATE
        )


class Database:
    """One connection, kept across invocations and made again when it fails.

    As DATABASE_USER with an IAM authentication token (a password in tests), over TLS verified against the
    RDS certificate authorities with the host name checked (verify-full).
    """

    def __init__(self, settings: rds.DatabaseSettings) -> None:
        self._settings = settings
        self._connection: pg8000.native.Connection | None = None

    def run(self, sql: str, **parameters: Any) -> list[list[Any]]:
        """The statement's rows; raises DatabaseUnavailable if the database cannot serve.

        A connection kept from an earlier invocation that fails is made again, once: a Lambda frozen for a
        while, or a failover, finds it closed. Not when it timed out: a new one would only wait as long.
        """
        kept = self._connection is not None
        try:
            return self._run(sql, parameters)
        except DatabaseUnavailable as unavailable:
            if not kept or unavailable.timed_out:
                raise
            return self._run(sql, parameters)

    def _run(self, sql: str, parameters: dict[str, Any]) -> list[list[Any]]:
        try:
            if self._connection is None:
                self._connection = self._connect()
            rows: list[list[Any]] = self._connection.run(sql, **parameters)
            return rows
        # pg8000 wraps most network errors in InterfaceError, but lets some through (a reset connection).
        except (pg8000.native.InterfaceError, pg8000.native.DatabaseError, OSError) as error:
            if isinstance(error, pg8000.native.DatabaseError) and not _sqlstate(error).startswith(
                UNAVAILABLE_SQLSTATE_CLASSES
            ):
                raise
            self.close()
            raise DatabaseUnavailable(error) from error

    def _connect(self) -> pg8000.native.Connection:
        settings = self._settings
        try:
            password = settings.password or rds.auth_token(
                settings.host, settings.port, settings.user, settings.region
            )
            ssl_context = None
            if settings.tls:
                ssl_context = ssl.create_default_context(cafile=str(rds.ca_bundle(settings.region)))
            return pg8000.native.Connection(
                settings.user,
                host=settings.host,
                port=settings.port,
                database=settings.name,
                password=password,
                ssl_context=ssl_context,
                timeout=DATABASE_TIMEOUT_SECONDS,
                application_name="iot-query",
                startup_params={"statement_timeout": str(STATEMENT_TIMEOUT_MS)},
            )
        except (BotoCoreError, OSError) as error:  # no credentials to sign with; the CA bundle not fetched
            raise DatabaseUnavailable(error) from error

    def close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(pg8000.native.InterfaceError, OSError):  # broken already: dropped
                self._connection.close()
            self._connection = None


def _sqlstate(error: BaseException) -> str:
    """The SQLSTATE of an error PostgreSQL reported; "" for any other."""
    details = error.args[0] if isinstance(error, pg8000.native.DatabaseError) and error.args else None
    code = details.get("C", "") if isinstance(details, dict) else ""
    return code if isinstance(code, str) else ""


def _response(status_code: int, body: Mapping[str, Any]) -> dict[str, Any]:
    return _json_response(status_code, json.dumps(body))


def _json_response(status_code: int, text: str) -> dict[str, Any]:
    return {"statusCode": status_code, "headers": {"Content-Type": "application/json"}, "body": text}


CONFIG = Config.from_env(os.environ)
logger = Logger()
tracer = Tracer()
dynamodb = boto3.client("dynamodb")
redis = SharedRedis(CONFIG.redis, boto3.client("secretsmanager"))
registry = Registry(redis)
database = Database(CONFIG.database)


def get_readings(event: APIGatewayProxyEvent) -> dict[str, Any]:
    query = parse_readings_query(event.path_parameters, event.query_string_parameters)
    refused = _owned(event, query.device_id)
    if refused:
        return refused
    return _response(200, query_readings(dynamodb, CONFIG.raw_table_name, query))


def get_latest(event: APIGatewayProxyEvent) -> dict[str, Any]:
    device_id = parse_latest_query(event.path_parameters, event.query_string_parameters)
    refused = _owned(event, device_id)
    if refused:
        return refused
    try:
        reading = redis.run(lambda client: latest_reading(client, device_id))
    except Unavailable as error:
        logger.warning("Redis is unavailable", cause=error.cause)
        return _response(503, {"message": f"latest readings unavailable: {error}"})
    if reading is None:
        # The worker's copy expires with the raw reading (READING_TTL_DAYS).
        return _response(404, {"message": f"no reading of device {device_id!r} is kept"})
    return _response(200, {"device_id": device_id, "reading": reading})


def get_rollups(event: APIGatewayProxyEvent) -> dict[str, Any]:
    query = parse_rollups_query(event.path_parameters, event.query_string_parameters)
    refused = _owned(event, query.device_id)
    if refused:
        return refused
    try:
        return _json_response(200, query_rollups(database, query))
    except DatabaseUnavailable as error:
        logger.warning("PostgreSQL is unavailable", error=str(error))
        return _response(503, {"message": "rollups unavailable: the database did not answer"})


def _owned(event: APIGatewayProxyEvent, device_id: str) -> dict[str, Any] | None:
    """The response refusing the caller this device, if it is not the caller's."""
    refusal = registry.refusal(event.request_context.identity.api_key_id, {device_id})
    if refusal is None:
        return None
    logger.warning(
        "Refused by the device registry",
        status_code=refusal.status_code,
        refusal=refusal.body,
        cause=refusal.cause,
    )
    return _response(refusal.status_code, refusal.body)


ROUTES: dict[str, Callable[[APIGatewayProxyEvent], dict[str, Any]]] = {
    "/v1/devices/{device_id}/readings": get_readings,
    "/v1/devices/{device_id}/latest": get_latest,
    "/v1/devices/{device_id}/rollups": get_rollups,
}


@logger.inject_lambda_context
@tracer.capture_lambda_handler(capture_response=False)  # a page can outgrow X-Ray's 64 KB segment limit
@event_source(data_class=APIGatewayProxyEvent)
def handler(event: APIGatewayProxyEvent, context: LambdaContext) -> dict[str, Any]:
    try:
        return ROUTES[event.resource](event)
    except InvalidQuery as invalid:
        logger.info("Invalid query", problems=[asdict(problem) for problem in invalid.problems])
        return _response(
            400, {"message": "the query is invalid", "problems": [asdict(p) for p in invalid.problems]}
        )
