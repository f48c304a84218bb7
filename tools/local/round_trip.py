"""Sample readings through the local environment and back: ingest -> stream -> the processor (DynamoDB) and
the worker (PostgreSQL, Redis, the EFS archive) -> query's three routes.

moto cannot run Lambda code or containers (that takes Docker), so the real handlers run in this process
instead, each loaded fresh from functions/<name>/handler.py with the deployed function's own environment
variables and handed the events that API Gateway and the event source mapping would hand it, and the worker
runs as a process of this machine with its deployed task definition's environment. The emulator creates RDS
and ElastiCache resources but runs no database, so the worker and the functions reach the local PostgreSQL
and redis-server (tools.local.servers) instead; everything else they call is deployed. A deployed AWS
environment is checked through its API instead (tools.verify).
"""

import base64
import gzip
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import psycopg

from iot_constructs.worker import WORKER_CONTAINER
from tools.local.emulator import CREDENTIALS
from tools.local.servers import PASSWORD, LocalStores

FUNCTIONS_DIR = Path(__file__).resolve().parents[2] / "functions"
# The functions run here as in their zips: handler.py beside the shared readings package.
if str(FUNCTIONS_DIR) not in sys.path:
    sys.path.insert(0, str(FUNCTIONS_DIR))
from readings import unpack  # noqa: E402
from readings.ownership import OWNERS_KEY  # noqa: E402
from stream_worker.devices import register  # noqa: E402
from stream_worker.migrate import migrate  # noqa: E402

# Settings of this process, not of the deployed functions: no X-Ray daemon or metrics agent listens here.
LOCAL_RUN_ENVIRON = {
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_METRICS_DISABLED": "true",
    "POWERTOOLS_LOG_LEVEL": "WARNING",
}
STREAM_WAIT_SECONDS = 30
WORKER_WAIT_SECONDS = 60
POLL_SECONDS = 0.5  # Kinesis allows 5 GetRecords calls per second and shard
BREACHING_TEMPERATURE = 85  # above the initial threshold (80), so the alert path runs too


class RoundTripError(AssertionError):
    pass


@dataclass(frozen=True)
class RoundTrip:
    sent: int
    accepted: int
    """Readings the ingest function put on the stream."""
    stored: int
    """Raw readings in the DynamoDB table."""
    aggregated: int
    """Readings counted in DynamoDB's per-minute aggregates."""
    rolled_up: int
    """Readings counted in PostgreSQL's hourly rollups, as the query function's rollups route returns them."""
    archived: int
    """Readings in the worker's archive files."""
    latest: int
    """Devices whose latest reading (Redis, through the query function) is the last one sent."""
    returned: int
    """Readings the query function returned, each equal to one sent."""


@dataclass(frozen=True)
class LambdaContext:
    function_name: str
    function_version: str
    invoked_function_arn: str
    memory_limit_in_mb: int
    aws_request_id: str
    log_group_name: str
    log_stream_name: str
    timeout_seconds: int

    def get_remaining_time_in_millis(self) -> int:
        return self.timeout_seconds * 1000


@dataclass(frozen=True)
class Handler:
    """A deployed function's code, loaded in this process with the function's environment."""

    module: ModuleType
    environment: dict[str, str]
    context: LambdaContext
    role: str

    def invoke(self, event: dict[str, Any]) -> Any:
        with _environment(self.environment):
            return self.module.handler(event, self.context)


def load_outputs(path: Path) -> dict[str, Any]:
    """A stack's outputs from `path`: flat JSON (outputs/local.json, as `terraform output` names them) or the
    file of `cdktf deploy <stack> --outputs-file`, which nests them under the stack's name and under the
    construct that exports each (the alert topic's, under its stream)."""
    outputs: dict[str, Any] = json.loads(path.read_text())
    if "stream_name" not in outputs and len(outputs) == 1:
        (outputs,) = outputs.values()
    return _flat(outputs)


def _flat(outputs: Mapping[str, Any]) -> dict[str, Any]:
    """Outputs without the constructs' nesting: no output of the stack is a map."""
    flat: dict[str, Any] = {}
    for name, value in outputs.items():
        flat |= _flat(value) if isinstance(value, dict) else {name: value}
    return flat


def round_trip(
    outputs: Mapping[str, Any],
    *,
    endpoint: str,
    stores: LocalStores,
    devices: int = 5,
    readings_per_device: int = 20,
) -> RoundTrip:
    """Send `devices` x `readings_per_device` readings, from the devices of the stack's API client, and check
    that each one is stored and counted once in every store, and queried back as it was sent.

    Raises RoundTripError at the first step that does not do what the platform promises.
    """
    region = outputs["alert_topic_arn"].split(":")[3]  # arn:partition:sns:region:account:name
    process = {"AWS_REGION": region, "AWS_DEFAULT_REGION": region, "AWS_ENDPOINT_URL": endpoint}
    process |= {**CREDENTIALS, **LOCAL_RUN_ENVIRON}
    with _environment(process):
        aws = boto3.Session()
        run = f"roundtrip-{uuid.uuid4().hex[:8]}"  # the stores keep earlier runs' readings
        started = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=readings_per_device + 1)
        sent: list[dict[str, Any]] = [
            {
                "device_id": f"{run}-{device}",
                "timestamp": iso(started + timedelta(seconds=second, milliseconds=device)),
                "metrics": {"temperature": 20 + second / 2, "humidity": 40 + device},
                "sequence": second,
            }
            for device in range(devices)
            for second in range(readings_per_device)
        ]
        sent[-1]["metrics"]["temperature"] = BREACHING_TEMPERATURE
        device_ids = sorted({reading["device_id"] for reading in sent})
        client_id = outputs["api_key_id"]

        database = _database_name(aws, outputs)
        stores.create_database(database)
        admin = stores.conninfo(database)
        migrate(admin)
        register(admin, client_id, device_ids)
        with _token_secret(aws, run, stores) as secret_arn, _worker(aws, outputs, stores) as worker:
            _wait(lambda: _owners_published(stores, device_ids), worker, "the worker published no owners")
            overrides = {
                **_redis_settings(stores),
                **_database_settings(stores),
                "REDIS_AUTH_TOKEN_SECRET_ARN": secret_arn,
            }
            ingest, processor, query = (
                _load(aws, name, outputs[f"{name}_function_name"], overrides)
                for name in ("ingest", "processor", "query")
            )
            response = ingest.invoke(
                _api_event("POST", "/v1/readings", client_id=client_id, body=json.dumps(sent))
            )
            if response["statusCode"] != 202:
                raise RoundTripError(f"ingest answered {response['statusCode']}: {response['body']}")
            accepted: int = json.loads(response["body"])["accepted"]

            stream_records = _stream_records(aws, outputs["stream_name"], run, started, accepted)
            _process(aws, processor, outputs["stream_name"], stream_records)
            _wait(lambda: _counted(admin, run) >= accepted, worker, "the worker did not count every reading")

            dynamodb = aws.client("dynamodb")
            stored = sum(len(_items(dynamodb, outputs["raw_table_name"], device)) for device in device_ids)
            aggregated = sum(
                int(item["reading_count"]["N"])
                for device in device_ids
                for item in _items(dynamodb, outputs["aggregates_table_name"], device)
            )
            returned = [r for device in device_ids for r in _readings(query, client_id, device, started)]
            rolled_up = sum(_rolled_up(query, client_id, device, started) for device in device_ids)
            newest = {r["device_id"]: {k: v for k, v in r.items() if k != "device_id"} for r in sent}
            latest = sum(
                _sorted([_latest(query, client_id, device)]) == _sorted([newest[device]])
                for device in device_ids
            )
        archived = _archived(stores, run)
    expected = [{key: value for key, value in r.items() if key != "device_id"} for r in sent]
    if _sorted(returned) != _sorted(expected):
        raise RoundTripError(f"the query function returned {returned}, expected {expected}")
    result = RoundTrip(
        sent=len(sent),
        accepted=accepted,
        stored=stored,
        aggregated=aggregated,
        rolled_up=rolled_up,
        archived=archived,
        latest=latest,
        returned=len(returned),
    )
    if {accepted, stored, aggregated, rolled_up, archived} != {len(sent)} or latest != devices:
        raise RoundTripError(f"readings went missing on the way: {result}")
    return result


def _database_name(aws: boto3.Session, outputs: Mapping[str, Any]) -> str:
    """The database the deployed query function reads (DATABASE_NAME)."""
    function = outputs["query_function_name"]
    configuration = aws.client("lambda").get_function_configuration(FunctionName=function)
    name: str = configuration["Environment"]["Variables"]["DATABASE_NAME"]
    return name


def _redis_settings(stores: LocalStores) -> dict[str, str]:
    """Where the worker and the functions find the local redis-server, instead of ElastiCache."""
    return {
        "REDIS_HOST": "127.0.0.1",
        "REDIS_PORT": str(stores.redis_port),
        "REDIS_TLS": "false",
        "REDIS_CLUSTER": "false",
    }


def _database_settings(stores: LocalStores) -> dict[str, str]:
    """Where the worker and the query function find the local PostgreSQL, instead of RDS: a password login
    without TLS, where RDS takes an IAM token over verified TLS."""
    return {
        "DATABASE_HOST": stores.postgres.host,
        "DATABASE_PORT": str(stores.postgres.port),
        "DATABASE_PASSWORD": PASSWORD,
        "DATABASE_TLS": "false",
    }


@contextmanager
def _token_secret(aws: boto3.Session, run: str, stores: LocalStores) -> Iterator[str]:
    """The redis-server's password as ElastiCache's token secret holds it, in the emulator for the run: the
    local stack has no cache, so no secret of its own."""
    secretsmanager = aws.client("secretsmanager")
    arn: str = secretsmanager.create_secret(
        Name=f"{run}-redis-auth-token", SecretString=json.dumps({"auth_token": stores.redis_password})
    )["ARN"]
    try:
        yield arn
    finally:
        secretsmanager.delete_secret(SecretId=arn, ForceDeleteWithoutRecovery=True)


def worker_environment(ecs: Any, outputs: Mapping[str, Any], stores: LocalStores) -> dict[str, str]:
    """The deployed worker container's environment (read with the ECS client `ecs`), pointed at the local
    stores instead of RDS, ElastiCache and EFS, with the Redis token ECS would inject from its secret."""
    (service,) = ecs.describe_services(
        cluster=outputs["worker_cluster_name"], services=[outputs["worker_service_name"]]
    )["services"]
    definition = ecs.describe_task_definition(taskDefinition=service["taskDefinition"])["taskDefinition"]
    (container,) = (c for c in definition["containerDefinitions"] if c["name"] == WORKER_CONTAINER)
    environment = {variable["name"]: variable["value"] for variable in container.get("environment", [])}
    return environment | {
        **_redis_settings(stores),
        **_database_settings(stores),
        "REDIS_AUTH_TOKEN": stores.redis_password,
        "ARCHIVE_DIR": str(stores.archive_dir),
    }


@contextmanager
def _worker(
    aws: boto3.Session, outputs: Mapping[str, Any], stores: LocalStores
) -> Iterator[subprocess.Popen[bytes]]:
    """The stream worker as a process of this machine, with its deployed container's environment pointed at
    the local stores; stopped as ECS stops it (SIGTERM) when the block ends."""
    environment = worker_environment(aws.client("ecs"), outputs, stores)
    stores.archive_dir.mkdir(parents=True, exist_ok=True)
    log = stores.archive_dir.parent / "worker.log"
    with log.open("ab") as output:
        worker = subprocess.Popen(
            [sys.executable, "-m", "stream_worker.worker"],
            cwd=FUNCTIONS_DIR,
            env={**os.environ, **environment, "PYTHONDONTWRITEBYTECODE": "1"},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        yield worker
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def _wait(condition: Any, worker: subprocess.Popen[bytes], failure: str) -> None:
    deadline = time.monotonic() + WORKER_WAIT_SECONDS
    while not condition():
        if worker.poll() is not None:
            raise RoundTripError(f"{failure}: it exited with {worker.returncode} (see its log)")
        if time.monotonic() > deadline:
            raise RoundTripError(f"{failure} within {WORKER_WAIT_SECONDS} s")
        time.sleep(POLL_SECONDS)


def _owners_published(stores: LocalStores, device_ids: list[str]) -> bool:
    client = stores.redis()
    try:
        return None not in client.hmget(OWNERS_KEY, device_ids)
    finally:
        client.close()


def _counted(admin: str, run: str) -> int:
    with psycopg.connect(admin) as connection:
        row = connection.execute(
            "SELECT count(*) FROM counted_readings WHERE device_id LIKE %s", (f"{run}-%",)
        ).fetchone()
    return int(row[0]) if row else 0


def _archived(stores: LocalStores, run: str) -> int:
    """This run's readings in the worker's published archive files."""
    return sum(
        json.loads(line)["device_id"].startswith(f"{run}-")
        for path in stores.archive_dir.glob("[0-9]*/**/*.jsonl.gz")
        for line in gzip.decompress(path.read_bytes()).splitlines()
    )


def _load(aws: boto3.Session, name: str, function_name: str, overrides: Mapping[str, str]) -> Handler:
    """functions/<name>/handler.py as a new module, imported with the deployed function's environment and
    `overrides`."""
    configuration = aws.client("lambda").get_function_configuration(FunctionName=function_name)
    environment: dict[str, str] = {**configuration.get("Environment", {}).get("Variables", {}), **overrides}
    context = LambdaContext(
        function_name=function_name,
        function_version=configuration["Version"],
        invoked_function_arn=configuration["FunctionArn"],
        memory_limit_in_mb=configuration["MemorySize"],
        aws_request_id=str(uuid.uuid4()),
        log_group_name=f"/aws/lambda/{function_name}",
        log_stream_name=f"{datetime.now(UTC):%Y/%m/%d}/[$LATEST]{uuid.uuid4().hex}",
        timeout_seconds=configuration["Timeout"],
    )
    module_name = f"{name}_handler_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(module_name, FUNCTIONS_DIR / name / "handler.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Handlers parse their environment and create their clients at import. No __pycache__ in functions/:
    # each directory is zipped, and hashed, as it is. Dataclasses look their module up while it loads.
    writes_bytecode, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    sys.modules[module_name] = module
    try:
        with _environment(environment):
            spec.loader.exec_module(module)
    finally:
        del sys.modules[module_name]
        sys.dont_write_bytecode = writes_bytecode
    return Handler(module, environment, context, role=configuration["Role"])


def _stream_records(
    aws: boto3.Session, stream_name: str, run: str, since: datetime, expected: int
) -> dict[str, list[dict[str, Any]]]:
    """This run's records on the stream, by shard, in order, as GetRecords returns them."""
    kinesis = aws.client("kinesis")
    shards = [
        shard["ShardId"]
        for page in kinesis.get_paginator("list_shards").paginate(StreamName=stream_name)
        for shard in page["Shards"]
    ]
    iterators = {
        shard: kinesis.get_shard_iterator(
            StreamName=stream_name,
            ShardId=shard,
            ShardIteratorType="AT_TIMESTAMP",
            Timestamp=since - timedelta(seconds=1),
        )["ShardIterator"]
        for shard in shards
    }
    records: dict[str, list[dict[str, Any]]] = {shard: [] for shard in shards}
    found = 0
    deadline = time.monotonic() + STREAM_WAIT_SECONDS
    while True:
        for shard, iterator in iterators.items():
            response = kinesis.get_records(ShardIterator=iterator)
            for record in response["Records"]:
                # A record packs several readings (functions/readings); this run's devices are named for it.
                ours = [r for r in unpack(record["Data"]).readings if r.device_id.startswith(run)]
                if ours:
                    records[shard].append(record)
                    found += len(ours)
            iterators[shard] = response["NextShardIterator"]
        if found >= expected:
            return records
        if time.monotonic() > deadline:
            raise RoundTripError(f"{found} of {expected} readings arrived on {stream_name}")
        time.sleep(POLL_SECONDS)


def _process(
    aws: boto3.Session, processor: Handler, stream_name: str, records: dict[str, list[dict[str, Any]]]
) -> None:
    """Hand the records to the processor in the batches its event source mapping would."""
    summary = aws.client("kinesis").describe_stream_summary(StreamName=stream_name)
    stream_arn = summary["StreamDescriptionSummary"]["StreamARN"]
    mappings = aws.client("lambda").list_event_source_mappings(EventSourceArn=stream_arn)[
        "EventSourceMappings"
    ]
    function_arn = processor.context.invoked_function_arn
    batch_sizes = [m["BatchSize"] for m in mappings if m["FunctionArn"] == function_arn]
    if not batch_sizes:
        raise RoundTripError(f"no event source mapping feeds {stream_name} to {function_arn}")
    for shard, shard_records in records.items():
        for start in range(0, len(shard_records), batch_sizes[0]):
            batch = shard_records[start : start + batch_sizes[0]]
            response = processor.invoke(kinesis_event(stream_arn, shard, processor.role, batch))
            if response["batchItemFailures"]:
                raise RoundTripError(f"the processor reported failures: {response['batchItemFailures']}")


def _items(dynamodb: Any, table: str, device_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for page in dynamodb.get_paginator("query").paginate(
        TableName=table,
        KeyConditionExpression="device_id = :device_id",
        ExpressionAttributeValues={":device_id": {"S": device_id}},
        ConsistentRead=True,
    ):
        items += page["Items"]
    return items


def _get(query: Handler, client_id: str, device_id: str, route: str, parameters: dict[str, str]) -> Any:
    """The query function's answer to GET /v1/devices/{device_id}/<route>, which must be a 200."""
    response = query.invoke(
        _api_event(
            "GET",
            f"/v1/devices/{{device_id}}/{route}",
            client_id=client_id,
            path_parameters={"device_id": device_id},
            query=parameters or None,
        )
    )
    if response["statusCode"] != 200:
        raise RoundTripError(f"query's {route} answered {response['statusCode']}: {response['body']}")
    return json.loads(response["body"])


def _readings(query: Handler, client_id: str, device_id: str, since: datetime) -> list[dict[str, Any]]:
    """Every reading of the device since `since`, page by page, as a client of the API would get them."""
    readings: list[dict[str, Any]] = []
    parameters = {"from": iso(since), "limit": "7"}  # a small page, so that paging is exercised
    while True:
        body = _get(query, client_id, device_id, "readings", parameters)
        readings += body["readings"]
        if not body["next_token"]:
            return readings
        parameters = {**parameters, "next_token": body["next_token"]}


def _rolled_up(query: Handler, client_id: str, device_id: str, since: datetime) -> int:
    """The device's readings counted in its hourly rollups since the hour of `since` (every reading has a
    temperature)."""
    hour = since.replace(minute=0, second=0)
    body = _get(query, client_id, device_id, "rollups", {"from": iso(hour), "resolution": "hour"})
    return sum(int(period["metrics"]["temperature"]["count"]) for period in body["rollups"])


def _latest(query: Handler, client_id: str, device_id: str) -> dict[str, Any]:
    reading: dict[str, Any] = _get(query, client_id, device_id, "latest", {})["reading"]
    return reading


def _api_event(
    method: str,
    resource: str,
    *,
    path_parameters: dict[str, str] | None = None,
    client_id: str,
    query: dict[str, str] | None = None,
    body: str | None = None,
) -> dict[str, Any]:
    """A REST API (v1) Lambda proxy integration event, as API Gateway sends it to the function for a
    request with the API key `client_id`."""
    path = resource.format_map(path_parameters or {})
    headers = {"Accept": "application/json", "Content-Type": "application/json", "User-Agent": "tools.local"}
    now = datetime.now(UTC)
    return {
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {name: [value] for name, value in headers.items()},
        "queryStringParameters": query,
        "multiValueQueryStringParameters": {k: [v] for k, v in query.items()} if query else None,
        "pathParameters": path_parameters,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": resource,
            "httpMethod": method,
            "path": f"/local{path}",
            "stage": "local",
            "protocol": "HTTP/1.1",
            "requestId": str(uuid.uuid4()),
            "requestTime": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "requestTimeEpoch": int(now.timestamp() * 1000),
            "identity": {"sourceIp": "127.0.0.1", "userAgent": "tools.local", "apiKeyId": client_id},
        },
        "body": body,
        "isBase64Encoded": False,
    }


def kinesis_event(stream_arn: str, shard: str, role: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    """The event a Kinesis event source mapping delivers for records as GetRecords returns them."""
    return {
        "Records": [
            {
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": record["PartitionKey"],
                    "sequenceNumber": record["SequenceNumber"],
                    "data": base64.b64encode(record["Data"]).decode(),
                    "approximateArrivalTimestamp": record["ApproximateArrivalTimestamp"].timestamp(),
                },
                "eventSource": "aws:kinesis",
                "eventVersion": "1.0",
                "eventID": f"{shard}:{record['SequenceNumber']}",
                "eventName": "aws:kinesis:record",
                "invokeIdentityArn": role,
                "awsRegion": stream_arn.split(":")[3],
                "eventSourceARN": stream_arn,
            }
            for record in records
        ]
    }


@contextmanager
def _environment(variables: Mapping[str, str]) -> Iterator[None]:
    """Set process environment variables for the duration, then restore the previous values."""
    previous = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                del os.environ[name]
            else:
                os.environ[name] = value


def iso(moment: datetime) -> str:
    """`moment` as the API takes timestamps: ISO 8601 in UTC, to the millisecond."""
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _sorted(readings: list[dict[str, Any]]) -> list[str]:
    """The readings in a comparable form; DynamoDB gives 20.0 back as 20."""
    return sorted(
        json.dumps({**r, "metrics": {k: float(v) for k, v in r["metrics"].items()}}, sort_keys=True)
        for r in readings
    )
