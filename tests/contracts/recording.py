"""Runs each function's handler and the stream worker on representative events against moto, a real
redis-server and a real PostgreSQL, and records every AWS call they make (see recorder.py).

Resources in moto carry placeholder names, each standing for the deployment setting that names the real one
(`PLACEHOLDERS`): a call to `contract-raw-readings` is a call to whatever the principal's RAW_TABLE_NAME
names in a given environment's stack. The recording runs once; permissions.py resolves it against every stack.
"""

from __future__ import annotations

import copy
import importlib.util
import io
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest

from tests.contracts.recorder import Call, Recorder
from tests.functions.conftest import (
    FUNCTIONS,
    THRESHOLDS,
    Aws,
    LambdaContext,
    create_tables,
    function_environment,
)
from tests.functions.events import CLIENT_ID, get_readings, minutes_ago, post_readings, reading
from tools.local.servers import free_port, start_postgres, start_redis, stop_postgres

PROJECT_ROOT = Path(__file__).resolve().parents[2]
REGION = "eu-west-1"
ROTATED_SECRET = "the secret whose rotation invokes the function"
# Placeholder resource name -> the deployment setting that names the real resource.
PLACEHOLDERS = {
    "contract-stream": "STREAM_NAME",
    "contract-raw-readings": "RAW_TABLE_NAME",
    "contract-aggregates": "AGGREGATES_TABLE_NAME",
    "contract-alerts": "ALERT_TOPIC_ARN",
    "contract-thresholds": "THRESHOLDS_PARAMETER_NAME",
    "contract-redis": "REPLICATION_GROUP_ID",
    "contract-token": ROTATED_SECRET,
    "contract-cache-token": "REDIS_AUTH_TOKEN_SECRET_ARN",
}
OLD_TOKEN = "Old-token-0123456789-abcdefABCDEF"
REDIS_PASSWORD = "contracts-redis-password"
DATABASE_NAME = "iot"
# The server trusts local logins (pgserver's initdb): any password will do, and setting one makes the code
# take its password path instead of asking for an IAM authentication token.
DATABASE_PASSWORD = "trusted-locally"
# The devices the harness sends readings of, registered to the recorded API events' client.
DEVICES = ("device-1", "device-2", "device-3")
WORKER_DEADLINE_SECONDS = 120
_module_numbers = itertools.count()


@dataclass(frozen=True)
class Recording:
    calls: dict[str, tuple[Call, ...]]
    """Principal (ingest, processor, query, redis-rotation, worker) -> the calls its code made."""


def setting_for(resource: str) -> str | None:
    """The deployment setting a recorded resource stands for; None for a resource the harness did not make."""
    return next((setting for name, setting in PLACEHOLDERS.items() if name in resource), None)


def wait_until(condition: Callable[[], bool], seconds: float, failure: Callable[[], str]) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"after {seconds} s: {failure()}")
        time.sleep(0.2)


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=1).read()
    except OSError:
        return False
    return True


@contextmanager
def moto_server(logs: Path) -> Iterator[str]:
    """A moto server in its own process, so that its state and settings stay out of this one."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with (logs / "moto.log").open("wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log
        )
        try:
            wait_until(lambda: _answers(f"{endpoint}/moto-api/"), 60, lambda: (logs / "moto.log").read_text())
            # A rotation needs a registered function; moto must not try to run it in Docker.
            request = urllib.request.Request(
                f"{endpoint}/moto-api/config",
                data=json.dumps({"lambda": {"use_docker": False}}).encode(),
                headers={"Content-Type": "application/json"},
                method="POST",
            )
            urllib.request.urlopen(request, timeout=10).read()
            yield endpoint
        finally:
            stop(server)


def stop(server: subprocess.Popen[bytes]) -> None:
    """Stop a server this harness started, killing it if it does not stop when asked."""
    server.terminate()
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


@contextmanager
def redis_server(directory: Path, password: str) -> Iterator[int]:
    port = free_port()
    server = start_redis(directory, port, password)
    try:
        yield port
    finally:
        stop(server)


@contextmanager
def postgres_server(directory: Path) -> Iterator[int]:
    """PostgreSQL on a loopback port, as RDS listens on its endpoint, with the empty database DATABASE_NAME;
    yields the port."""
    import psycopg

    server = start_postgres(directory / "postgres", free_port())
    try:
        with psycopg.connect(
            host=server.host, port=server.port, dbname="postgres", user="postgres", autocommit=True
        ) as admin:
            admin.execute(f"CREATE DATABASE {DATABASE_NAME}".encode())
        yield server.port
    finally:
        stop_postgres(server.data)


def database_environment(port: int, user: str) -> dict[str, str]:
    """A login as `user`, with a password and without TLS (the test server's), as the deployment's
    DATABASE_* name the database."""
    return {
        "DATABASE_HOST": "127.0.0.1",
        "DATABASE_PORT": str(port),
        "DATABASE_NAME": DATABASE_NAME,
        "DATABASE_USER": user,
        "DATABASE_PASSWORD": DATABASE_PASSWORD,
        "DATABASE_TLS": "false",
    }


def admin_command(port: int, *arguments: str) -> None:
    """One of the admin container's commands (python -m stream_worker.<...>), as the admin user."""
    environment = {
        "PATH": os.environ["PATH"],
        "PYTHONDONTWRITEBYTECODE": "1",
        "DATABASE_HOST": "127.0.0.1",
        "DATABASE_PORT": str(port),
        "DATABASE_NAME": DATABASE_NAME,
        "DATABASE_ADMIN_USER": "postgres",
        "DATABASE_ADMIN_PASSWORD": DATABASE_PASSWORD,
        "DATABASE_TLS": "false",
    }
    # As the image runs it: from a directory holding stream_worker/ and readings/.
    done = subprocess.run(
        [sys.executable, "-m", *arguments], cwd=FUNCTIONS, env=environment, capture_output=True, text=True
    )
    assert done.returncode == 0, f"{' '.join(arguments)} failed: {done.stdout}{done.stderr}"


def publish_owners(redis_port: int) -> None:
    """The owners map as the worker publishes it from the registry (readings.ownership), so that ingest
    accepts the harness's devices before the worker first runs."""
    import redis
    from readings.ownership import OWNERS_KEY, OWNERS_PUBLISHED_KEY, OWNERS_STALE_SECONDS

    with redis.Redis(port=redis_port, password=REDIS_PASSWORD) as client:
        client.hset(OWNERS_KEY, mapping=dict.fromkeys(DEVICES, CLIENT_ID))
        client.set(OWNERS_PUBLISHED_KEY, int(time.time()), ex=OWNERS_STALE_SECONDS)


def load_handler(name: str, patch: pytest.MonkeyPatch, environment: dict[str, str]) -> ModuleType:
    """functions/<name>/handler.py as a new module: handlers read settings and make clients at import."""
    for variable, value in environment.items():
        patch.setenv(variable, value)
    module_name = f"contract_{name}_handler_{next(_module_numbers)}"
    spec = importlib.util.spec_from_file_location(module_name, FUNCTIONS / name / "handler.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    patch.setitem(sys.modules, module_name, module)
    patch.setattr(sys, "dont_write_bytecode", True)
    spec.loader.exec_module(module)
    return module


def record() -> Recording:
    """Runs everything once and returns what each principal called."""
    calls: dict[str, set[Call]] = {}
    recorder = Recorder(lambda principal, call: calls.setdefault(principal, set()).add(call))
    with tempfile.TemporaryDirectory(prefix="contracts-") as scratch, pytest.MonkeyPatch.context() as patch:
        directory = Path(scratch)
        with (
            moto_server(directory) as endpoint,
            redis_server(directory, REDIS_PASSWORD) as redis_port,
            postgres_server(directory) as postgres_port,
        ):
            settings = {
                "AWS_ENDPOINT_URL": endpoint,
                "AWS_DEFAULT_REGION": REGION,
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "POWERTOOLS_SERVICE_NAME": "contracts",
                "POWERTOOLS_METRICS_NAMESPACE": "Contracts",
                "POWERTOOLS_TRACE_DISABLED": "true",
                "POWERTOOLS_METRICS_DISABLED": "true",
                "POWERTOOLS_LOG_LEVEL": "ERROR",
            }
            for variable, value in settings.items():
                patch.setenv(variable, value)
            harness = boto3.session.Session(region_name=REGION)
            aws = create_resources(harness)
            token_secret_arn = harness.client("secretsmanager").create_secret(
                Name="contract-cache-token", SecretString=json.dumps({"auth_token": REDIS_PASSWORD})
            )["ARN"]
            # What the admin task does once per deployment: migrate, and register the clients' devices.
            admin_command(postgres_port, "stream_worker.migrate")
            admin_command(postgres_port, "stream_worker.devices", "register", "--client", CLIENT_ID, *DEVICES)
            publish_owners(redis_port)
            redis = {
                "REDIS_HOST": "127.0.0.1",
                "REDIS_PORT": str(redis_port),
                "REDIS_TLS": "false",
                "REDIS_CLUSTER": "false",
            }
            environments = function_environment(aws)
            environments["ingest"] |= redis | {"REDIS_AUTH_TOKEN_SECRET_ARN": token_secret_arn}
            environments["query"] |= (
                redis
                | {"REDIS_AUTH_TOKEN_SECRET_ARN": token_secret_arn, "AWS_REGION": REGION}
                | database_environment(postgres_port, "iot_reader")
            )
            # Handlers make their clients with boto3.client(...): from this session, which records.
            session = boto3.session.Session(region_name=REGION)
            recorder.register(session.events)
            patch.setattr(boto3, "DEFAULT_SESSION", session)

            posted = run_functions(recorder, aws, environments, harness, patch)
            worker = {
                **settings,
                **redis,
                **database_environment(postgres_port, "iot_worker"),
                "REDIS_AUTH_TOKEN": REDIS_PASSWORD,
                "STREAM_NAME": "contract-stream",
                "STREAM_RETENTION_HOURS": "24",
                "ARCHIVE_DIR": str(directory / "archive"),
                "AWS_REGION": REGION,
            }
            run_worker(directory, worker, postgres_port, posted, calls)
            # What the worker keeps is what query serves: latest (Redis) and rollups (PostgreSQL).
            run_query(recorder, environments["query"], patch)
    return Recording({principal: tuple(sorted(found, key=str)) for principal, found in calls.items()})


def create_resources(harness: boto3.session.Session) -> Aws:
    kinesis, dynamodb, sns, sqs, ssm = (
        harness.client(s) for s in ("kinesis", "dynamodb", "sns", "sqs", "ssm")
    )
    kinesis.create_stream(StreamName="contract-stream", ShardCount=1)
    create_tables(dynamodb, "contract-raw-readings", "contract-aggregates")
    topic_arn = sns.create_topic(Name="contract-alerts")["TopicArn"]
    queue_url = sqs.create_queue(QueueName="contract-alerts-queue")["QueueUrl"]
    ssm.put_parameter(Name="contract-thresholds", Type="String", Value=json.dumps(THRESHOLDS))
    return Aws(
        kinesis=kinesis,
        dynamodb=dynamodb,
        sns=sns,
        sqs=sqs,
        ssm=ssm,
        stream_name="contract-stream",
        stream_arn=kinesis.describe_stream_summary(StreamName="contract-stream")["StreamDescriptionSummary"][
            "StreamARN"
        ],
        raw_table="contract-raw-readings",
        aggregates_table="contract-aggregates",
        topic_arn=topic_arn,
        alerts_queue_url=queue_url,
        thresholds_parameter="contract-thresholds",
    )


def post(ingest: ModuleType, device: str, count: int) -> int:
    """Readings of one device over a minute, the last above the temperature threshold; returns how many."""
    readings = [reading(device, minutes_ago(2, seconds=10 * i), temperature=20.5 + i) for i in range(count)]
    readings.append(reading(device, minutes_ago(2, seconds=59), temperature=95.0, humidity=50))
    response = ingest.handler(post_readings(json.dumps(readings)), LambdaContext())
    assert response["statusCode"] == 202, f"ingest refused the harness's readings: {response}"
    return len(readings)


def run_functions(
    recorder: Recorder,
    aws: Aws,
    environments: dict[str, dict[str, str]],
    harness: boto3.session.Session,
    patch: pytest.MonkeyPatch,
) -> int:
    """Ingest, the processor and the rotation function; returns how many readings ingest accepted."""
    context = LambdaContext()

    recorder.principal = "ingest"
    ingest = load_handler("ingest", patch, environments["ingest"])
    posted = post(ingest, "device-1", 3) + post(ingest, "device-2", 2)

    recorder.principal = "processor"
    processor = load_handler("processor", patch, environments["processor"])
    event = aws.stream_event()
    for _ in range(2):  # the second time, every reading has been counted: the replay path
        response = processor.handler(copy.deepcopy(event), context)
        assert response == {"batchItemFailures": []}, f"the processor failed records: {response}"

    recorder.principal = "redis-rotation"
    run_rotation(harness, patch)

    # After the processor's batch: the worker reads these too.
    recorder.principal = "ingest"
    return posted + post(load_handler("ingest", patch, environments["ingest"]), "device-3", 4)


def run_query(recorder: Recorder, environment: dict[str, str], patch: pytest.MonkeyPatch) -> None:
    """Every route of the query function: two pages of raw readings, the latest reading, the rollups."""
    context = LambdaContext()
    recorder.principal = "query"
    query = load_handler("query", patch, environment)
    response = query.handler(get_readings("device-1", {"limit": "1"}), context)
    assert response["statusCode"] == 200, f"query failed: {response}"
    token = json.loads(response["body"])["next_token"]
    response = query.handler(get_readings("device-1", {"limit": "1", "next_token": token}), context)
    assert response["statusCode"] == 200, f"query failed on its next page: {response}"
    for route, parameters in (("latest", None), ("rollups", {"resolution": "hour"})):
        response = query.handler(get_readings("device-1", parameters, route=route), context)
        assert response["statusCode"] == 200, f"query failed on {route}: {response}"


class ReplicationGroup:
    """moto's ElastiCache client, plus the token changes moto ignores: what the group accepts."""

    def __init__(self, moto: Any) -> None:
        self.moto = moto
        self.tokens = [OLD_TOKEN]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.moto, name)

    def modify_replication_group(self, **request: Any) -> Any:
        response = self.moto.modify_replication_group(**request)
        token = request["AuthToken"]
        self.tokens = (
            [*self.tokens[-1:], token] if request["AuthTokenUpdateStrategy"] == "ROTATE" else [token]
        )
        return response


def run_rotation(harness: boto3.session.Session, patch: pytest.MonkeyPatch) -> None:
    secretsmanager, elasticache, iam, lambda_ = (
        harness.client(s) for s in ("secretsmanager", "elasticache", "iam", "lambda")
    )
    elasticache.create_replication_group(
        ReplicationGroupId="contract-redis",
        ReplicationGroupDescription="contracts",
        Engine="redis",
        EngineVersion="7.1",
        CacheNodeType="cache.t4g.small",
        ClusterMode="enabled",
        NumNodeGroups=1,
        ReplicasPerNodeGroup=1,
        TransitEncryptionEnabled=True,
        AtRestEncryptionEnabled=True,
        AuthToken=OLD_TOKEN,
    )
    secret = secretsmanager.create_secret(
        Name="contract-token", SecretString=json.dumps({"auth_token": OLD_TOKEN})
    )
    role = iam.create_role(RoleName="contract-rotation", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    package = io.BytesIO()
    with zipfile.ZipFile(package, "w") as archive:
        archive.writestr("handler.py", "")
    function = lambda_.create_function(
        FunctionName="contract-rotation",
        Runtime="python3.11",
        Role=role,
        Handler="handler.handler",
        Code={"ZipFile": package.getvalue()},
    )["FunctionArn"]
    version = secretsmanager.rotate_secret(
        SecretId=secret["ARN"], RotationLambdaARN=function, RotationRules={"AutomaticallyAfterDays": 30}
    )["VersionId"]

    module = load_handler(
        "redis_rotation",
        patch,
        {"REPLICATION_GROUP_ID": "contract-redis", "REDIS_TLS": "false", "ELASTICACHE_POLL_SECONDS": "0"},
    )
    group = ReplicationGroup(module.elasticache)
    patch.setattr(module, "elasticache", group)

    def check_token(endpoint: Any, token: str) -> None:
        if token not in group.tokens:
            raise module.TokenRejected("the group refuses the token")

    patch.setattr(module, "redis_check", check_token)
    # Secrets Manager's own order, then finishSecret again (a rerun once the version is current).
    for step in ("createSecret", "setSecret", "testSecret", "finishSecret", "finishSecret"):
        event = {"Step": step, "SecretId": secret["ARN"], "ClientRequestToken": version}
        module.handler(event, LambdaContext())


def run_worker(
    directory: Path, environment: dict[str, str], postgres_port: int, posted: int, calls: dict[str, set[Call]]
) -> None:
    """The worker process, until it has counted every reading ingest accepted into PostgreSQL."""
    import psycopg

    recorded = directory / "worker-calls.jsonl"
    recorded.touch()

    def seen() -> set[str]:
        return {json.loads(line)["operation"] for line in recorded.read_text().splitlines()}

    def counted() -> int:
        with psycopg.connect(
            host="127.0.0.1", port=postgres_port, dbname=DATABASE_NAME, user="postgres"
        ) as connection:
            row = connection.execute("SELECT count(*) FROM counted_readings").fetchone()
            return int(row[0]) if row else 0

    with (directory / "worker.log").open("wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "tests.contracts.run_worker", str(recorded)],
            cwd=PROJECT_ROOT,
            env={**environment, "PATH": os.environ["PATH"], "PYTHONDONTWRITEBYTECODE": "1"},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until(
                lambda: worker.poll() is not None or ("GetRecords" in seen() and counted() >= posted),
                WORKER_DEADLINE_SECONDS,
                lambda: f"the worker counted {counted()} of {posted} readings and called only {seen()}",
            )
            assert worker.poll() is None, f"the worker stopped: {(directory / 'worker.log').read_text()}"
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=30)
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait(timeout=10)
    for line in recorded.read_text().splitlines():
        calls.setdefault("worker", set()).add(Call(**json.loads(line)))
