"""Secrets Manager rotation of the ElastiCache (Redis OSS, cluster mode) AUTH token.

The four rotation steps, with ElastiCache's two-phase token change:

- createSecret: a new random token becomes the AWSPENDING version of the secret.
- setSecret: ModifyReplicationGroup with AuthTokenUpdateStrategy=ROTATE, so the group accepts the current
  and the pending token; waits until the group is available again.
- testSecret: connects to the configuration endpoint with the pending token (TLS, AUTH, cluster discovery,
  PING on every node, CLUSTER INFO); any failure fails the rotation and the current token stays.
- finishSecret: checks the group accepts the pending token, moves AWSCURRENT to the pending version, then
  ModifyReplicationGroup with SET so the group accepts the new token only; waits until it is available again.
  Rerun for a version already current, it only sets the token if the previous one still works (an earlier
  run stopped between moving the stage and SET).

Every step can be rerun: it first finds out whether its work is already done. The secret value is JSON,
{"auth_token": "...", "host": "...", "port": 6379}, with host and port the group's configuration endpoint as
DescribeReplicationGroups reports it (the function reads them there, never from the secret). No token is
ever logged.
"""

from __future__ import annotations

import json
import os
import secrets
import string
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import boto3
import redis
from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.exceptions import ClientError

STEPS = ("createSecret", "setSecret", "testSecret", "finishSecret")
# ElastiCache AUTH tokens: 16 to 128 printable characters; the only non-alphanumerics allowed are !&#$^<>-.
TOKEN_SPECIALS = "!&#$^<>-"
TOKEN_ALPHABET = string.ascii_letters + string.digits + TOKEN_SPECIALS
TOKEN_CHARACTER_CLASSES = (string.ascii_uppercase, string.ascii_lowercase, string.digits, TOKEN_SPECIALS)
TOKEN_LENGTH = 64


@dataclass(frozen=True)
class Config:
    replication_group_id: str
    redis_tls: bool
    redis_timeout_seconds: int
    wait_timeout_seconds: int  # for ElastiCache to finish a modification, per invocation
    wait_interval_seconds: int  # between two DescribeReplicationGroups calls

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Config:
        return cls(
            replication_group_id=_required(env, "REPLICATION_GROUP_ID"),
            redis_tls=_boolean(env, "REDIS_TLS", default=True),
            redis_timeout_seconds=_whole_number(env, "REDIS_TIMEOUT_SECONDS", default=5, minimum=1),
            wait_timeout_seconds=_whole_number(env, "ELASTICACHE_WAIT_SECONDS", default=600, minimum=1),
            wait_interval_seconds=_whole_number(env, "ELASTICACHE_POLL_SECONDS", default=15, minimum=0),
        )


def _required(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "")
    if not value:
        raise ValueError(f"environment variable {name} is required")
    return value


def _boolean(env: Mapping[str, str], name: str, default: bool) -> bool:
    value = env.get(name, "").lower()
    if not value:
        return default
    if value not in ("true", "false"):
        raise ValueError(f"{name} is {env[name]!r}; set it to true or false")
    return value == "true"


def _whole_number(env: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    value = env.get(name, "")
    if not value:
        return default
    if not (value.isascii() and value.isdigit() and int(value) >= minimum):
        raise ValueError(f"{name} is {value!r}; set it to a whole number of seconds, at least {minimum}")
    return int(value)


@dataclass(frozen=True)
class RotationRequest:
    secret_id: str
    version_id: str  # the ClientRequestToken: the secret version being rotated in
    step: str
    # Secrets Manager checks it on PutSecretValue when rotating through an assumed role; it is sensitive.
    rotation_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int


class InvalidRotation(ValueError):
    """The event or the secret is not one this function can rotate."""


class TokenRejected(Exception):
    """Redis answered, but refused the token."""


# Connects to the endpoint with the token and returns if the cluster accepts it and is healthy;
# raises TokenRejected if it refuses the token, and anything else if it cannot tell (unreachable, ...).
TokenCheck = Callable[[Endpoint, str], None]


@dataclass(frozen=True)
class Dependencies:
    secretsmanager: Any
    elasticache: Any
    check_token: TokenCheck
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic


def parse_event(event: Mapping[str, Any]) -> RotationRequest:
    problems = [
        f"{name} must be a non-empty string"
        for name in ("SecretId", "ClientRequestToken")
        if not (isinstance(event.get(name), str) and event[name])
    ]
    if event.get("Step") not in STEPS:
        problems.append(f"Step must be one of {', '.join(STEPS)}")
    rotation_token = event.get("RotationToken")
    if rotation_token is not None and not (isinstance(rotation_token, str) and rotation_token):
        problems.append("RotationToken must be a non-empty string if present")
    if problems:
        raise InvalidRotation(f"invalid rotation event: {'; '.join(problems)}")
    return RotationRequest(event["SecretId"], event["ClientRequestToken"], event["Step"], rotation_token)


def generate_token() -> str:
    """A random token that ElastiCache accepts, with every character class it recommends."""
    while True:
        token = "".join(secrets.choice(TOKEN_ALPHABET) for _ in range(TOKEN_LENGTH))
        if all(any(character in kind for character in token) for kind in TOKEN_CHARACTER_CLASSES):
            return token


def rotate(event: Mapping[str, Any], config: Config, dependencies: Dependencies, logger: Logger) -> None:
    """Runs the event's step after the checks of the Secrets Manager rotation template."""
    request = parse_event(event)
    logger.append_keys(secret_id=request.secret_id, version_id=request.version_id, step=request.step)
    metadata = dependencies.secretsmanager.describe_secret(SecretId=request.secret_id)
    if not metadata.get("RotationEnabled"):
        raise InvalidRotation(f"secret {request.secret_id} does not have rotation enabled")
    versions: dict[str, list[str]] = metadata.get("VersionIdsToStages", {})
    if request.version_id not in versions:
        raise InvalidRotation(f"secret version {request.version_id} has no stage for rotation")
    stages = versions[request.version_id]
    if "AWSCURRENT" in stages:
        if request.step == "finishSecret":
            complete_finish(request, config, dependencies, logger)
        else:
            logger.info("Secret version is already AWSCURRENT: nothing to do")
        return
    if "AWSPENDING" not in stages:
        raise InvalidRotation(f"secret version {request.version_id} is not AWSPENDING for rotation")

    deadline = dependencies.clock() + config.wait_timeout_seconds
    if request.step == "createSecret":
        create_secret(request, config, dependencies, logger)
    elif request.step == "setSecret":
        set_secret(request, config, dependencies, logger, deadline)
    elif request.step == "testSecret":
        test_secret(request, config, dependencies, logger)
    else:
        current_version = next(version for version, stage in versions.items() if "AWSCURRENT" in stage)
        finish_secret(request, current_version, config, dependencies, logger, deadline)


def create_secret(
    request: RotationRequest, config: Config, dependencies: Dependencies, logger: Logger
) -> None:
    sm = dependencies.secretsmanager
    current = _value(sm.get_secret_value(SecretId=request.secret_id, VersionStage="AWSCURRENT"))
    try:
        sm.get_secret_value(
            SecretId=request.secret_id, VersionId=request.version_id, VersionStage="AWSPENDING"
        )
        logger.info("The pending version already has a value: nothing to do")
        return
    except ClientError as error:
        if error.response["Error"]["Code"] != "ResourceNotFoundException":
            raise
    endpoint = configuration_endpoint(describe_group(dependencies.elasticache, config.replication_group_id))
    pending = current | {"auth_token": generate_token(), "host": endpoint.host, "port": endpoint.port}
    sm.put_secret_value(
        SecretId=request.secret_id,
        ClientRequestToken=request.version_id,
        SecretString=json.dumps(pending),
        VersionStages=["AWSPENDING"],
        **({"RotationToken": request.rotation_token} if request.rotation_token else {}),
    )
    logger.info("Put a new token as the pending version")


def set_secret(
    request: RotationRequest, config: Config, dependencies: Dependencies, logger: Logger, deadline: float
) -> None:
    token = _pending_token(dependencies.secretsmanager, request)
    group = wait_until_available(dependencies, config, deadline)
    if _accepted(dependencies.check_token, configuration_endpoint(group), token):
        logger.info("The replication group already accepts the pending token: nothing to do")
        return
    modify_auth_token(dependencies, config, token, "ROTATE", deadline)
    logger.info("The replication group accepts the current and the pending token")


def test_secret(request: RotationRequest, config: Config, dependencies: Dependencies, logger: Logger) -> None:
    token = _pending_token(dependencies.secretsmanager, request)
    endpoint = configuration_endpoint(describe_group(dependencies.elasticache, config.replication_group_id))
    dependencies.check_token(endpoint, token)
    logger.info("The pending token works on every node")


def finish_secret(
    request: RotationRequest,
    current_version: str,
    config: Config,
    dependencies: Dependencies,
    logger: Logger,
    deadline: float,
) -> None:
    token = _pending_token(dependencies.secretsmanager, request)
    # testSecret has passed, but AWSCURRENT must never move to a token that the group refuses.
    endpoint = configuration_endpoint(describe_group(dependencies.elasticache, config.replication_group_id))
    dependencies.check_token(endpoint, token)
    dependencies.secretsmanager.update_secret_version_stage(
        SecretId=request.secret_id,
        VersionStage="AWSCURRENT",
        MoveToVersionId=request.version_id,
        RemoveFromVersionId=current_version,
    )
    logger.info("Moved AWSCURRENT to the new version", previous_version_id=current_version)
    modify_auth_token(dependencies, config, token, "SET", deadline)
    logger.info("The replication group accepts the new token only")


def complete_finish(
    request: RotationRequest, config: Config, dependencies: Dependencies, logger: Logger
) -> None:
    """finishSecret for a version already current: SET the token if an earlier run stopped before it did.

    That is the case if the previous token still works; usually it no longer does, and this changes nothing.
    """
    sm = dependencies.secretsmanager
    try:
        previous = _value(sm.get_secret_value(SecretId=request.secret_id, VersionStage="AWSPREVIOUS"))
    except ClientError as error:
        if error.response["Error"]["Code"] != "ResourceNotFoundException":
            raise
        logger.info("Secret version is already AWSCURRENT and has no previous version: nothing to do")
        return
    deadline = dependencies.clock() + config.wait_timeout_seconds
    group = wait_until_available(dependencies, config, deadline)
    if not _accepted(dependencies.check_token, configuration_endpoint(group), previous["auth_token"]):
        logger.info("Secret version is already AWSCURRENT and the previous token is revoked: nothing to do")
        return
    token = _value(sm.get_secret_value(SecretId=request.secret_id, VersionId=request.version_id))
    logger.warning("Secret version is AWSCURRENT but the previous token still works: setting the new token")
    modify_auth_token(dependencies, config, token["auth_token"], "SET", deadline)
    logger.info("The replication group accepts the new token only")


def describe_group(elasticache: Any, replication_group_id: str) -> dict[str, Any]:
    groups = elasticache.describe_replication_groups(ReplicationGroupId=replication_group_id)
    group: dict[str, Any] = groups["ReplicationGroups"][0]
    return group


def configuration_endpoint(group: Mapping[str, Any]) -> Endpoint:
    endpoint = group.get("ConfigurationEndpoint")
    if not endpoint:
        raise InvalidRotation(
            f"replication group {group['ReplicationGroupId']} has no configuration endpoint: "
            "this function rotates cluster-mode groups only"
        )
    return Endpoint(endpoint["Address"], int(endpoint["Port"]))


def wait_until_available(dependencies: Dependencies, config: Config, deadline: float) -> dict[str, Any]:
    """The group once it is available with no token change pending; TimeoutError after the deadline."""
    while True:
        group = describe_group(dependencies.elasticache, config.replication_group_id)
        pending_token_change = group.get("PendingModifiedValues", {}).get("AuthTokenStatus")
        if group["Status"] == "available" and not pending_token_change:
            return group
        if dependencies.clock() >= deadline:
            raise TimeoutError(
                f"replication group {config.replication_group_id} is still {group['Status']}"
                f" (auth token: {pending_token_change or 'no change'}) after {config.wait_timeout_seconds} s"
            )
        dependencies.sleep(config.wait_interval_seconds)


def modify_auth_token(
    dependencies: Dependencies, config: Config, token: str, strategy: str, deadline: float
) -> None:
    wait_until_available(dependencies, config, deadline)
    dependencies.elasticache.modify_replication_group(
        ReplicationGroupId=config.replication_group_id,
        AuthToken=token,
        AuthTokenUpdateStrategy=strategy,
        ApplyImmediately=True,
    )
    wait_until_available(dependencies, config, deadline)


def check_token(endpoint: Endpoint, token: str, *, tls: bool, timeout_seconds: int) -> None:
    """TokenCheck with redis-py: cluster discovery, PING on every node, CLUSTER INFO state ok."""
    options: dict[str, Any] = {"socket_connect_timeout": timeout_seconds, "socket_timeout": timeout_seconds}
    if tls:
        options |= {"ssl": True, "ssl_cert_reqs": "required", "ssl_check_hostname": True}
    try:
        client = redis.RedisCluster(host=endpoint.host, port=endpoint.port, password=token, **options)
    except (redis.RedisError, redis.exceptions.RedisClusterException) as error:
        if _is_authentication_error(error):
            raise TokenRejected(f"{endpoint.host}:{endpoint.port} refused the token") from None
        raise
    try:
        if not client.ping(target_nodes=redis.RedisCluster.ALL_NODES):
            raise RuntimeError(f"a node of {endpoint.host}:{endpoint.port} did not answer PING")
        state = client.cluster_info().get("cluster_state")
        if state != "ok":
            raise RuntimeError(f"{endpoint.host}:{endpoint.port} reports cluster_state {state}")
    except redis.AuthenticationError:
        raise TokenRejected(f"a node of {endpoint.host}:{endpoint.port} refused the token") from None
    finally:
        client.close()


def _is_authentication_error(error: BaseException | None) -> bool:
    while error is not None:
        if isinstance(error, redis.AuthenticationError):
            return True
        error = error.__cause__ or error.__context__
    return False


def _accepted(check: TokenCheck, endpoint: Endpoint, token: str) -> bool:
    try:
        check(endpoint, token)
    except TokenRejected:
        return False
    return True


def _pending_token(secretsmanager: Any, request: RotationRequest) -> str:
    response = secretsmanager.get_secret_value(
        SecretId=request.secret_id, VersionId=request.version_id, VersionStage="AWSPENDING"
    )
    token: str = _value(response)["auth_token"]
    return token


def _value(response: Mapping[str, Any]) -> dict[str, Any]:
    """The secret value of a GetSecretValue response; the message never quotes it."""
    try:
        value = json.loads(response["SecretString"])
    except (KeyError, ValueError):
        value = None
    if not (isinstance(value, dict) and isinstance(value.get("auth_token"), str) and value["auth_token"]):
        raise InvalidRotation(
            f"secret version {response.get('VersionId')} is not a JSON object with a non-empty auth_token"
        )
    return value


CONFIG = Config.from_env(os.environ)
logger = Logger()
tracer = Tracer()
secretsmanager = boto3.client("secretsmanager")
elasticache = boto3.client("elasticache")


def redis_check(endpoint: Endpoint, token: str) -> None:
    check_token(endpoint, token, tls=CONFIG.redis_tls, timeout_seconds=CONFIG.redis_timeout_seconds)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict[str, Any], context: LambdaContext) -> None:
    rotate(event, CONFIG, Dependencies(secretsmanager, elasticache, redis_check), logger)
