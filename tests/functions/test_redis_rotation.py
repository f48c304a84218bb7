"""Rotation of the ElastiCache AUTH token: each step, its rerun, a failed test, and a whole rotation.

Secrets Manager is moto's. RotateSecret (with a registered, never-run Lambda: moto's simple Lambda backend)
sets the secret up as Secrets Manager does before it calls the function: rotation enabled and a pending
version without a value; the tests then call the handler for each step as Secrets Manager would.

ElastiCache is moto's client behind a thin stand-in, because moto 5.2.5 accepts ModifyReplicationGroup's
AuthToken and AuthTokenUpdateStrategy but ignores them. The stand-in applies the token changes the way
ElastiCache does to a real redis-server (cluster mode, one node with every slot), through an ACL admin user:
ROTATE keeps the newest token and adds the new one, SET keeps the new one only. A change takes a few
DescribeReplicationGroups calls (status `modifying`, further modifications refused) and is applied when the
group is available again, so a function that does not wait sees the old state.

TLS is a setting that defaults on; the local server speaks plain TCP, so the tests set REDIS_TLS=false
(and one checks that with TLS on the function does not fall back to plain TCP).
"""

import copy
import importlib.util
import io
import itertools
import json
import socket
import socketserver
import subprocess
import sys
import threading
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import redis
from botocore.exceptions import ClientError
from moto import mock_aws
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.functions.conftest import (
    FUNCTIONS,
    REGION,
    HarnessClient,
    LambdaContext,
    redis_server_executable,
)

EVENT = json.loads((Path(__file__).parent / "fixtures" / "redis_rotation_event.json").read_text())
GROUP_ID = "iot-redis"
SECRET_NAME = "iot/redis/auth-token"
OLD_TOKEN = "Old-token-0123456789-abcdefABCDEF"
ADMIN_USER = "rotation-test-admin"
ADMIN_PASSWORD = "Admin-password-" + uuid.uuid4().hex
STEPS = ("createSecret", "setSecret", "testSecret", "finishSecret")
ENVIRONMENT = {
    "REPLICATION_GROUP_ID": GROUP_ID,
    "REDIS_TLS": "false",
    "REDIS_TIMEOUT_SECONDS": "2",
    "ELASTICACHE_WAIT_SECONDS": "60",
    "ELASTICACHE_POLL_SECONDS": "0",
}
_module_numbers = itertools.count()


def free_port() -> int:
    """A free loopback port whose cluster bus port (+10000) is free too."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
        if port >= 55535:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


@dataclass
class RedisServer:
    port: int
    admin: redis.Redis

    def set_tokens(self, *tokens: str) -> None:
        """The tokens the default user (the one AUTH <token> logs in as) accepts, and no others."""
        self.admin.acl_setuser(
            "default", enabled=True, reset_passwords=True, passwords=[f"+{t}" for t in tokens]
        )

    def accepts(self, token: str) -> bool:
        # No retries: redis-py retries a refused AUTH (a ConnectionError) with backoff by default.
        client = redis.Redis(port=self.port, password=token, socket_timeout=2, retry=Retry(NoBackoff(), 0))
        try:
            return bool(client.ping())
        except redis.AuthenticationError:
            return False
        finally:
            client.close()


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    executable = redis_server_executable()
    port = free_port()
    directory = tmp_path_factory.mktemp("redis")
    # fmt: off
    process = subprocess.Popen(
        [
            executable, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
            "--save", "", "--appendonly", "no",
            "--cluster-enabled", "yes", "--cluster-config-file", str(directory / "nodes.conf"),
            "--user", ADMIN_USER, "on", f">{ADMIN_PASSWORD}", "~*", "&*", "+@all",
        ],
        stdout=subprocess.DEVNULL,
    )
    # fmt: on
    admin = redis.Redis(port=port, username=ADMIN_USER, password=ADMIN_PASSWORD, socket_timeout=2)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                admin.ping()
                break
            except redis.ConnectionError:
                assert process.poll() is None and time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.02)
        admin.cluster("ADDSLOTS", *range(16384))
        while admin.cluster("INFO")["cluster_state"] != "ok":
            assert time.monotonic() < deadline, "the one-node cluster did not become ok"
            time.sleep(0.02)
        yield RedisServer(port, admin)
    finally:
        admin.close()
        process.terminate()
        process.wait(10)


class ElastiCacheStandIn:
    """moto's ElastiCache client, with the AUTH token changes moto ignores applied to the redis-server."""

    MODIFYING_DESCRIBES = 2

    def __init__(self, moto: Any, server: RedisServer) -> None:
        self.moto = moto
        self.server = server
        self.endpoint = {"Address": "127.0.0.1", "Port": server.port}
        self.tokens = [OLD_TOKEN]  # what the group accepts
        self.calls: list[dict[str, Any]] = []  # accepted ModifyReplicationGroup requests
        self.fail_next_modify: ClientError | None = None
        self._change: tuple[str, list[str]] | None = None  # (AuthTokenStatus, tokens once applied)
        self._describes_left = 0
        server.set_tokens(*self.tokens)

    def describe_replication_groups(self, **request: Any) -> Any:
        response = self.moto.describe_replication_groups(**request)
        group = response["ReplicationGroups"][0]
        group["ConfigurationEndpoint"] = dict(self.endpoint)
        if self._change and self._describes_left == 0:
            self.tokens = self._change[1]
            self.server.set_tokens(*self.tokens)
            self._change = None
        if self._change:
            self._describes_left -= 1
            group["Status"] = "modifying"
            group["PendingModifiedValues"] = {"AuthTokenStatus": self._change[0]}
        return response

    def modify_replication_group(self, **request: Any) -> Any:
        if self._change:
            raise _error("InvalidReplicationGroupState", f"Replication group {GROUP_ID} is not available")
        if self.fail_next_modify:
            error, self.fail_next_modify = self.fail_next_modify, None
            raise error
        token, strategy = request["AuthToken"], request["AuthTokenUpdateStrategy"]
        if strategy == "SET" and token not in self.tokens:
            raise _error("InvalidParameterValue", "SET is allowed only after ROTATE")
        response = self.moto.modify_replication_group(**request)  # botocore validates the request
        self.calls.append(dict(request))
        tokens = [*self.tokens[-1:], token] if strategy == "ROTATE" else [token]
        self._change = ("ROTATING" if strategy == "ROTATE" else "SETTING", tokens)
        self._describes_left = self.MODIFYING_DESCRIBES
        response["ReplicationGroup"]["Status"] = "modifying"
        return response

    def stay_modifying(self) -> None:
        """Another change that never completes."""
        self._change = ("ROTATING", self.tokens)
        self._describes_left = sys.maxsize


def _error(code: str, message: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, "ModifyReplicationGroup")


@dataclass
class Rotation:
    """One rotation under way: RotateSecret has run, the steps are the tests' to call."""

    module: ModuleType
    secretsmanager: Any
    elasticache: ElastiCacheStandIn
    server: RedisServer
    secret_arn: str
    version_id: str  # the ClientRequestToken of this rotation
    original_version_id: str
    context: LambdaContext = field(default_factory=LambdaContext)

    def event(self, step: str, **changes: Any) -> dict[str, Any]:
        event: dict[str, Any] = copy.deepcopy(EVENT)
        event |= {"Step": step, "SecretId": self.secret_arn, "ClientRequestToken": self.version_id} | changes
        return event

    def step(self, step: str) -> None:
        self.module.handler(self.event(step), self.context)

    def steps(self, *steps: str) -> None:
        for step in steps:
            self.step(step)

    def stages(self) -> dict[str, list[str]]:
        stages: dict[str, list[str]] = self.secretsmanager.describe_secret(SecretId=self.secret_arn)[
            "VersionIdsToStages"
        ]
        return {version: sorted(labels) for version, labels in stages.items()}

    def value(self, version_id: str) -> dict[str, Any]:
        response = self.secretsmanager.get_secret_value(SecretId=self.secret_arn, VersionId=version_id)
        value: dict[str, Any] = json.loads(response["SecretString"])
        return value

    def new_token(self) -> str:
        token: str = self.value(self.version_id)["auth_token"]
        return token

    def state(self) -> tuple[Any, ...]:
        """Everything a step may change: secret versions, stages and values, ElastiCache calls, tokens."""
        values = {}
        for version in self.stages():
            try:
                values[version] = self.value(version)
            except ClientError as error:
                values[version] = error.response["Error"]["Code"]
        return (
            self.stages(),
            values,
            copy.deepcopy(self.elasticache.calls),
            list(self.elasticache.tokens),
            {token: self.server.accepts(token) for token in (OLD_TOKEN, *self._new_tokens(values))},
        )

    @staticmethod
    def _new_tokens(values: dict[str, Any]) -> list[str]:
        return [
            v["auth_token"] for v in values.values() if isinstance(v, dict) and v["auth_token"] != OLD_TOKEN
        ]


@pytest.fixture
def moto_aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name, value in {
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "POWERTOOLS_SERVICE_NAME": "iot-functions-test",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_LOG_LEVEL": "WARNING",
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws(config={"core": {"reset_boto3_session": False}, "lambda": {"use_docker": False}}):
        yield


LoadHandler = Callable[..., ModuleType]


@pytest.fixture
def load_handler(moto_aws: None, monkeypatch: pytest.MonkeyPatch) -> LoadHandler:
    """functions/redis_rotation/handler.py as a new module, with ENVIRONMENT and overrides (None: unset)."""

    def load(**overrides: str | None) -> ModuleType:
        for variable, value in (ENVIRONMENT | overrides).items():
            if value is None:
                monkeypatch.delenv(variable, raising=False)
            else:
                monkeypatch.setenv(variable, value)
        module_name = f"redis_rotation_handler_{next(_module_numbers)}"
        spec = importlib.util.spec_from_file_location(
            module_name, FUNCTIONS / "redis_rotation" / "handler.py"
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, module_name, module)
        monkeypatch.setattr(sys, "dont_write_bytecode", True)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture
def rotation(
    load_handler: LoadHandler,
    redis_server: RedisServer,
    harness_client: HarnessClient,
    monkeypatch: pytest.MonkeyPatch,
) -> Rotation:
    secretsmanager, elasticache, iam, lambda_ = (
        harness_client(service) for service in ("secretsmanager", "elasticache", "iam", "lambda")
    )
    elasticache.create_replication_group(
        ReplicationGroupId=GROUP_ID,
        ReplicationGroupDescription="IoT platform cache",
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
        Name=SECRET_NAME, SecretString=json.dumps({"auth_token": OLD_TOKEN})
    )
    version_id = secretsmanager.rotate_secret(
        SecretId=secret["ARN"],
        RotationLambdaARN=_registered_function(iam, lambda_),
        RotationRules={"AutomaticallyAfterDays": 30},
    )["VersionId"]

    module = load_handler()
    stand_in = ElastiCacheStandIn(module.elasticache, redis_server)
    monkeypatch.setattr(module, "elasticache", stand_in)
    return Rotation(
        module, secretsmanager, stand_in, redis_server, secret["ARN"], version_id, secret["VersionId"]
    )


def _registered_function(iam: Any, lambda_: Any) -> str:
    """A rotation function as RotateSecret requires one; moto's simple Lambda backend never runs it."""
    role = iam.create_role(RoleName="redis-rotation", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    package = io.BytesIO()
    with zipfile.ZipFile(package, "w") as archive:
        archive.writestr("handler.py", "")
    function: str = lambda_.create_function(
        FunctionName="redis-rotation",
        Runtime="python3.11",
        Role=role,
        Handler="handler.handler",
        Code={"ZipFile": package.getvalue()},
    )["FunctionArn"]
    return function


def _assert_current_token_unchanged(rotation: Rotation) -> None:
    assert rotation.stages()[rotation.original_version_id] == ["AWSCURRENT"]
    assert rotation.value(rotation.original_version_id)["auth_token"] == OLD_TOKEN
    assert rotation.server.accepts(OLD_TOKEN)


# --- the steps ---------------------------------------------------------------------------------------


def test_create_secret_puts_a_new_token_as_the_pending_version(rotation: Rotation) -> None:
    rotation.step("createSecret")

    assert rotation.stages() == {
        rotation.original_version_id: ["AWSCURRENT"],
        rotation.version_id: ["AWSPENDING"],
    }
    assert rotation.value(rotation.version_id) == {
        "auth_token": rotation.new_token(),
        "host": "127.0.0.1",  # the configuration endpoint DescribeReplicationGroups reports
        "port": rotation.server.port,
    }
    assert rotation.new_token() != OLD_TOKEN
    assert rotation.elasticache.calls == []
    assert rotation.server.accepts(OLD_TOKEN) and not rotation.server.accepts(rotation.new_token())


def test_new_tokens_follow_the_elasticache_rules(load_handler: LoadHandler) -> None:
    module = load_handler()
    tokens = [module.generate_token() for _ in range(200)]

    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!&#$^<>-")
    assert all(16 <= len(token) <= 128 and set(token) <= allowed for token in tokens)
    assert all(
        any(c.isupper() for c in t) and any(c.islower() for c in t) and any(c.isdigit() for c in t)
        for t in tokens
    )
    assert all(set(token) & set("!&#$^<>-") for token in tokens)
    assert len(set(tokens)) == len(tokens)


def test_set_secret_makes_the_group_accept_the_old_and_the_new_token(rotation: Rotation) -> None:
    rotation.steps("createSecret", "setSecret")

    assert rotation.elasticache.calls == [
        {
            "ReplicationGroupId": GROUP_ID,
            "AuthToken": rotation.new_token(),
            "AuthTokenUpdateStrategy": "ROTATE",
            "ApplyImmediately": True,
        }
    ]
    # Accepted when setSecret returns: it waited for the group to be available again.
    assert rotation.server.accepts(OLD_TOKEN) and rotation.server.accepts(rotation.new_token())
    assert rotation.stages()[rotation.original_version_id] == ["AWSCURRENT"]


def test_set_secret_waits_a_bounded_time_for_the_group(rotation: Rotation) -> None:
    rotation.step("createSecret")
    rotation.elasticache.stay_modifying()
    now = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += 10

    module = rotation.module
    dependencies = module.Dependencies(
        rotation.secretsmanager, rotation.elasticache, module.redis_check, sleep, lambda: now[0]
    )
    config = module.Config.from_env(ENVIRONMENT | {"ELASTICACHE_WAIT_SECONDS": "60"})

    with pytest.raises(TimeoutError, match=f"replication group {GROUP_ID} is still modifying .* after 60 s"):
        module.rotate(rotation.event("setSecret"), config, dependencies, module.logger)

    assert len(sleeps) == 6
    assert rotation.elasticache.calls == []


def test_test_secret_passes_with_the_pending_token(rotation: Rotation) -> None:
    rotation.steps("createSecret", "setSecret")
    before = rotation.state()

    rotation.step("testSecret")

    assert rotation.state() == before


def test_finish_secret_makes_the_new_token_current_and_revokes_the_old_one(rotation: Rotation) -> None:
    rotation.steps("createSecret", "setSecret", "testSecret", "finishSecret")

    assert rotation.stages() == {
        rotation.original_version_id: ["AWSPREVIOUS"],
        rotation.version_id: ["AWSCURRENT", "AWSPENDING"],
    }
    assert [call["AuthTokenUpdateStrategy"] for call in rotation.elasticache.calls] == ["ROTATE", "SET"]
    assert rotation.elasticache.calls[1]["AuthToken"] == rotation.new_token()
    assert rotation.elasticache.tokens == [rotation.new_token()]
    assert not rotation.server.accepts(OLD_TOKEN) and rotation.server.accepts(rotation.new_token())


def test_finish_secret_refuses_a_token_the_group_does_not_accept(rotation: Rotation) -> None:
    rotation.step("createSecret")  # no setSecret

    with pytest.raises(rotation.module.TokenRejected):
        rotation.step("finishSecret")

    _assert_current_token_unchanged(rotation)
    assert rotation.elasticache.calls == []


# --- reruns ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("step", STEPS)
def test_a_rerun_of_a_step_changes_nothing(rotation: Rotation, step: str) -> None:
    rotation.steps(*STEPS[: STEPS.index(step) + 1])
    before = rotation.state()

    rotation.step(step)

    assert rotation.state() == before


def test_a_finish_interrupted_before_set_is_completed_by_its_rerun(rotation: Rotation) -> None:
    rotation.steps("createSecret", "setSecret", "testSecret")
    rotation.elasticache.fail_next_modify = _error("ThrottlingException", "Rate exceeded")

    with pytest.raises(ClientError, match="ThrottlingException"):
        rotation.step("finishSecret")
    assert "AWSCURRENT" in rotation.stages()[rotation.version_id]
    assert rotation.server.accepts(OLD_TOKEN)

    rotation.step("finishSecret")

    assert [call["AuthTokenUpdateStrategy"] for call in rotation.elasticache.calls] == ["ROTATE", "SET"]
    assert not rotation.server.accepts(OLD_TOKEN) and rotation.server.accepts(rotation.new_token())


# --- a failed test keeps the current token -----------------------------------------------------------


def test_test_secret_fails_if_the_group_refuses_the_pending_token(rotation: Rotation) -> None:
    rotation.step("createSecret")  # no setSecret: the group does not know the new token

    with pytest.raises(rotation.module.TokenRejected, match="refused the token"):
        rotation.step("testSecret")

    _assert_current_token_unchanged(rotation)
    assert not rotation.server.accepts(rotation.new_token())


def test_test_secret_fails_if_redis_is_unreachable(rotation: Rotation) -> None:
    rotation.steps("createSecret", "setSecret")
    rotation.elasticache.endpoint["Port"] = free_port()  # nothing listens there

    with pytest.raises(redis.exceptions.RedisClusterException, match="Connection refused"):
        rotation.step("testSecret")

    _assert_current_token_unchanged(rotation)


class FirstBytes(socketserver.BaseRequestHandler):
    received: list[bytes]

    def handle(self) -> None:
        self.received.append(self.request.recv(5))  # then closes the connection


def test_tls_is_on_unless_switched_off(
    rotation: Rotation, load_handler: LoadHandler, monkeypatch: pytest.MonkeyPatch
) -> None:
    rotation.steps("createSecret", "setSecret")
    module = load_handler(REDIS_TLS=None)  # the default
    monkeypatch.setattr(module, "elasticache", rotation.elasticache)
    received: list[bytes] = []
    handler = type("Recorder", (FirstBytes,), {"received": received})
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler) as listener:
        threading.Thread(target=listener.serve_forever, daemon=True).start()
        rotation.elasticache.endpoint["Port"] = listener.server_address[1]
        try:
            with pytest.raises(redis.exceptions.RedisClusterException):
                module.handler(rotation.event("testSecret"), rotation.context)
        finally:
            listener.shutdown()

    assert module.CONFIG.redis_tls
    assert received and received[0][:2] == b"\x16\x03"  # a TLS handshake record, never a plain AUTH
    _assert_current_token_unchanged(rotation)


# --- end to end --------------------------------------------------------------------------------------


@pytest.fixture
def logs(rotation: Rotation, monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """What the handler logs, at every level.

    All loads of all handlers share one Python logger (one per service name), configured by the first.
    """
    logs = io.StringIO()
    logger = rotation.module.logger
    monkeypatch.setattr(logger.registered_handler, "stream", logs)
    level = logger.log_level
    logger.setLevel("DEBUG")
    yield logs
    logger.setLevel(level)


def test_a_whole_rotation_replaces_the_token(rotation: Rotation, logs: io.StringIO) -> None:
    assert rotation.server.accepts(OLD_TOKEN)

    rotation.steps(*STEPS)

    current = rotation.secretsmanager.get_secret_value(SecretId=rotation.secret_arn)
    token = json.loads(current["SecretString"])["auth_token"]
    assert current["VersionId"] == rotation.version_id
    assert token == rotation.new_token() != OLD_TOKEN
    assert rotation.server.accepts(token)
    assert not rotation.server.accepts(OLD_TOKEN)
    lines = [json.loads(line) for line in logs.getvalue().splitlines()]
    assert {line["step"] for line in lines} == set(STEPS)
    assert OLD_TOKEN not in logs.getvalue() and token not in logs.getvalue()
    assert EVENT["RotationToken"] not in logs.getvalue()


# --- what the function refuses -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"Step": "rotateSecret"}, "Step must be one of createSecret, setSecret, testSecret, finishSecret"),
        ({"SecretId": ""}, "SecretId must be a non-empty string"),
        ({"ClientRequestToken": None}, "ClientRequestToken must be a non-empty string"),
        ({"RotationToken": 7}, "RotationToken must be a non-empty string if present"),
        ({"ClientRequestToken": "0e9e2f55-4a41-4f5f-8f55-52b3c2f4b1a7"}, "has no stage for rotation"),
    ],
    ids=["step", "secret-id", "client-request-token", "rotation-token", "unknown-version"],
)
def test_an_invalid_event_is_refused(rotation: Rotation, changes: dict[str, Any], message: str) -> None:
    before = rotation.state()

    with pytest.raises(rotation.module.InvalidRotation, match=message):
        rotation.module.handler(rotation.event("createSecret", **changes), rotation.context)

    assert rotation.state() == before


def test_a_version_that_is_neither_current_nor_pending_is_refused(rotation: Rotation) -> None:
    rotation.steps(*STEPS)
    previous = dict(rotation.event("createSecret"), ClientRequestToken=rotation.original_version_id)

    with pytest.raises(rotation.module.InvalidRotation, match="is not AWSPENDING"):
        rotation.module.handler(previous, rotation.context)


def test_a_secret_without_rotation_is_refused(rotation: Rotation) -> None:
    secret = rotation.secretsmanager.create_secret(Name="not-rotated", SecretString='{"auth_token": "x"}')
    event = rotation.event("createSecret", SecretId=secret["ARN"], ClientRequestToken=secret["VersionId"])

    with pytest.raises(rotation.module.InvalidRotation, match="does not have rotation enabled"):
        rotation.module.handler(event, rotation.context)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"REPLICATION_GROUP_ID": None}, "environment variable REPLICATION_GROUP_ID is required"),
        ({"REDIS_TLS": "yes"}, "REDIS_TLS is 'yes'; set it to true or false"),
        ({"ELASTICACHE_WAIT_SECONDS": "0"}, "ELASTICACHE_WAIT_SECONDS is '0'; set it to a whole number"),
    ],
    ids=["group", "tls", "wait"],
)
def test_an_invalid_environment_stops_the_function(
    load_handler: LoadHandler, overrides: dict[str, str | None], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        load_handler(**overrides)
