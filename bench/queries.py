"""Latency of the query function's `latest` and `rollups` routes, and of ingest's ownership check.

Run: .venv/bin/python -m bench.queries

The handlers run in this process, as the tests run them, against a redis-server and a PostgreSQL started on
this machine as the tests start them (tools.local.servers), and moto for AWS, which they only ask for the
Redis AUTH token, once. Each figure is the p50 and p95 of REQUESTS calls, after WARMUP calls (the connections
are made, and the device's owner cached, as in a warm function). Loopback round trips take some 0.05 ms; in a
VPC a Redis or PostgreSQL round trip takes some 0.3 to 1 ms more: add that per round trip (below) for Lambda.

Data: one device with a year of hourly rollups of METRICS metrics (8,760 hours); the owners map holds
OWNED devices, as a registry of that size would.

- latest: GET /v1/devices/{id}/latest (the owner cached: one Redis round trip, HGET).
- rollups: GET /v1/devices/{id}/rollups, a page of `limit` hours or days (one PostgreSQL round trip).
- ownership check (readings.ownership.Registry.refusal) of a request's devices: on a cache hit (no round
  trip) and on a miss (one pipeline: EXISTS and HMGET), for 1 and for 500 distinct devices.
"""

import importlib.util
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

import boto3
import psycopg
from moto import mock_aws
from psycopg.conninfo import make_conninfo
from redis.typing import EncodableT, FieldT

from tests.functions.conftest import FUNCTIONS, REDIS_AUTH_TOKEN, REGION, LambdaContext, running_redis
from tests.functions.events import CLIENT_ID, get_readings
from tests.postgres import ADMIN_USER, PostgresDatabase
from tools.local.servers import free_port, start_postgres, stop_postgres

REQUESTS = 1000
WARMUP = 20
METRICS = 4
HOURS = 365 * 24
OWNED = 100_000
DEVICE = "device-000001"
# (label, route, parameters)
SCENARIOS = [
    ("latest", "latest", {}),
    ("rollups: 100 hours (default limit)", "rollups", {"resolution": "hour"}),
    ("rollups: 1,000 hours", "rollups", {"resolution": "hour", "limit": "1000"}),
    ("rollups: 100 days", "rollups", {"resolution": "day"}),
    ("rollups: 365 days (a year)", "rollups", {"resolution": "day", "limit": "365"}),
]
ENVIRONMENT = {
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "POWERTOOLS_SERVICE_NAME": "iot-queries-bench",
    "POWERTOOLS_METRICS_NAMESPACE": "IotPlatformBench",
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_LOG_LEVEL": "ERROR",
    "POWERTOOLS_METRICS_DISABLED": "true",
    "RAW_TABLE_NAME": "raw-readings",
    "STREAM_NAME": "readings",
    "MAX_BATCH_SIZE": "500",
    "MAX_BODY_BYTES": str(1024 * 1024),
    "MAX_READING_AGE_SECONDS": "86400",
    "MAX_CLOCK_SKEW_SECONDS": "300",
    "PUT_RECORDS_MAX_ATTEMPTS": "3",
    "REDIS_HOST": "127.0.0.1",
    "REDIS_TLS": "false",
    "REDIS_CLUSTER": "false",
}


def percentiles(samples: list[float]) -> str:
    """p50 and p95 in milliseconds."""
    cuts = statistics.quantiles(samples, n=100)
    return f"p50 {cuts[49] * 1000:7.3f} ms   p95 {cuts[94] * 1000:7.3f} ms"


def timed(call: Callable[[], object]) -> list[float]:
    for _ in range(WARMUP):
        call()
    samples = []
    for _ in range(REQUESTS):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return samples


@contextmanager
def migrated_database(directory: Path) -> Iterator[PostgresDatabase]:
    """A PostgreSQL server (as the tests start it) with a migrated database."""
    from stream_worker.migrate import migrate  # functions/ is on the import path by now

    server = start_postgres(directory / "data", free_port())
    try:
        database = PostgresDatabase(server.host, server.port, "bench")
        server_database = make_conninfo(
            host=server.host, port=server.port, dbname="postgres", user=ADMIN_USER
        )
        with psycopg.connect(server_database, autocommit=True) as admin:
            admin.execute("CREATE DATABASE bench")
        migrate(database.conninfo())
        yield database
    finally:
        stop_postgres(server.data)


def store_rollups(database: PostgresDatabase) -> None:
    """A year of hours of METRICS metrics for DEVICE, ending at the last whole hour."""
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    with psycopg.connect(database.conninfo(), autocommit=True) as connection:
        connection.execute(
            "INSERT INTO hourly_rollups (device_id, metric, hour, count, sum, min, max) "
            "SELECT %s, 'metric_' || m, %s::timestamptz - h * interval '1 hour', "
            "360, 7200.5 + m, 19.25, 21.75 + m "
            "FROM generate_series(0, %s - 1) AS h, generate_series(1, %s) AS m",
            [DEVICE, end, HOURS, METRICS],
        )
        connection.execute("VACUUM ANALYZE hourly_rollups")  # as autovacuum would have, long since


def load(name: str) -> ModuleType:
    """functions/<name>/handler.py as a new module, imported with the current environment."""
    spec = importlib.util.spec_from_file_location(f"{name}_handler", FUNCTIONS / name / "handler.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.update(values)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def main() -> None:
    sys.dont_write_bytecode = True  # no __pycache__ in functions/: each directory is packaged as it is
    with (
        tempfile.TemporaryDirectory(prefix="bench-queries-") as directory,
        running_redis(Path(directory)) as redis_server,
        migrated_database(Path(directory)) as database,
        environment(ENVIRONMENT),
        mock_aws(),
    ):
        from readings.ownership import OWNERS_KEY, OWNERS_PUBLISHED_KEY, RedisSettings, Registry, SharedRedis

        secret_arn = boto3.client("secretsmanager").create_secret(
            Name="bench/redis", SecretString=json.dumps({"auth_token": REDIS_AUTH_TOKEN})
        )["ARN"]
        owners: dict[FieldT, EncodableT] = {f"device-{n:06}": CLIENT_ID for n in range(OWNED)}
        pipeline = redis_server.client.pipeline()
        pipeline.hset(OWNERS_KEY, mapping=owners)
        pipeline.set(OWNERS_PUBLISHED_KEY, int(time.time()))
        pipeline.execute()
        redis_server.client.hset(
            f"latest-reading:{DEVICE}",
            mapping={
                "timestamp": "2026-11-23T17:04:05.123Z",
                "reading": json.dumps(
                    {
                        "device_id": DEVICE,
                        "timestamp": "2026-11-23T17:04:05.123Z",
                        "metrics": {f"metric_{m}": 20.5 + m for m in range(METRICS)},
                        "sequence": 42,
                    }
                ),
            },
        )
        store_rollups(database)
        os.environ.update(
            {
                "REDIS_PORT": str(redis_server.port),
                "REDIS_AUTH_TOKEN_SECRET_ARN": secret_arn,
                **database.environment("iot_reader"),
            }
        )
        query, ingest = load("query"), load("ingest")
        context = LambdaContext()

        print(f"Query routes, in process against local servers ({REQUESTS:,} requests each)")
        for label, route, parameters in SCENARIOS:
            event = get_readings(DEVICE, parameters, route=route)
            response = query.handler(event, context)
            assert response["statusCode"] == 200, response
            samples = timed(lambda event=event: query.handler(event, context))  # type: ignore[misc]
            print(f"  {label:<36} {percentiles(samples)}   {len(response['body']):>9,} bytes")

        print(f"Ingest's ownership check ({OWNED:,} devices registered)")
        redis = SharedRedis(RedisSettings.from_env(os.environ), boto3.client("secretsmanager"))
        for count in (1, 500):
            devices = {f"device-{n:06}" for n in range(count)}
            hit: Registry = ingest.registry
            assert hit.refusal(CLIENT_ID, devices) is None
            samples = timed(lambda devices=devices, hit=hit: hit.refusal(CLIENT_ID, devices))  # type: ignore[misc]
            print(f"  {count:>3} devices, cache hit                  {percentiles(samples)}")
            # A clock that moves past every cached owner at each look: every check asks Redis.
            miss = Registry(redis, clock=itertools.count(step=10**6).__next__)
            samples = timed(lambda devices=devices, miss=miss: miss.refusal(CLIENT_ID, devices))  # type: ignore[misc]
            print(f"  {count:>3} devices, cache miss (one round trip) {percentiles(samples)}")
        redis.close()
        query.database.close()


if __name__ == "__main__":
    main()
