"""Moto-backed AWS resources, a real redis-server and PostgreSQL, and freshly loaded Lambda handlers for the
function tests."""

import contextlib
import importlib.util
import itertools
import json
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
import redis
from moto import mock_aws
from redis.typing import EncodableT, FieldT

from tests.functions import FUNCTIONS
from tests.functions.events import CLIENT_ID, kinesis_event
from tests.postgres import NewDatabase, PostgresDatabase
from tools.local.servers import LOOPBACK, free_port, redis_server_executable, start_redis

# Fixtures for the function tests, and what the other tests take from here.
__all__ = ["FUNCTIONS", "redis_server_executable"]

REGION = "eu-west-1"
THRESHOLDS = {"temperature": {"max": 80}, "humidity": {"min": 10, "max": 90}}
REDIS_AUTH_TOKEN = "functions-test-auth-token-0123456789"
OTHER_CLIENT_ID = "zyxw9876vu"
# The devices the tests name, registered to the recorded events' client unless a test says otherwise.
OWNED_DEVICES = [
    *(f"dev-{n}" for n in range(100)),
    *(f"dev-{n:02}" for n in range(10)),
    *(f"device-{n:04}" for n in range(1000)),
    *(f"{group}-{n}" for group in ("a", "b", "c", "old", "new") for n in range(10)),
    "dev-unknown",
]
_module_numbers = itertools.count()


def free_cluster_port() -> int:
    """A free port for a Redis Cluster node, whose cluster bus listens 10000 ports higher."""
    while (port := free_port()) > 65535 - 10000:
        pass
    return port


@dataclass(frozen=True)
class RedisServer:
    port: int
    client: redis.Redis


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@contextmanager
def running_redis(directory: Path) -> Iterator[RedisServer]:
    """A redis-server (tools.local.servers) requiring REDIS_AUTH_TOKEN, as ElastiCache requires its token."""
    port = free_port()
    process = start_redis(directory, port, REDIS_AUTH_TOKEN)
    client = redis.Redis(port=port, password=REDIS_AUTH_TOKEN, socket_timeout=2, decode_responses=True)
    try:
        yield RedisServer(port, client)
    finally:
        client.close()
        process.terminate()
        process.wait(10)


@pytest.fixture
def database(new_database: NewDatabase) -> PostgresDatabase:
    """The test's own database on the session's PostgreSQL (tests.postgres), migrated, for the rollups."""
    return new_database()


def certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A new certificate authority (its PEM file), and a certificate it signed for localhost with its key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.now(UTC)
    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "functions test CA")])

    def signed(subject: x509.Name, key: ec.EllipticCurvePrivateKey, extension: x509.ExtensionType) -> bytes:
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(hours=1))
            .add_extension(extension, critical=isinstance(extension, x509.BasicConstraints))
        )
        return builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)

    ca, certificate, key = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    ca.write_bytes(signed(ca_name, ca_key, x509.BasicConstraints(ca=True, path_length=None)))
    localhost = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    certificate.write_bytes(
        signed(localhost, server_key, x509.SubjectAlternativeName([x509.DNSName("localhost")]))
    )
    key.write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return ca, certificate, key


@contextmanager
def tls_relay(
    directory: Path, target_port: int, negotiate: Callable[[socket.socket], None] = lambda client: None
) -> Iterator[tuple[int, Path]]:
    """A loopback port that serves TLS with a certificate for localhost, relaying each connection in the
    clear to `target_port`, and the CA bundle that verifies it: the TLS of ElastiCache or RDS in front of the
    tests' servers, which are built without it. `negotiate` runs first on each connection, in the clear."""
    ca, certificate, key = certificates(directory)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificate, key)
    listener = socket.create_server((LOOPBACK, 0))

    def relay(source: socket.socket, target: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                target.sendall(data)
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_WR)

    def serve() -> None:
        with contextlib.suppress(OSError):  # the listener closed: the test is over
            while True:
                client, _ = listener.accept()
                negotiate(client)
                try:
                    secure = context.wrap_socket(client, server_side=True)
                except ssl.SSLError:  # the client refused the certificate
                    client.close()
                    continue
                server = socket.create_connection((LOOPBACK, target_port))
                threading.Thread(target=relay, args=(secure, server), daemon=True).start()
                threading.Thread(target=relay, args=(server, secure), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield listener.getsockname()[1], ca
    finally:
        listener.close()


@dataclass(frozen=True)
class Stores:
    """What ingest and query read in Redis: the owners map, with its AUTH token's secret (the rollups are
    in the test's `database`)."""

    redis: redis.Redis
    redis_port: int
    secretsmanager: Any
    auth_token_secret_arn: str

    def publish_owners(self, owners: dict[str, str]) -> None:
        """Replaces the owners map, and marks it published, as the stream worker does."""
        from readings.ownership import OWNERS_KEY, OWNERS_PUBLISHED_KEY, OWNERS_STALE_SECONDS

        mapping: dict[FieldT, EncodableT] = {device: owner for device, owner in owners.items()}
        pipeline = self.redis.pipeline()
        pipeline.delete(OWNERS_KEY)
        if owners:
            pipeline.hset(OWNERS_KEY, mapping=mapping)
        pipeline.set(OWNERS_PUBLISHED_KEY, int(time.time()), ex=OWNERS_STALE_SECONDS)
        pipeline.execute()

    def environment(self) -> dict[str, str]:
        return {
            "REDIS_HOST": "127.0.0.1",
            "REDIS_PORT": str(self.redis_port),
            "REDIS_TLS": "false",
            "REDIS_CLUSTER": "false",
            "REDIS_AUTH_TOKEN_SECRET_ARN": self.auth_token_secret_arn,
        }


@pytest.fixture
def stores(aws: "Aws", redis_server: RedisServer, harness_client: "HarnessClient") -> Stores:
    redis_server.client.flushall()
    secretsmanager = harness_client("secretsmanager")
    secret_arn = secretsmanager.create_secret(
        Name="iot/redis/auth-token", SecretString=json.dumps({"auth_token": REDIS_AUTH_TOKEN})
    )["ARN"]
    stores = Stores(redis_server.client, redis_server.port, secretsmanager, secret_arn)
    stores.publish_owners(dict.fromkeys(OWNED_DEVICES, CLIENT_ID))
    return stores


@dataclass(frozen=True)
class Aws:
    kinesis: Any
    dynamodb: Any
    sns: Any
    sqs: Any
    ssm: Any
    stream_name: str
    stream_arn: str
    raw_table: str
    aggregates_table: str
    topic_arn: str
    alerts_queue_url: str
    thresholds_parameter: str

    def stream_event(self) -> dict[str, Any]:
        """Every record on the (single-shard) stream, as the event source mapping would deliver them."""
        shard_id = self.kinesis.list_shards(StreamName=self.stream_name)["Shards"][0]["ShardId"]
        iterator = self.kinesis.get_shard_iterator(
            StreamName=self.stream_name, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        records: list[dict[str, Any]] = []
        while True:
            response = self.kinesis.get_records(ShardIterator=iterator)
            if not response["Records"]:
                return kinesis_event(self.stream_arn, shard_id, records)
            records += response["Records"]
            iterator = response["NextShardIterator"]

    def scan(self, table: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.dynamodb.scan(TableName=table, ConsistentRead=True)["Items"]
        return sorted(items, key=lambda item: json.dumps(item, sort_keys=True))

    def alerts(self) -> list[dict[str, Any]]:
        alerts = []
        while messages := self.sqs.receive_message(
            QueueUrl=self.alerts_queue_url, MaxNumberOfMessages=10
        ).get("Messages"):
            for message in messages:
                alerts.append(json.loads(message["Body"]))
                self.sqs.delete_message(
                    QueueUrl=self.alerts_queue_url, ReceiptHandle=message["ReceiptHandle"]
                )
        return alerts


def create_tables(dynamodb: Any, raw_table: str, aggregates_table: str) -> None:
    """The tables as the infrastructure defines them (key schema only: TTL and keys are moto-agnostic)."""
    for name, sort_key in ((raw_table, "timestamp"), (aggregates_table, "minute")):
        dynamodb.create_table(
            TableName=name,
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


HarnessClient = Callable[[str], Any]


@pytest.fixture(scope="session")
def harness_client() -> HarnessClient:
    """The harness's client of an AWS service, made once per session: moto answers every client while a test's
    mock is active, and making a client takes longer than most of the calls the harness makes with it."""

    @cache
    def client(service: str) -> Any:
        return boto3.client(
            service, region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing"
        )

    return client


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, harness_client: HarnessClient) -> Iterator[Aws]:
    for name, value in {
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "POWERTOOLS_SERVICE_NAME": "iot-functions-test",
        "POWERTOOLS_METRICS_NAMESPACE": "IotPlatformTest",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_LOG_LEVEL": "WARNING",
    }.items():
        monkeypatch.setenv(name, value)
    # Keeping boto3's default session across tests keeps the service models it has read: re-reading them
    # for every client that a test and its freshly loaded handlers create would triple the suite's time.
    with mock_aws(config={"core": {"reset_boto3_session": False}}):
        kinesis, dynamodb, sns, sqs, ssm = (
            harness_client(service) for service in ("kinesis", "dynamodb", "sns", "sqs", "ssm")
        )
        kinesis.create_stream(StreamName="readings", ShardCount=1)
        create_tables(dynamodb, "raw-readings", "aggregates")
        topic_arn = sns.create_topic(Name="alerts")["TopicArn"]
        queue_url = sqs.create_queue(QueueName="alerts")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        sns.subscribe(
            TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn, Attributes={"RawMessageDelivery": "true"}
        )
        ssm.put_parameter(Name="/iot/test/thresholds", Type="String", Value=json.dumps(THRESHOLDS))
        yield Aws(
            kinesis=kinesis,
            dynamodb=dynamodb,
            sns=sns,
            sqs=sqs,
            ssm=ssm,
            stream_name="readings",
            stream_arn=kinesis.describe_stream_summary(StreamName="readings")["StreamDescriptionSummary"][
                "StreamARN"
            ],
            raw_table="raw-readings",
            aggregates_table="aggregates",
            topic_arn=topic_arn,
            alerts_queue_url=queue_url,
            thresholds_parameter="/iot/test/thresholds",
        )


def function_environment(aws: Aws) -> dict[str, dict[str, str]]:
    return {
        "ingest": {
            "STREAM_NAME": aws.stream_name,
            "MAX_BATCH_SIZE": "500",
            "MAX_BODY_BYTES": str(1024 * 1024),
            "MAX_READING_AGE_SECONDS": str(7 * 24 * 3600),
            "MAX_CLOCK_SKEW_SECONDS": "300",
            "PUT_RECORDS_MAX_ATTEMPTS": "3",
        },
        "processor": {
            "RAW_TABLE_NAME": aws.raw_table,
            "AGGREGATES_TABLE_NAME": aws.aggregates_table,
            "ALERT_TOPIC_ARN": aws.topic_arn,
            "THRESHOLDS_PARAMETER_NAME": aws.thresholds_parameter,
            "READING_TTL_DAYS": "30",
            "AGGREGATE_TTL_DAYS": "400",
            "DYNAMODB_MAX_ATTEMPTS": "3",
        },
        "query": {"RAW_TABLE_NAME": aws.raw_table, "AWS_REGION": REGION},
    }


LoadFunction = Callable[..., ModuleType]


@pytest.fixture
def load_function(
    aws: Aws, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Iterator[LoadFunction]:
    """Loads functions/<name>/handler.py as a new module, with the test's environment and overrides.

    Handlers parse their environment and create clients at import, so each load is fresh and unshared.
    Ingest and query also get the stores (started for the tests that load them); the connections a query
    module made are closed after the test, so that they do not pile up on the session's PostgreSQL.
    """
    queries: list[ModuleType] = []

    def load(name: str, **overrides: str) -> ModuleType:
        environment = function_environment(aws)[name]
        if name in ("ingest", "query"):
            stores: Stores = request.getfixturevalue("stores")
            environment |= stores.environment()
        if name == "query":
            database: PostgresDatabase = request.getfixturevalue("database")
            environment |= database.environment("iot_reader")  # the reader, with a password and no TLS
        for variable, value in (environment | overrides).items():
            monkeypatch.setenv(variable, value)
        module_name = f"{name}_handler_{next(_module_numbers)}"
        spec = importlib.util.spec_from_file_location(module_name, FUNCTIONS / name / "handler.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, module_name, module)  # dataclasses look their module up
        # No __pycache__ in functions/: each directory is zipped, and hashed, as it is.
        monkeypatch.setattr(sys, "dont_write_bytecode", True)
        spec.loader.exec_module(module)
        if name == "query":
            queries.append(module)
        return module

    yield load
    for query in queries:
        query.database.close()


@pytest.fixture
def ingest(load_function: LoadFunction) -> ModuleType:
    return load_function("ingest")


@pytest.fixture
def processor(load_function: LoadFunction) -> ModuleType:
    return load_function("processor")


@pytest.fixture
def query(load_function: LoadFunction) -> ModuleType:
    return load_function("query")


@dataclass(frozen=True)
class LambdaContext:
    function_name: str = "iot-function-test"
    function_version: str = "$LATEST"
    invoked_function_arn: str = f"arn:aws:lambda:{REGION}:123456789012:function:iot-function-test"
    memory_limit_in_mb: int = 256
    aws_request_id: str = "c6af9ac6-7b61-11e6-9a41-93e8deadbeef"
    log_group_name: str = "/aws/lambda/iot-function-test"
    log_stream_name: str = "2026/11/23/[$LATEST]abcdef"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


@pytest.fixture
def context() -> LambdaContext:
    return LambdaContext()
