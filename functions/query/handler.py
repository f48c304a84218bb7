"""GET /v1/devices/{device_id}/readings?from=&to=&limit=&next_token=: a device's readings, oldest first."""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import boto3
from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent, event_source
from aws_lambda_powertools.utilities.typing import LambdaContext
from readings import CANONICAL_TIMESTAMP, DEVICE_ID, EPOCH, ONE_MILLISECOND, canonical_timestamp

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
PARAMETERS = {"from", "to", "limit", "next_token"}
EARLIEST = "0000-01-01T00:00:00.000Z"
LATEST = "9999-12-31T23:59:59.999Z"


@dataclass(frozen=True)
class Config:
    raw_table_name: str

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Config:
        if not env.get("RAW_TABLE_NAME"):
            raise ValueError("environment variable RAW_TABLE_NAME is required")
        return cls(raw_table_name=env["RAW_TABLE_NAME"])


@dataclass(frozen=True)
class ReadingsQuery:
    device_id: str
    start: str  # canonical timestamps, both inclusive
    end: str
    limit: int
    start_key: dict[str, Any] | None


@dataclass(frozen=True)
class Problem:
    parameter: str
    message: str


class InvalidQuery(Exception):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(f"{len(problems)} problems")
        self.problems = problems


def parse_query(
    path_parameters: Mapping[str, str] | None, query_parameters: Mapping[str, str] | None
) -> ReadingsQuery:
    """The query the request asks for; raises InvalidQuery naming every problem."""
    parameters = query_parameters or {}
    problems = [
        Problem(name, "is not a parameter of this API") for name in sorted(parameters.keys() - PARAMETERS)
    ]

    device_id = (path_parameters or {}).get("device_id", "")
    if not DEVICE_ID.fullmatch(device_id):
        problems.append(Problem("device_id", f"{device_id!r} does not match {DEVICE_ID.pattern}"))
    start = _timestamp(parameters, "from", EARLIEST, problems)
    end = _timestamp(parameters, "to", LATEST, problems)
    if start > end:
        problems.append(Problem("from", "is after to"))

    limit = parameters.get("limit", str(DEFAULT_LIMIT))
    if not (limit.isascii() and limit.isdigit() and 1 <= int(limit) <= MAX_LIMIT):
        problems.append(Problem("limit", f"{limit!r} is not a whole number from 1 to {MAX_LIMIT}"))

    start_key = None
    if "next_token" in parameters:
        start_key = _start_key(parameters["next_token"], device_id, start, end)
        if start_key is None:
            problems.append(Problem("next_token", "is not a token that this query returned"))

    if problems:
        raise InvalidQuery(problems)
    return ReadingsQuery(device_id, start, end, int(limit), start_key)


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


def encode_token(last_evaluated_key: Mapping[str, Any]) -> str:
    """An opaque position: urlsafe base64 of the last key's JSON, unpadded so it needs no URL escaping."""
    key = {
        "device_id": last_evaluated_key["device_id"]["S"],
        "timestamp": last_evaluated_key["timestamp"]["S"],
    }
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode().rstrip("=")


def _start_key(token: str, device_id: str, start: str, end: str) -> dict[str, Any] | None:
    """The DynamoDB key a token stands for, if it is one this device's query could have returned."""
    try:
        key = json.loads(base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_", validate=True))
    except (binascii.Error, ValueError, RecursionError):  # RecursionError: JSON nested too deeply
        return None
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
        "next_token": encode_token(last_key) if last_key else None,
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


def _response(status_code: int, body: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "statusCode": status_code,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps(body),
    }


CONFIG = Config.from_env(os.environ)
logger = Logger()
tracer = Tracer()
dynamodb = boto3.client("dynamodb")


@logger.inject_lambda_context
@tracer.capture_lambda_handler(capture_response=False)  # a page can outgrow X-Ray's 64 KB segment limit
@event_source(data_class=APIGatewayProxyEvent)
def handler(event: APIGatewayProxyEvent, context: LambdaContext) -> dict[str, Any]:
    try:
        query = parse_query(event.path_parameters, event.query_string_parameters)
    except InvalidQuery as invalid:
        logger.info("Invalid query", problems=[asdict(problem) for problem in invalid.problems])
        return _response(
            400, {"message": "the query is invalid", "problems": [asdict(p) for p in invalid.problems]}
        )
    return _response(200, query_readings(dynamodb, CONFIG.raw_table_name, query))
