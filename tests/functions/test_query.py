"""GET /v1/devices/{device_id}/readings: pages, ranges, and the requests it refuses."""

import base64
import json
from types import ModuleType
from typing import Any

import pytest

from tests.functions.conftest import Aws, LambdaContext
from tests.functions.events import get_readings, iso, minutes_ago, post_readings, reading


def get(
    query: ModuleType, context: LambdaContext, device_id: str, **parameters: str
) -> tuple[int, dict[str, Any]]:
    response = query.handler(get_readings(device_id, parameters), context)
    return response["statusCode"], json.loads(response["body"])


@pytest.fixture
def stored(
    ingest: ModuleType, processor: ModuleType, aws: Aws, context: LambdaContext
) -> list[dict[str, Any]]:
    """25 readings of dev-1, one every 10 s, and one of dev-2: put through ingest and the processor."""
    readings = [reading("dev-1", minutes_ago(10, seconds=10 * n), temperature=n) for n in range(25)]
    readings[3] |= {"sequence": 3, "firmware": "1.0.0"}
    body = json.dumps([*readings, reading("dev-2", minutes_ago(10), temperature=99)])
    assert ingest.handler(post_readings(body), context)["statusCode"] == 202
    assert processor.handler(aws.stream_event(), context) == {"batchItemFailures": []}
    return readings


def test_pages_return_every_reading_once_in_time_order(
    query: ModuleType, context: LambdaContext, stored: list[dict[str, Any]]
) -> None:
    pages = []
    parameters = {"limit": "7"}
    while True:
        status, page = get(query, context, "dev-1", **parameters)
        assert status == 200
        pages.append(page)
        if page["next_token"] is None:
            break
        parameters["next_token"] = page["next_token"]

    assert [len(page["readings"]) for page in pages] == [7, 7, 7, 4]
    assert [r for page in pages for r in page["readings"]] == [
        {key: value for key, value in r.items() if key != "device_id"} for r in stored
    ]


def test_from_and_to_select_an_inclusive_range(
    query: ModuleType, context: LambdaContext, stored: list[dict[str, Any]]
) -> None:
    status, page = get(
        query, context, "dev-1", **{"from": stored[5]["timestamp"], "to": stored[8]["timestamp"]}
    )

    assert status == 200
    assert [r["metrics"]["temperature"] for r in page["readings"]] == [5, 6, 7, 8]
    assert page["next_token"] is None


def test_a_device_without_readings_gets_an_empty_list(query: ModuleType, context: LambdaContext) -> None:
    assert get(query, context, "dev-unknown") == (
        200,
        {"device_id": "dev-unknown", "readings": [], "next_token": None},
    )


def token_of(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def token(key: object) -> str:
    return token_of(json.dumps(key).encode())


NOW = iso(minutes_ago(0))
BAD_PARAMETERS: dict[str, tuple[str, dict[str, str], str]] = {
    # case: (device_id, parameters, the parameter named)
    "device-id-pattern": ("-dev", {}, "device_id"),
    "device-id-too-long": ("d" * 129, {}, "device_id"),
    "from-not-a-time": ("dev-1", {"from": "yesterday"}, "from"),
    "to-without-zone": ("dev-1", {"to": "2026-11-23T17:04:05"}, "to"),
    "from-after-to": ("dev-1", {"from": "2026-11-23T17:00:00Z", "to": "2026-11-23T16:00:00Z"}, "from"),
    "limit-zero": ("dev-1", {"limit": "0"}, "limit"),
    "limit-too-large": ("dev-1", {"limit": "1001"}, "limit"),
    "limit-not-a-number": ("dev-1", {"limit": "ten"}, "limit"),
    "unknown-parameter": ("dev-1", {"form": "2026-11-23T17:00:00Z"}, "form"),
    "token-not-base64": ("dev-1", {"next_token": "not a token!"}, "next_token"),
    "token-not-json": ("dev-1", {"next_token": base64.urlsafe_b64encode(b"\xff\xfe").decode()}, "next_token"),
    "token-tampered": (
        "dev-1",
        {"next_token": token({"device_id": "dev-1", "timestamp": "x"})},
        "next_token",
    ),
    "token-extra-key": (
        "dev-1",
        {"next_token": token({"device_id": "dev-1", "timestamp": NOW, "admin": True})},
        "next_token",
    ),
    "token-of-another-device": (
        "dev-1",
        {"next_token": token({"device_id": "dev-2", "timestamp": NOW})},
        "next_token",
    ),
    "token-deeply-nested": ("dev-1", {"next_token": token_of(b"[" * 10_000 + b"]" * 10_000)}, "next_token"),
    "token-lone-surrogate": ("dev-1", {"next_token": "\ud800"}, "next_token"),
    "from-lone-surrogate": ("dev-1", {"from": "2026-11-23T17:00:00\ud800"}, "from"),
    "from-after-year-9999": ("dev-1", {"from": "9999-12-31T23:59:59-01:00"}, "from"),
    "token-outside-range": (
        "dev-1",
        {"to": "2026-01-01T00:00:00Z", "next_token": token({"device_id": "dev-1", "timestamp": NOW})},
        "next_token",
    ),
}


@pytest.mark.parametrize(
    ("device_id", "parameters", "named"), BAD_PARAMETERS.values(), ids=BAD_PARAMETERS.keys()
)
def test_bad_parameters_get_400_naming_the_parameter(
    query: ModuleType, context: LambdaContext, device_id: str, parameters: dict[str, str], named: str
) -> None:
    status, response = get(query, context, device_id, **parameters)

    assert status == 400
    assert [problem["parameter"] for problem in response["problems"]] == [named]


def test_a_400_names_every_bad_parameter(query: ModuleType, context: LambdaContext) -> None:
    status, response = get(query, context, "-dev", **{"from": "soon", "limit": "-1", "next_token": "?"})

    assert status == 400
    assert sorted(problem["parameter"] for problem in response["problems"]) == [
        "device_id",
        "from",
        "limit",
        "next_token",
    ]
