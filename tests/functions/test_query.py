"""GET /v1/devices/{device_id}/readings and /latest: pages, ranges, and the requests the routes refuse."""

import base64
import json
from decimal import Decimal
from types import ModuleType
from typing import Any

import pytest
import redis
from readings import Reading
from readings.ownership import OWNERS_PUBLISHED_KEY

from tests.functions.conftest import OTHER_CLIENT_ID, REDIS_AUTH_TOKEN, Aws, LambdaContext, Stores
from tests.functions.events import CLIENT_ID, get_readings, iso, minutes_ago, post_readings, reading


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


ROUTES = ["readings", "latest", "rollups"]


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("device_id", ["dev-foreign", "dev-unregistered"])
def test_every_route_refuses_a_device_not_registered_to_the_caller(
    query: ModuleType, context: LambdaContext, stores: Stores, route: str, device_id: str
) -> None:
    stores.publish_owners({"dev-1": CLIENT_ID, "dev-foreign": OTHER_CLIENT_ID})

    response = query.handler(get_readings(device_id, route=route), context)

    assert response["statusCode"] == 403
    assert json.loads(response["body"]) == {
        "message": "these devices are not registered to this API client",
        "devices": [device_id],
    }


@pytest.mark.parametrize("route", ROUTES)
def test_every_route_refuses_a_request_without_an_api_key_id(
    query: ModuleType, context: LambdaContext, route: str
) -> None:
    response = query.handler(get_readings("dev-1", route=route, client_id=None), context)

    assert response["statusCode"] == 403


@pytest.mark.parametrize("route", ROUTES)
def test_every_route_answers_503_while_the_registry_cannot_be_read(
    query: ModuleType, context: LambdaContext, stores: Stores, route: str
) -> None:
    stores.redis.delete(OWNERS_PUBLISHED_KEY)

    response = query.handler(get_readings("dev-1", route=route), context)

    assert response["statusCode"] == 503
    assert json.loads(response["body"])["message"].startswith("device registry unavailable")


def test_the_latest_reading_is_the_one_the_stream_worker_kept(
    query: ModuleType, context: LambdaContext, stores: Stores
) -> None:
    kept = Reading.from_document(
        {
            "device_id": "dev-1",
            "timestamp": "2026-11-23T17:04:05.123+01:00",
            "metrics": {"temperature": Decimal("21.5"), "humidity": 40, "pressure": Decimal("1013.000001")},
            "sequence": 7,
            "firmware": "1.4.2",
        }
    )
    # As stream_worker.worker.keep_latest_readings stores it.
    stores.redis.hset("latest-reading:dev-1", mapping={"timestamp": kept.timestamp, "reading": kept.data()})

    response = query.handler(get_readings("dev-1", route="latest"), context)

    assert response["statusCode"] == 200
    assert json.loads(response["body"], parse_float=Decimal) == {
        "device_id": "dev-1",
        "reading": {
            "timestamp": "2026-11-23T16:04:05.123Z",
            "metrics": {"temperature": Decimal("21.5"), "humidity": 40, "pressure": Decimal("1013.000001")},
            "sequence": 7,
            "firmware": "1.4.2",
        },
    }


def test_a_device_without_a_kept_reading_gets_404(
    query: ModuleType, context: LambdaContext, stores: Stores
) -> None:
    response = query.handler(get_readings("dev-1", route="latest"), context)

    assert response["statusCode"] == 404
    assert "dev-1" in json.loads(response["body"])["message"]


def test_latest_takes_no_parameters(query: ModuleType, context: LambdaContext) -> None:
    response = query.handler(get_readings("dev-1", {"limit": "1"}, route="latest"), context)

    assert response["statusCode"] == 400
    assert [p["parameter"] for p in json.loads(response["body"])["problems"]] == ["limit"]


def test_latest_answers_503_if_redis_fails_after_the_owner_was_cached(
    query: ModuleType, context: LambdaContext, stores: Stores
) -> None:
    assert query.handler(get_readings("dev-1", route="latest"), context)["statusCode"] == 404
    # Redis now refuses the function's token, and the secret still holds it: the owner is cached, the
    # latest reading cannot be read.
    stores.redis.config_set("requirepass", "another-token-0123456789")
    admin = redis.Redis(port=stores.redis_port, password="another-token-0123456789")
    try:
        admin.client_kill_filter(_type="normal", skipme=True)
        response = query.handler(get_readings("dev-1", route="latest"), context)
    finally:
        admin.config_set("requirepass", REDIS_AUTH_TOKEN)
        admin.close()

    assert response["statusCode"] == 503
    assert json.loads(response["body"]) == {
        "message": "latest readings unavailable: Redis refused the AUTH token the secret holds"
    }
