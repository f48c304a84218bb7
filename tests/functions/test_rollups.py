"""GET /v1/devices/{device_id}/rollups: hourly and daily totals from PostgreSQL, pages, refused requests, and
the connection to PostgreSQL (verify-full TLS, made again when it fails)."""

import base64
import dataclasses
import json
import socket
import struct
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

import certifi
import psycopg
import pytest

from tests.functions.conftest import LambdaContext, LoadFunction, tls_relay
from tests.functions.events import get_readings
from tests.postgres import PostgresDatabase
from tools.local.servers import free_port

# (device, metric, hour, count, sum, min, max), as the stream worker writes them.
Row = tuple[str, str, str, int, str, str, str]


def insert(database: PostgresDatabase, rows: list[Row]) -> None:
    with psycopg.connect(database.conninfo()) as connection:
        connection.cursor().executemany(
            "INSERT INTO hourly_rollups (device_id, metric, hour, count, sum, min, max) "
            "VALUES (%s, %s, %s::timestamptz, %s, %s::numeric, %s::numeric, %s::numeric)",
            rows,
        )


def get(query: ModuleType, context: LambdaContext, device_id: str, **parameters: str) -> tuple[int, Any]:
    response = query.handler(get_readings(device_id, parameters, route="rollups"), context)
    # Numbers as written: a float would hide a digit lost on the way.
    return response["statusCode"], json.loads(response["body"], parse_float=Decimal)


def stats(count: int, total: str, minimum: str, maximum: str, mean: str) -> dict[str, Any]:
    return {
        "count": count,
        "sum": Decimal(total),
        "min": Decimal(minimum),
        "max": Decimal(maximum),
        "mean": Decimal(mean),
    }


@pytest.fixture
def day(database: PostgresDatabase) -> None:
    """dev-1 on 2026-11-23 and the first hour of the 24th; dev-2 in the same hours."""
    insert(
        database,
        [
            ("dev-1", "temperature", "2026-11-23T10:00:00Z", 2, "41.5", "20.5", "21"),
            ("dev-1", "humidity", "2026-11-23T10:00:00Z", 1, "40", "40", "40"),
            ("dev-1", "temperature", "2026-11-23T11:00:00Z", 3, "60.000003", "19.000001", "21.000001"),
            ("dev-1", "temperature", "2026-11-23T23:00:00Z", 1, "-3.25", "-3.25", "-3.25"),
            ("dev-1", "temperature", "2026-11-24T00:00:00Z", 1, "5", "5", "5"),
            ("dev-2", "temperature", "2026-11-23T10:00:00Z", 1, "99", "99", "99"),
        ],
    )


def test_hours_are_returned_oldest_first_with_each_metrics_totals(
    query: ModuleType, context: LambdaContext, day: None
) -> None:
    status, page = get(query, context, "dev-1", resolution="hour")

    assert status == 200
    assert page == {
        "device_id": "dev-1",
        "resolution": "hour",
        "rollups": [
            {
                "start": "2026-11-23T10:00:00.000Z",
                "metrics": {
                    "humidity": stats(1, "40", "40", "40", "40"),
                    "temperature": stats(2, "41.5", "20.5", "21", "20.75"),
                },
            },
            {
                "start": "2026-11-23T11:00:00.000Z",
                "metrics": {"temperature": stats(3, "60.000003", "19.000001", "21.000001", "20.000001")},
            },
            {
                "start": "2026-11-23T23:00:00.000Z",
                "metrics": {"temperature": stats(1, "-3.25", "-3.25", "-3.25", "-3.25")},
            },
            {"start": "2026-11-24T00:00:00.000Z", "metrics": {"temperature": stats(1, "5", "5", "5", "5")}},
        ],
        "next_token": None,
    }


def test_days_are_utc_days_summing_counts_and_sums_with_the_least_minimum_and_greatest_maximum(
    query: ModuleType, context: LambdaContext, day: None
) -> None:
    status, page = get(query, context, "dev-1", resolution="day")

    assert status == 200
    assert page["rollups"] == [
        {
            "start": "2026-11-23T00:00:00.000Z",
            "metrics": {
                "humidity": stats(1, "40", "40", "40", "40"),
                # (41.5 + 60.000003 - 3.25) / 6 = 16.37500050, to 6 decimal places
                "temperature": stats(6, "98.250003", "-3.25", "21.000001", "16.375001"),
            },
        },
        {"start": "2026-11-24T00:00:00.000Z", "metrics": {"temperature": stats(1, "5", "5", "5", "5")}},
    ]


def test_sums_are_exact_beyond_the_digits_a_float_keeps(
    query: ModuleType, context: LambdaContext, database: PostgresDatabase
) -> None:
    insert(
        database,
        [
            (
                "dev-1",
                "energy",
                f"2026-11-23T{hour:02}:00:00Z",
                3600,
                "999999999999999.999999",
                "1",
                "999999999999.5",
            )
            for hour in range(24)
        ],
    )

    status, page = get(query, context, "dev-1", resolution="day")

    assert status == 200
    assert page["rollups"][0]["metrics"]["energy"] == stats(
        86400, "23999999999999999.999976", "1", "999999999999.5", "277777777777.777778"
    )
    assert (
        "23999999999999999.999976"
        in query.handler(get_readings("dev-1", {"resolution": "day"}, route="rollups"), context)["body"]
    )


def test_a_period_is_returned_if_it_begins_within_from_and_to(
    query: ModuleType, context: LambdaContext, day: None
) -> None:
    hours = get(query, context, "dev-1", **{"from": "2026-11-23T10:30:00Z", "to": "2026-11-23T23:00:00Z"})
    days = get(
        query,
        context,
        "dev-1",
        resolution="day",
        **{"from": "2026-11-22T12:00+01:00", "to": "2026-11-23T06:00Z"},
    )

    assert [r["start"] for r in hours[1]["rollups"]] == [
        "2026-11-23T11:00:00.000Z",
        "2026-11-23T23:00:00.000Z",
    ]
    # The whole day of 2026-11-23, its hours after `to` included: a day is not cut.
    assert [(r["start"], r["metrics"]["temperature"]["count"]) for r in days[1]["rollups"]] == [
        ("2026-11-23T00:00:00.000Z", 6)
    ]


def test_history_older_than_the_raw_readings_ttl_is_returned(
    query: ModuleType, context: LambdaContext, database: PostgresDatabase
) -> None:
    insert(database, [("dev-1", "temperature", "2019-03-01T08:00:00Z", 60, "1200", "19", "21")])

    status, page = get(query, context, "dev-1", resolution="day", **{"from": "2019-01-01T00:00:00Z"})

    assert status == 200
    assert page["rollups"] == [
        {"start": "2019-03-01T00:00:00.000Z", "metrics": {"temperature": stats(60, "1200", "19", "21", "20")}}
    ]


@pytest.mark.parametrize(
    ("resolution", "hours", "pages"), [("hour", 25, [7, 7, 7, 4]), ("day", 24 * 9, [4, 4, 1])]
)
def test_pages_return_every_period_once_in_time_order(
    query: ModuleType,
    context: LambdaContext,
    database: PostgresDatabase,
    resolution: str,
    hours: int,
    pages: list[int],
) -> None:
    # Every other hour, starting at 2026-11-01T00:00Z, so that some hours are empty.
    insert(
        database,
        [
            (
                "dev-1",
                "temperature",
                f"2026-11-{1 + 2 * n // 24:02}T{2 * n % 24:02}:00:00Z",
                1,
                str(n),
                str(n),
                str(n),
            )
            for n in range(hours // 2 if resolution == "day" else hours)
        ],
    )
    limit = "7" if resolution == "hour" else "4"
    status, whole = get(query, context, "dev-1", resolution=resolution, limit="1000")
    found, parameters = [], {"resolution": resolution, "limit": limit}
    while True:
        status, page = get(query, context, "dev-1", **parameters)
        assert status == 200
        found.append(page["rollups"])
        if page["next_token"] is None:
            break
        parameters["next_token"] = page["next_token"]

    assert [len(rollups) for rollups in found] == pages
    assert [r for rollups in found for r in rollups] == whole["rollups"]
    assert sum(r["metrics"]["temperature"]["count"] for r in whole["rollups"]) == (
        hours // 2 if resolution == "day" else hours
    )


def test_a_device_without_rollups_gets_an_empty_list(
    query: ModuleType, context: LambdaContext, day: None
) -> None:
    assert get(query, context, "dev-3") == (
        200,
        {"device_id": "dev-3", "resolution": "hour", "rollups": [], "next_token": None},
    )


def token_of(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def token(position: object) -> str:
    return token_of(json.dumps(position).encode())


HOUR = "2026-11-23T10:00:00.000Z"
BAD_PARAMETERS: dict[str, tuple[str, dict[str, str], str]] = {
    # case: (device_id, parameters, the parameter named)
    "device-id-pattern": ("-dev", {}, "device_id"),
    "resolution-unknown": ("dev-1", {"resolution": "week"}, "resolution"),
    "resolution-case": ("dev-1", {"resolution": "Hour"}, "resolution"),
    "from-not-a-time": ("dev-1", {"from": "last year"}, "from"),
    "from-not-a-date": ("dev-1", {"from": "2026-02-30T00:00:00Z"}, "from"),
    "to-without-zone": ("dev-1", {"to": "2026-11-23T17:04:05"}, "to"),
    "from-after-to": ("dev-1", {"from": "2026-11-23T17:00:00Z", "to": "2026-11-23T16:00:00Z"}, "from"),
    "limit-zero": ("dev-1", {"limit": "0"}, "limit"),
    "limit-too-large": ("dev-1", {"limit": "1001"}, "limit"),
    "unknown-parameter": ("dev-1", {"granularity": "day"}, "granularity"),
    "token-not-base64": ("dev-1", {"next_token": "not a token!"}, "next_token"),
    "token-not-json": ("dev-1", {"next_token": token_of(b"\xff\xfe")}, "next_token"),
    "token-deeply-nested": ("dev-1", {"next_token": token_of(b"[" * 10_000 + b"]" * 10_000)}, "next_token"),
    "token-lone-surrogate": ("dev-1", {"next_token": "\ud800"}, "next_token"),
    "token-of-another-device": (
        "dev-1",
        {"next_token": token({"device_id": "dev-2", "resolution": "hour", "period": HOUR})},
        "next_token",
    ),
    "token-of-another-resolution": (
        "dev-1",
        {
            "resolution": "day",
            "next_token": token({"device_id": "dev-1", "resolution": "hour", "period": HOUR}),
        },
        "next_token",
    ),
    "token-not-at-a-period-start": (
        "dev-1",
        {
            "next_token": token(
                {"device_id": "dev-1", "resolution": "hour", "period": "2026-11-23T10:30:00.000Z"}
            )
        },
        "next_token",
    ),
    "token-of-a-date-that-does-not-exist": (
        "dev-1",
        {
            "next_token": token(
                {"device_id": "dev-1", "resolution": "hour", "period": "2026-02-30T10:00:00.000Z"}
            )
        },
        "next_token",
    ),
    "token-outside-range": (
        "dev-1",
        {
            "to": "2026-01-01T00:00:00Z",
            "next_token": token({"device_id": "dev-1", "resolution": "hour", "period": HOUR}),
        },
        "next_token",
    ),
    "token-extra-key": (
        "dev-1",
        {"next_token": token({"device_id": "dev-1", "resolution": "hour", "period": HOUR, "limit": 10**9})},
        "next_token",
    ),
    "token-of-the-readings-route": (
        "dev-1",
        {"next_token": token({"device_id": "dev-1", "timestamp": HOUR})},
        "next_token",
    ),
    "token-period-not-a-string": (
        "dev-1",
        {"next_token": token({"device_id": "dev-1", "resolution": "hour", "period": 1795453200000})},
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
    status, response = get(query, context, "dev-1", resolution="minute", **{"from": "soon", "limit": "-1"})

    assert status == 400
    assert sorted(problem["parameter"] for problem in response["problems"]) == ["from", "limit", "resolution"]


def test_an_unreachable_database_gets_503(
    load_function: LoadFunction, context: LambdaContext, day: None
) -> None:
    query = load_function("query", DATABASE_PORT=str(free_port()))  # nothing listens there

    assert get(query, context, "dev-1") == (
        503,
        {"message": "rollups unavailable: the database did not answer"},
    )


def test_a_dropped_connection_is_made_again(
    query: ModuleType, context: LambdaContext, database: PostgresDatabase, day: None
) -> None:
    assert get(query, context, "dev-1")[0] == 200
    ((backend,),) = query.database.run("SELECT pg_backend_pid()")  # the connection the function keeps
    with psycopg.connect(database.conninfo()) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", [backend]).fetchone() == (True,)

    assert get(query, context, "dev-1")[0] == 200


def test_a_statement_that_times_out_is_a_503_and_is_not_tried_again(
    query: ModuleType, context: LambdaContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(query, "STATEMENT_TIMEOUT_MS", 100)
    assert query.database.run("SELECT 1") == [[1]]  # a kept connection, which a failure would make again
    attempts = []
    run = query.database._run

    def counted(*arguments: Any) -> Any:
        attempts.append(arguments)
        return run(*arguments)

    monkeypatch.setattr(query.database, "_run", counted)

    with pytest.raises(query.DatabaseUnavailable) as raised:
        query.database.run("SELECT pg_sleep(1)")

    assert raised.value.timed_out and "57014" in str(raised.value)
    assert len(attempts) == 1


POSTGRES_SSL_REQUEST = struct.pack("!ii", 8, 80877103)


@pytest.fixture
def tls_endpoint(tmp_path: Path, database: PostgresDatabase) -> Iterator[tuple[int, Path]]:
    """A port where PostgreSQL is served over TLS, as RDS serves it, and the CA bundle that verifies it.

    The tests' PostgreSQL is built without TLS: the relay answers the client's SSLRequest, then completes the
    handshake itself.
    """

    def accept_ssl_request(client: socket.socket) -> None:
        assert client.recv(len(POSTGRES_SSL_REQUEST)) == POSTGRES_SSL_REQUEST
        client.sendall(b"S")

    with tls_relay(tmp_path, database.port, accept_ssl_request) as endpoint:
        yield endpoint


def test_tls_is_verified_against_the_rds_ca_bundle_with_the_host_name_checked(
    query: ModuleType, tls_endpoint: tuple[int, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    port, ca = tls_endpoint
    monkeypatch.setattr(query.rds, "ca_bundle", lambda region: ca)
    settings = dataclasses.replace(query.CONFIG.database, host="localhost", port=port, tls=True)
    database = query.Database(settings)
    try:
        assert database.run("SELECT count(*) FROM hourly_rollups") == [[0]]
    finally:
        database.close()

    # The certificate names localhost, not the address.
    with pytest.raises(query.DatabaseUnavailable, match="IP address mismatch"):
        query.Database(dataclasses.replace(settings, host="127.0.0.1")).run("SELECT 1")
    # A certificate authority that the bundle does not hold.
    monkeypatch.setattr(query.rds, "ca_bundle", lambda region: Path(certifi.where()))
    with pytest.raises(query.DatabaseUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
        query.Database(settings).run("SELECT 1")
