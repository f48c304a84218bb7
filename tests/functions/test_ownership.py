"""Clients own their devices: ingest refuses readings of devices registered to no one or to another client,
and a registry that cannot be read refuses everything (503), never allows it."""

import base64
import dataclasses
import itertools
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import certifi
import pytest
import redis
from readings.ownership import (
    CACHE_SECONDS,
    OWNERS_KEY,
    OWNERS_PUBLISHED_KEY,
    RedisSettings,
    Refusal,
    Registry,
    SharedRedis,
)

from tests.functions.conftest import (
    OTHER_CLIENT_ID,
    OWNED_DEVICES,
    REDIS_AUTH_TOKEN,
    Aws,
    LambdaContext,
    LoadFunction,
    Stores,
    free_cluster_port,
    redis_server_executable,
    tls_relay,
)
from tests.functions.events import CLIENT_ID, minutes_ago, post_readings, reading
from tools.local.servers import free_port


def post(ingest: ModuleType, context: LambdaContext, body: Any, **event: Any) -> tuple[int, dict[str, Any]]:
    response = ingest.handler(post_readings(json.dumps(body), **event), context)
    return response["statusCode"], json.loads(response["body"])


def stream_devices(aws: Aws) -> list[str]:
    return [
        item["device_id"]
        for record in aws.stream_event()["Records"]
        for item in json.loads(base64.b64decode(record["kinesis"]["data"]))["readings"]
    ]


def owner_lookups(stores: Stores) -> int:
    """How many times Redis has looked owners up (HMGET) since it started."""
    stats: dict[str, Any] = stores.redis.info("commandstats")
    return int(stats.get("cmdstat_hmget", {}).get("calls", 0))


def test_readings_of_devices_not_registered_to_the_caller_get_403_naming_them_and_nothing_is_written(
    ingest: ModuleType, aws: Aws, stores: Stores, context: LambdaContext
) -> None:
    stores.publish_owners({"dev-1": CLIENT_ID, "dev-2": OTHER_CLIENT_ID, "dev-3": CLIENT_ID})
    moment = minutes_ago(1)
    body = [reading(device, moment, temperature=20) for device in ("dev-1", "dev-unregistered", "dev-2")]

    status, response = post(ingest, context, body)

    assert (status, response) == (
        403,
        {
            "message": "these devices are not registered to this API client",
            "devices": ["dev-2", "dev-unregistered"],
        },
    )
    assert OTHER_CLIENT_ID not in json.dumps(response)  # nor whose they are
    assert stream_devices(aws) == []


def test_readings_of_the_callers_own_devices_are_accepted_and_another_client_is_refused_them(
    ingest: ModuleType, aws: Aws, stores: Stores, context: LambdaContext
) -> None:
    body = [reading("dev-1", minutes_ago(1), temperature=20)]

    assert post(ingest, context, body)[0] == 202
    assert post(ingest, context, body, client_id=OTHER_CLIENT_ID)[0] == 403
    assert stream_devices(aws) == ["dev-1"]


def test_a_request_without_an_api_key_id_gets_403_and_nothing_is_written(
    ingest: ModuleType, aws: Aws, stores: Stores, context: LambdaContext
) -> None:
    status, response = post(
        ingest, context, [reading("dev-1", minutes_ago(1), temperature=20)], client_id=None
    )

    assert status == 403
    assert "no API key" in response["message"]
    assert stream_devices(aws) == []


def test_an_owners_map_not_published_lately_gets_503_and_nothing_is_written(
    ingest: ModuleType, aws: Aws, stores: Stores, context: LambdaContext
) -> None:
    stores.redis.delete(OWNERS_PUBLISHED_KEY)  # expired: the worker has not published for a while

    status, response = post(ingest, context, [reading("dev-1", minutes_ago(1), temperature=20)])

    assert (status, response) == (
        503,
        {"message": "device registry unavailable: the device owners have not been published for 300 s"},
    )
    assert stream_devices(aws) == []


def test_an_unreachable_redis_gets_503_and_nothing_is_written(
    load_function: LoadFunction, aws: Aws, stores: Stores, context: LambdaContext
) -> None:
    ingest = load_function("ingest", REDIS_PORT=str(free_port()))  # nothing listens there

    status, response = post(ingest, context, [reading("dev-1", minutes_ago(1), temperature=20)])

    assert (status, response) == (503, {"message": "device registry unavailable: Redis did not answer"})
    assert stream_devices(aws) == []


def test_devices_checked_lately_are_checked_again_without_a_call_to_redis(
    ingest: ModuleType, aws: Aws, stores: Stores, context: LambdaContext
) -> None:
    moment = minutes_ago(1)
    before = owner_lookups(stores)

    assert post(ingest, context, [reading("dev-1", moment, temperature=20)])[0] == 202
    assert owner_lookups(stores) == before + 1
    # The cache answers for dev-1 even if Redis no longer could; dev-2 still takes a lookup.
    stores.redis.delete(OWNERS_KEY)
    assert post(ingest, context, [reading("dev-1", moment, temperature=21)])[0] == 202
    assert owner_lookups(stores) == before + 1
    assert post(ingest, context, [reading("dev-2", moment, temperature=21)])[0] == 403
    assert owner_lookups(stores) == before + 2


@pytest.fixture
def registry_redis(stores: Stores, monkeypatch: pytest.MonkeyPatch) -> SharedRedis:
    settings = RedisSettings(
        host="127.0.0.1", port=stores.redis_port, tls=False, cluster=False,
        auth_token_secret_arn=stores.auth_token_secret_arn,
    )  # fmt: skip
    return SharedRedis(settings, stores.secretsmanager)


def test_a_registration_or_a_transfer_takes_effect_once_the_cached_owner_expires(
    registry_redis: SharedRedis, stores: Stores
) -> None:
    now = [1000.0]
    registry = Registry(registry_redis, clock=lambda: now[0])
    assert registry.refusal(CLIENT_ID, {"dev-1", "dev-new"}) is not None

    stores.publish_owners({"dev-1": OTHER_CLIENT_ID, "dev-new": CLIENT_ID})
    now[0] += CACHE_SECONDS - 1
    assert registry.owners({"dev-1", "dev-new"}) == {"dev-1": CLIENT_ID, "dev-new": None}
    now[0] += 1
    assert registry.owners({"dev-1", "dev-new"}) == {"dev-1": OTHER_CLIENT_ID, "dev-new": CLIENT_ID}


def test_a_rotated_auth_token_is_read_again_when_redis_refuses_the_old_one(
    registry_redis: SharedRedis, stores: Stores
) -> None:
    # A clock that moves on by more than the cache keeps an owner, at each look: every check asks Redis.
    registry = Registry(registry_redis, clock=itertools.count(step=2 * CACHE_SECONDS).__next__)
    assert registry.refusal(CLIENT_ID, {"dev-1"}) is None

    new_token = "rotated-auth-token-9876543210"
    stores.secretsmanager.put_secret_value(
        SecretId=stores.auth_token_secret_arn, SecretString=json.dumps({"auth_token": new_token})
    )
    stores.redis.config_set("requirepass", new_token)
    admin = redis.Redis(port=stores.redis_port, password=new_token, decode_responses=True)
    try:
        admin.client_kill_filter(_type="normal", skipme=True)  # the function's open connection ends too
        assert registry.refusal(CLIENT_ID, {"dev-1"}) is None
    finally:
        admin.config_set("requirepass", REDIS_AUTH_TOKEN)
        admin.close()


def test_a_token_redis_refuses_even_after_reading_it_again_gets_503(
    registry_redis: SharedRedis, stores: Stores
) -> None:
    stores.secretsmanager.put_secret_value(
        SecretId=stores.auth_token_secret_arn, SecretString=json.dumps({"auth_token": "not-the-token"})
    )

    refusal = Registry(registry_redis).refusal(CLIENT_ID, {"dev-1"})

    assert refusal is not None and refusal.status_code == 503
    assert refusal.body == {
        "message": "device registry unavailable: Redis refused the AUTH token the secret holds"
    }
    assert refusal.cause is not None and "AuthenticationError" in refusal.cause


def test_a_large_batch_of_owned_devices_takes_one_lookup(registry_redis: SharedRedis, stores: Stores) -> None:
    before = owner_lookups(stores)

    assert Registry(registry_redis).refusal(CLIENT_ID, set(OWNED_DEVICES)) is None
    assert owner_lookups(stores) == before + 1


@pytest.fixture
def cluster_port(tmp_path: Path) -> Iterator[int]:
    """A one-node Redis Cluster holding every slot, requiring REDIS_AUTH_TOKEN: ElastiCache's cluster mode."""
    port = free_cluster_port()
    # fmt: off
    process = subprocess.Popen(
        [
            redis_server_executable(), "--bind", "127.0.0.1", "--port", str(port),
            "--requirepass", REDIS_AUTH_TOKEN, "--save", "", "--appendonly", "no", "--dir", str(tmp_path),
            "--cluster-enabled", "yes", "--cluster-config-file", str(tmp_path / "nodes.conf"),
        ],
        stdout=subprocess.DEVNULL,
    )
    # fmt: on
    admin = redis.Redis(port=port, password=REDIS_AUTH_TOKEN, socket_timeout=2)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                admin.cluster("ADDSLOTS", *range(16384))
                break
            except redis.ConnectionError:
                assert process.poll() is None and time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.02)
        while admin.cluster("INFO")["cluster_state"] != "ok":
            assert time.monotonic() < deadline, "the one-node cluster did not become ok"
            time.sleep(0.02)
        yield port
    finally:
        admin.close()
        process.terminate()
        process.wait(10)


def test_the_owners_are_read_from_a_redis_cluster_in_one_pipeline(cluster_port: int, stores: Stores) -> None:
    settings = RedisSettings(
        host="127.0.0.1", port=cluster_port, tls=False, cluster=True,
        auth_token_secret_arn=stores.auth_token_secret_arn,
    )  # fmt: skip
    shared = SharedRedis(settings, stores.secretsmanager)
    registry = Registry(shared)
    assert registry.refusal(CLIENT_ID, {"dev-1"}) == Refusal(
        503,
        {"message": "device registry unavailable: the device owners have not been published for 300 s"},
    )

    cluster = redis.RedisCluster(host="127.0.0.1", port=cluster_port, password=REDIS_AUTH_TOKEN)
    try:
        cluster.hset(OWNERS_KEY, mapping={"dev-1": CLIENT_ID, "dev-2": OTHER_CLIENT_ID})
        cluster.set(OWNERS_PUBLISHED_KEY, 1)
    finally:
        cluster.close()
    try:
        assert Registry(shared).owners({"dev-1", "dev-2", "dev-3"}) == {
            "dev-1": CLIENT_ID,
            "dev-2": OTHER_CLIENT_ID,
            "dev-3": None,
        }
    finally:
        shared.close()


def test_redis_is_read_over_tls_verified_with_the_host_name_checked(
    stores: Stores, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with tls_relay(tmp_path, stores.redis_port) as (port, ca):
        # The system's trust store, which holds the public CA of ElastiCache's certificates.
        monkeypatch.setenv("SSL_CERT_FILE", str(ca))
        settings = RedisSettings(
            host="localhost", port=port, tls=True, cluster=False,
            auth_token_secret_arn=stores.auth_token_secret_arn,
        )  # fmt: skip
        shared = SharedRedis(settings, stores.secretsmanager)
        try:
            assert Registry(shared).refusal(CLIENT_ID, {"dev-1"}) is None
        finally:
            shared.close()

        # The certificate names localhost, not the address.
        refusal = Registry(
            SharedRedis(dataclasses.replace(settings, host="127.0.0.1"), stores.secretsmanager)
        ).refusal(CLIENT_ID, {"dev-1"})
        assert refusal is not None and refusal.status_code == 503
        assert refusal.cause is not None and "IP address mismatch" in refusal.cause
        # Nor is a certificate that the trust store cannot verify accepted.
        monkeypatch.setenv("SSL_CERT_FILE", certifi.where())
        refusal = Registry(SharedRedis(settings, stores.secretsmanager)).refusal(CLIENT_ID, {"dev-1"})
        assert (
            refusal is not None and refusal.cause is not None and "CERTIFICATE_VERIFY_FAILED" in refusal.cause
        )
