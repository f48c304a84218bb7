"""Benchmark of the functions against moto: stream capacity, AWS calls, throughput and monthly cost.

Run: .venv/bin/python -m bench.functions

Workload: 250 devices send a reading every 10 s with two metrics (1% breach a threshold).

1. Stream capacity. The same 5,000 readings are posted to ingest in requests of 1, 10, 100 and 500 readings,
   each size to a stream of its own. Per 1,000 readings: the records and bytes (data and partition keys) put,
   the PutRecords calls and the PUT payload units (a record is billed one per started 25 KB of data). A shard
   takes 1,000 records or 1 MiB a second, whichever comes first: readings per shard-second of capacity is the
   smaller of the two quotients.
2. Consumers. The stream of the requests of 500 goes to the processor in event-source-mapping batches of 500
   records, twice (the second time as a replay), against fresh tables. Throughput is with moto serving the AWS
   calls, and of the code's own work (its time minus the time inside AWS calls, which still includes
   botocore's request building). The first is dominated by moto: its TransactWriteItems deep-copies the table
   once per item in the request. Neither includes AWS's latency. The same records go to the stream worker's
   batch processing (batches of up to 500 readings, as it forms them), twice, into a real PostgreSQL (the
   pgserver wheel, over a Unix socket), a real redis-server and an archive directory on local disk: readings
   a second and the SQL statements per 1,000 readings (counted as the worker executes them; BEGIN and
   COMMIT, which psycopg sends itself, add two a batch). A network
   round trip to RDS (about 1 ms in a region) adds about 2 ms a batch: the worker's five statements take
   two round trips and COMMIT one more.
3. Monthly cost of 1,000,000 readings a day at prod's sizing (stacks/config.py), by request size. At that
   volume a shard sees a record far less often than once per batching window, so every record is a processor
   invocation of its own: the bench runs such invocations (COST_SAMPLE readings per request size, on fresh
   tables) and bills each function's own time plus AWS_CALL_SECONDS per AWS call, at PRICES.
"""

import asyncio
import contextlib
import importlib
import importlib.util
import io
import json
import math
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import psycopg
import redis
from moto import mock_aws

from stacks.config import environment
from tools.local.round_trip import kinesis_event
from tools.local.servers import LOOPBACK, PASSWORD, LocalStores, temporary_stores

FUNCTIONS = Path(__file__).resolve().parent.parent / "functions"
# As in each function's zip and the worker's image: the shared readings package beside the handlers.
sys.path.insert(0, str(FUNCTIONS))
DEVICES = 250
CLIENT_ID = "benchclient"  # the API key id that owns the bench's devices
READINGS = 5000
REQUEST_SIZES = (1, 10, 100, 500)
CONSUMED_REQUEST_SIZE = 500
BATCH_SIZE = 500
COST_SAMPLE = 200
SHARD_RECORDS_PER_SECOND = 1000
SHARD_BYTES_PER_SECOND = 1024 * 1024
PUT_PAYLOAD_UNIT_BYTES = 25_000
# A Kinesis or DynamoDB call from Lambda in the same region takes about this long; moto's in-process time
# is no measure of it.
AWS_CALL_SECONDS = 0.015
READINGS_A_DAY = 1_000_000
HOURS_A_MONTH = 730
# us-east-1 list prices from the AWS pricing pages (x86 Lambda; DynamoDB on demand after its 2024-11-01
# reduction), as of 2025-07. Check them before relying on the totals.
PRICES = {
    "kinesis shard-hour": 0.015,
    "kinesis PUT payload unit": 0.014 / 1e6,
    "lambda request": 0.20 / 1e6,
    "lambda GB-second": 0.0000166667,
    "dynamodb write request unit": 0.625 / 1e6,
    "dynamodb read request unit": 0.125 / 1e6,
}
ENVIRONMENT = {
    "AWS_DEFAULT_REGION": "eu-west-1",
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "POWERTOOLS_SERVICE_NAME": "iot-functions-bench",
    "POWERTOOLS_METRICS_NAMESPACE": "IotPlatformBench",
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_LOG_LEVEL": "ERROR",
    "POWERTOOLS_METRICS_DISABLED": "true",
    "MAX_BATCH_SIZE": str(max(REQUEST_SIZES)),
    "MAX_BODY_BYTES": str(1024 * 1024),
    "MAX_READING_AGE_SECONDS": "86400",
    "MAX_CLOCK_SKEW_SECONDS": "300",
    "PUT_RECORDS_MAX_ATTEMPTS": "3",
    "THRESHOLDS_PARAMETER_NAME": "/iot/bench/thresholds",
    "READING_TTL_DAYS": "30",
    "AGGREGATE_TTL_DAYS": "400",
    "DYNAMODB_MAX_ATTEMPTS": "3",
    "POWERTOOLS_PARAMETERS_MAX_AGE": "300",
}
HEADERS = {"Content-Type": "application/json"}


class Context:
    function_name = "bench"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:bench"
    memory_limit_in_mb = 1024
    aws_request_id = "bench"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


@dataclass
class Measurement:
    calls: Counter[str] = field(default_factory=Counter)
    seconds_in_calls: float = 0.0
    seconds: float = 0.0

    @property
    def own_seconds(self) -> float:
        return self.seconds - self.seconds_in_calls


class CallMeter:
    """Counts AWS API calls by service and operation, and times them, while measuring."""

    def __init__(self) -> None:
        self.measurement: Measurement | None = None
        self.call_started = 0.0

    def before_call(self, event_name: str, **kwargs: Any) -> None:
        if self.measurement:
            _, service, operation = event_name.split(".")
            self.measurement.calls[f"{service} {operation}"] += 1
            self.call_started = time.perf_counter()

    def after_call(self, **kwargs: Any) -> None:
        if self.measurement:
            self.measurement.seconds_in_calls += time.perf_counter() - self.call_started

    @contextmanager
    def measure(self) -> Iterator[Measurement]:
        self.measurement = measurement = Measurement()
        started = time.perf_counter()
        try:
            with quietly():
                yield measurement
        finally:
            measurement.seconds = time.perf_counter() - started
            self.measurement = None


def quietly() -> contextlib.AbstractContextManager[Any]:
    """Drops what the handlers print: Powertools prints its metrics every 100 values, even disabled ones."""
    return contextlib.redirect_stdout(io.StringIO())


@dataclass
class PutRecordsMeter:
    """Wraps a client's put_records: counts the records, their bytes and PUT payload units."""

    put_records: Callable[..., dict[str, Any]]
    records: int = 0
    bytes: int = 0
    payload_units: int = 0

    def __call__(self, **request: Any) -> dict[str, Any]:
        for record in request["Records"]:
            self.records += 1
            self.bytes += len(record["Data"]) + len(record["PartitionKey"].encode())
            self.payload_units += math.ceil(len(record["Data"]) / PUT_PAYLOAD_UNIT_BYTES)
        return self.put_records(**request)


@dataclass
class DynamoDbMeter:
    """Wraps a client's batch and transaction calls: counts the request units they consume on demand.

    An item's size is taken as its JSON length, an upper bound of DynamoDB's measure.
    """

    client: Any
    write_units: int = 0
    read_units: int = 0

    def install(self) -> None:
        for name in ("batch_write_item", "batch_get_item", "transact_write_items"):
            setattr(self.client, name, self._metered(name, getattr(self.client, name)))

    def _metered(self, name: str, call: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
        def metered(**request: Any) -> dict[str, Any]:
            response = call(**request)
            if name == "batch_write_item":
                for requests in request["RequestItems"].values():
                    self.write_units += sum(_kilobytes(r["PutRequest"]["Item"]) for r in requests)
            elif name == "transact_write_items":  # transactional writes cost twice
                self.write_units += sum(2 * _kilobytes(w["Put"]["Item"]) for w in request["TransactItems"])
            else:  # consistent reads: one unit per started 4 KB of each item returned
                for items in response["Responses"].values():
                    self.read_units += sum(math.ceil(_kilobytes(item) / 4) for item in items)
            return response

        return metered


def _kilobytes(item: dict[str, Any]) -> int:
    return math.ceil(len(json.dumps(item)) / 1024)


def load(name: str, **environment: str) -> ModuleType:
    """functions/<name>/handler.py as a new module, imported with `environment`."""
    os.environ.update(environment)
    spec = importlib.util.spec_from_file_location(f"{name}_handler", FUNCTIONS / name / "handler.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def create_stream(name: str) -> None:
    boto3.client("kinesis").create_stream(StreamName=name, ShardCount=1)


def create_tables(suffix: str) -> dict[str, str]:
    """A raw and an aggregates table named after `suffix`; returns the processor's variables naming them."""
    dynamodb = boto3.client("dynamodb")
    names = {"RAW_TABLE_NAME": f"raw-{suffix}", "AGGREGATES_TABLE_NAME": f"aggregates-{suffix}"}
    for table, sort_key in (
        (names["RAW_TABLE_NAME"], "timestamp"),
        (names["AGGREGATES_TABLE_NAME"], "minute"),
    ):
        dynamodb.create_table(
            TableName=table,
            KeySchema=[
                {"AttributeName": "device_id", "KeyType": "HASH"},
                {"AttributeName": sort_key, "KeyType": "RANGE"},
            ],
            AttributeDefinitions=[
                {"AttributeName": "device_id", "AttributeType": "S"},
                {"AttributeName": sort_key, "AttributeType": "S"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )
    return names


def create_alerting() -> None:
    sns, ssm = boto3.client("sns"), boto3.client("ssm")
    os.environ["ALERT_TOPIC_ARN"] = sns.create_topic(Name="alerts")["TopicArn"]
    thresholds = {"temperature": {"max": 80}, "humidity": {"min": 10}}
    ssm.put_parameter(
        Name=os.environ["THRESHOLDS_PARAMETER_NAME"], Type="String", Value=json.dumps(thresholds)
    )


def workload() -> list[dict[str, Any]]:
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=15)
    return [
        {
            "device_id": f"device-{n % DEVICES:04d}",
            "timestamp": (
                start + timedelta(seconds=10 * (n // DEVICES), milliseconds=n % DEVICES)
            ).isoformat(),
            "metrics": {"temperature": 81.0 if n % 100 == 0 else 20 + n % 7 / 2, "humidity": 45.5},
        }
        for n in range(READINGS)
    ]


def post(ingest: ModuleType, readings: list[dict[str, Any]], request_size: int, context: Context) -> None:
    for start in range(0, len(readings), request_size):
        body = json.dumps(readings[start : start + request_size])
        event = {
            "httpMethod": "POST",
            "path": "/v1/readings",
            "headers": HEADERS,
            "body": body,
            "requestContext": {"identity": {"apiKeyId": CLIENT_ID}},
        }
        response = ingest.handler(event, context)
        assert response["statusCode"] == 202, response["body"]


def stream_records(stream: str) -> list[dict[str, Any]]:
    kinesis = boto3.client("kinesis")
    shard_id = kinesis.list_shards(StreamName=stream)["Shards"][0]["ShardId"]
    iterator = kinesis.get_shard_iterator(
        StreamName=stream, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    records: list[dict[str, Any]] = []
    while response := kinesis.get_records(ShardIterator=iterator, Limit=10_000):
        if not response["Records"]:
            return records
        records += response["Records"]
        iterator = response["NextShardIterator"]
    return records


def events(stream: str, batch_size: int) -> list[dict[str, Any]]:
    """The stream's records as event source mapping batches of `batch_size` records."""
    kinesis = boto3.client("kinesis")
    shard_id = kinesis.list_shards(StreamName=stream)["Shards"][0]["ShardId"]
    stream_arn = kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]["StreamARN"]
    records = stream_records(stream)
    role = "arn:aws:iam::123456789012:role/bench"
    return [
        kinesis_event(stream_arn, shard_id, role, records[start : start + batch_size])
        for start in range(0, len(records), batch_size)
    ]


def per_thousand(count: float, readings: int) -> float:
    return count * 1000 / readings


def calls_per_thousand(calls: Counter[str], readings: int) -> str:
    return ", ".join(f"{name} {per_thousand(count, readings):.1f}" for name, count in sorted(calls.items()))


@dataclass(frozen=True)
class IngestFigures:
    request_size: int
    records: float  # per 1,000 readings
    bytes: float
    put_records_calls: float
    payload_units: float
    seconds_per_request: float  # own work plus AWS_CALL_SECONDS per call

    @property
    def readings_per_shard_second(self) -> float:
        return min(SHARD_RECORDS_PER_SECOND * 1000 / self.records, SHARD_BYTES_PER_SECOND * 1000 / self.bytes)


def measure_ingest(meter: CallMeter, readings: list[dict[str, Any]], request_size: int) -> IngestFigures:
    stream = f"readings-{request_size}"
    create_stream(stream)
    ingest = load("ingest", STREAM_NAME=stream)
    put_meter = PutRecordsMeter(ingest.kinesis.put_records)
    ingest.kinesis.put_records = put_meter
    with meter.measure() as measured:
        post(ingest, readings, request_size, Context())
    requests = math.ceil(len(readings) / request_size)
    calls = sum(measured.calls.values())
    return IngestFigures(
        request_size=request_size,
        records=per_thousand(put_meter.records, len(readings)),
        bytes=per_thousand(put_meter.bytes, len(readings)),
        put_records_calls=per_thousand(measured.calls["kinesis PutRecords"], len(readings)),
        payload_units=per_thousand(put_meter.payload_units, len(readings)),
        seconds_per_request=(measured.own_seconds + calls * AWS_CALL_SECONDS) / requests,
    )


def measure_processor(meter: CallMeter, stream: str, readings: int) -> None:
    processor = load("processor", **create_tables("processor"))
    batches = events(stream, BATCH_SIZE)
    records = sum(len(batch["Records"]) for batch in batches)
    for delivery in ("first delivery", "replay of the same batches"):
        with meter.measure() as processed:
            for batch in batches:
                assert processor.handler(batch, Context()) == {"batchItemFailures": []}
        print(f"processor, {delivery}: {readings:,} readings in {records:,} records, batches of {BATCH_SIZE}")
        print(f"  AWS calls per 1,000 readings: {calls_per_thousand(processed.calls, readings)}")
        print(f"  throughput with moto serving the calls: {readings / processed.seconds:,.0f} readings/s")
        print(f"  throughput of its own work: {readings / processed.own_seconds:,.0f} readings/s")


def registry(stores: LocalStores, device_ids: set[str]) -> dict[str, str]:
    """The owners map as the worker publishes it, the bench's devices registered to CLIENT_ID; returns
    ingest's Redis settings, with the AUTH token in a (moto) secret as ElastiCache's is."""
    secret = boto3.client("secretsmanager").create_secret(
        Name="bench-redis-auth-token", SecretString=json.dumps({"auth_token": stores.redis_password})
    )
    ownership = importlib.import_module("readings.ownership")
    client = stores.redis()
    client.hset(ownership.OWNERS_KEY, mapping=dict.fromkeys(device_ids, CLIENT_ID))
    client.set(ownership.OWNERS_PUBLISHED_KEY, int(time.time()), ex=ownership.OWNERS_STALE_SECONDS)
    client.close()
    return {
        "REDIS_HOST": LOOPBACK,
        "REDIS_PORT": str(stores.redis_port),
        "REDIS_TLS": "false",
        "REDIS_CLUSTER": "false",
        "REDIS_AUTH_TOKEN_SECRET_ARN": secret["ARN"],
    }


@contextmanager
def worker_stores(stores: LocalStores) -> Iterator[dict[str, str]]:
    """A migrated database on `stores`' PostgreSQL, their redis-server and an archive directory; yields the
    worker's variables for them."""
    stores.create_database("bench")
    importlib.import_module("stream_worker.migrate").migrate(stores.conninfo("bench"))
    yield {
        "DATABASE_HOST": stores.postgres.host,
        "DATABASE_PORT": str(stores.postgres.port),
        "DATABASE_NAME": "bench",
        "DATABASE_USER": "iot_worker",
        "DATABASE_PASSWORD": PASSWORD,
        "DATABASE_TLS": "false",
        "REDIS_PORT": str(stores.redis_port),
        "REDIS_AUTH_TOKEN": stores.redis_password,
        "ARCHIVE_DIR": str(stores.archive_dir),
    }


@dataclass
class StatementMeter:
    """Counts the SQL statements psycopg's async cursors execute."""

    statements: int = 0

    @contextmanager
    def install(self) -> Iterator[None]:
        execute = psycopg.AsyncCursor.execute

        async def counted(cursor: Any, *arguments: Any, **options: Any) -> Any:
            self.statements += 1
            return await execute(cursor, *arguments, **options)

        psycopg.AsyncCursor.execute = counted  # type: ignore[method-assign,assignment]
        try:
            yield
        finally:
            psycopg.AsyncCursor.execute = execute  # type: ignore[method-assign]


def measure_worker(stores: LocalStores, stream: str, readings: int) -> None:
    worker = importlib.import_module("stream_worker.worker")
    rds = importlib.import_module("readings.rds")
    database = importlib.import_module("stream_worker.database")
    archive_module = importlib.import_module("stream_worker.archive")
    readings_module = importlib.import_module("readings")
    records = [readings_module.unpack(record["Data"]) for record in stream_records(stream)]
    batches: list[list[Any]] = [[]]
    for record in records:  # as worker.next_batch forms them
        if sum(len(r.readings) for r in batches[-1]) >= worker.MAX_BATCH_READINGS:
            batches.append([])
        batches[-1].append(record)

    async def deliver(variables: dict[str, str]) -> None:
        config = rds.DatabaseSettings.from_env(variables)
        async with database.connection_pool(
            config, statement_timeout_seconds=worker.BATCH_DEADLINE_SECONDS
        ) as pool:
            client = redis.asyncio.Redis(
                port=int(variables["REDIS_PORT"]), password=variables["REDIS_AUTH_TOKEN"]
            )
            stores = worker.Stores(pool, archive_module.Archive(Path(variables["ARCHIVE_DIR"])), client)
            for delivery in ("first delivery", "replay of the same batches"):
                meter = StatementMeter()
                started = time.perf_counter()
                with meter.install():
                    for batch in batches:
                        await worker.process(batch, stores)
                seconds = time.perf_counter() - started
                print(f"stream worker, {delivery}: {readings:,} readings in {len(batches)} batches")
                print(f"  SQL statements per 1,000 readings: {per_thousand(meter.statements, readings):.1f}")
                print(f"  throughput (PostgreSQL, archive, Redis): {readings / seconds:,.0f} readings/s")
            await client.aclose()

    with worker_stores(stores) as variables:
        asyncio.run(deliver(variables))


@dataclass(frozen=True)
class ProcessorFigures:
    seconds_per_record: float  # own work plus AWS_CALL_SECONDS per call, one record an invocation
    records: float  # per 1,000 readings
    write_units: float
    read_units: float


def measure_processor_per_record(
    meter: CallMeter, readings: list[dict[str, Any]], request_size: int
) -> ProcessorFigures:
    stream = f"sample-{request_size}"
    create_stream(stream)
    with quietly():
        post(load("ingest", STREAM_NAME=stream), readings, request_size, Context())
    processor = load("processor", **create_tables(f"sample-{request_size}"))
    dynamodb_meter = DynamoDbMeter(processor.dynamodb)
    dynamodb_meter.install()
    batches = events(stream, 1)
    with meter.measure() as processed:
        for batch in batches:
            assert processor.handler(batch, Context()) == {"batchItemFailures": []}
    calls = sum(processed.calls.values())
    return ProcessorFigures(
        seconds_per_record=(processed.own_seconds + calls * AWS_CALL_SECONDS) / len(batches),
        records=per_thousand(len(batches), len(readings)),
        write_units=per_thousand(dynamodb_meter.write_units, len(readings)),
        read_units=per_thousand(dynamodb_meter.read_units, len(readings)),
    )


def monthly_cost(ingest: IngestFigures, processor: ProcessorFigures) -> dict[str, float]:
    """Dollars a month for READINGS_A_DAY readings at prod's sizing, by line."""
    prod = environment("prod", {})
    thousands = READINGS_A_DAY * HOURS_A_MONTH / 24 / 1000
    ingest_requests = thousands * 1000 / ingest.request_size
    invocations = thousands * processor.records
    ingest_gb = prod.functions["ingest"].memory_mb / 1024
    processor_gb = prod.functions["processor"].memory_mb / 1024
    assert prod.ingestion.stream.shard_count is not None
    return {
        "kinesis shard-hours": prod.ingestion.stream.shard_count
        * HOURS_A_MONTH
        * PRICES["kinesis shard-hour"],
        "kinesis PUT payload units": thousands * ingest.payload_units * PRICES["kinesis PUT payload unit"],
        "ingest requests": ingest_requests * PRICES["lambda request"],
        "ingest GB-seconds": ingest_requests
        * ingest.seconds_per_request
        * ingest_gb
        * PRICES["lambda GB-second"],
        "processor requests": invocations * PRICES["lambda request"],
        "processor GB-seconds": (
            invocations * processor.seconds_per_record * processor_gb * PRICES["lambda GB-second"]
        ),
        "dynamodb writes": thousands * processor.write_units * PRICES["dynamodb write request unit"],
        "dynamodb reads": thousands * processor.read_units * PRICES["dynamodb read request unit"],
    }


def main() -> None:
    os.environ.update(ENVIRONMENT)
    sys.dont_write_bytecode = True  # no __pycache__ in functions/: each directory is packaged as it is
    with temporary_stores("bench-stores-") as stores, mock_aws():
        boto3.setup_default_session()
        meter = CallMeter()
        # Clients copy the session's hooks when created, so the hooks go in before the handlers load.
        boto3.DEFAULT_SESSION.events.register("before-call", meter.before_call)
        boto3.DEFAULT_SESSION.events.register("after-call", meter.after_call)
        create_alerting()
        readings = workload()
        os.environ.update(registry(stores, {reading["device_id"] for reading in readings}))

        print(f"Stream capacity: {READINGS:,} readings posted to ingest, per request size")
        print("  request size | records | bytes | PutRecords calls | PUT payload units (per 1,000 readings)")
        print("               | readings per shard-second of capacity")
        ingested = {size: measure_ingest(meter, readings, size) for size in REQUEST_SIZES}
        for figures in ingested.values():
            print(
                f"  {figures.request_size:>12} | {figures.records:,.1f} | {figures.bytes:,.0f} | "
                f"{figures.put_records_calls:.1f} | {figures.payload_units:,.1f} | "
                f"{figures.readings_per_shard_second:,.0f}"
            )

        measure_processor(meter, f"readings-{CONSUMED_REQUEST_SIZE}", READINGS)
        measure_worker(stores, f"readings-{CONSUMED_REQUEST_SIZE}", READINGS)

        print(
            f"Monthly cost of {READINGS_A_DAY:,} readings a day at prod sizing, by request size "
            f"(us-east-1 list prices, 2025-07; Lambda time: own work + {AWS_CALL_SECONDS * 1000:.0f} ms "
            "per AWS call)"
        )
        costs = {
            size: monthly_cost(
                ingested[size], measure_processor_per_record(meter, readings[:COST_SAMPLE], size)
            )
            for size in REQUEST_SIZES
        }
        lines = next(iter(costs.values())).keys()
        print(f"  {'':<26}" + "".join(f"{size:>10}" for size in REQUEST_SIZES))
        for line in lines:
            print(f"  {line:<26}" + "".join(f"{costs[size][line]:>10.2f}" for size in REQUEST_SIZES))
        print(f"  {'total':<26}" + "".join(f"{sum(costs[size].values()):>10.2f}" for size in REQUEST_SIZES))


if __name__ == "__main__":
    main()
