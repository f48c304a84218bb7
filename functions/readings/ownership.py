"""Which API client owns each device: the contract between the stream worker, which publishes the device
registry's owners into Redis, and the functions that check them (ingest, query), with the check itself.

A client is its API key: API Gateway gives a function the caller's key id (requestContext.identity.apiKeyId),
and the registry (PostgreSQL's `devices.client_id`) holds the key id of each registered device's owner.

The worker replaces the whole map every OWNERS_PUBLISH_SECONDS: it writes the registry's owners under
OWNERS_STAGING_KEY, renames that over OWNERS_KEY (a hash: device id -> client id) and sets
OWNERS_PUBLISHED_KEY, which expires OWNERS_STALE_SECONDS later. A reader that finds OWNERS_PUBLISHED_KEY
missing cannot tell a device nobody registered from a registry it cannot see, so it answers 503: a registry
outage never turns into "allow all". The keys share one hash tag, so that they live in one Redis Cluster slot
(RENAME needs that).

The functions read the map through `Registry`, which keeps what it read in memory for CACHE_SECONDS per
device (owned, foreign or unregistered alike), so a warm function checks a device it has seen lately without a
network call. A registration or a transfer therefore takes effect within OWNERS_PUBLISH_SECONDS (the worker's
next publication) plus CACHE_SECONDS: at most 90 s.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError
from redis import Redis, RedisCluster
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, RedisClusterException, RedisError
from redis.retry import Retry

from readings.settings import boolean, port, required

OWNERS_KEY = "{device-owners}"
OWNERS_STAGING_KEY = "{device-owners}:next"
OWNERS_PUBLISHED_KEY = "{device-owners}:published-at"
OWNERS_PUBLISH_SECONDS = 30
OWNERS_STALE_SECONDS = 300

CACHE_SECONDS = 60
# A function that has seen this many devices since it last emptied its cache empties it again.
MAX_CACHED_DEVICES = 100_000
# Redis is in the function's VPC and answers in a millisecond; a request should not wait long for one that
# does not. A command is retried once at once, on a new connection: a frozen Lambda's idle connection may
# have been closed meanwhile.
REDIS_TIMEOUT_SECONDS = 1.0
REDIS_RETRIES = 1

T = TypeVar("T")


@dataclass(frozen=True)
class RedisSettings:
    host: str
    port: int
    tls: bool
    cluster: bool
    # Secrets Manager secret holding {"auth_token": ...}; rotated, so read again when Redis refuses it.
    auth_token_secret_arn: str

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> RedisSettings:
        return cls(
            host=required(env, "REDIS_HOST"),
            port=port(env, "REDIS_PORT", default=6379),
            tls=boolean(env, "REDIS_TLS", default=True),
            cluster=boolean(env, "REDIS_CLUSTER", default=True),
            auth_token_secret_arn=required(env, "REDIS_AUTH_TOKEN_SECRET_ARN"),
        )


class Unavailable(Exception):
    """Redis cannot be read now; the message says why, for the caller's 503 (it names no host)."""

    @property
    def cause(self) -> str | None:
        """What failed, if anything did, for the log (redis-py's errors have an uninformative repr)."""
        return None if self.__cause__ is None else f"{type(self.__cause__).__name__}: {self.__cause__}"


class SharedRedis:
    """The functions' Redis client: TLS with verification, the cluster client for a cluster, the AUTH token
    from Secrets Manager.

    Nothing connects before the first call, so an outage at a cold start is a 503, not a failed start. The
    token is read on that call and again, once, when Redis refuses it (the rotation function replaced it).
    """

    def __init__(self, settings: RedisSettings, secretsmanager: Any) -> None:
        self._settings = settings
        self._secretsmanager = secretsmanager
        self._client: Redis | RedisCluster | None = None

    def run(self, commands: Callable[[Redis | RedisCluster], T]) -> T:
        """What `commands` returns, run on the client; raises Unavailable if Redis cannot be read."""
        try:
            try:
                return commands(self._connected())
            except (RedisError, RedisClusterException) as error:
                if not _authentication_refused(error):
                    raise
                self.close()
                return commands(self._connected())
        except (RedisError, RedisClusterException) as error:
            self.close()
            if _authentication_refused(error):
                raise Unavailable("Redis refused the AUTH token the secret holds") from error
            raise Unavailable("Redis did not answer") from error

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _connected(self) -> Redis | RedisCluster:
        if self._client is None:
            options: dict[str, Any] = {
                "host": self._settings.host,
                "port": self._settings.port,
                "password": self._auth_token(),
                "socket_timeout": REDIS_TIMEOUT_SECONDS,
                "socket_connect_timeout": REDIS_TIMEOUT_SECONDS,
                "retry": Retry(NoBackoff(), REDIS_RETRIES),  # the client adds to its errors: one each
                "decode_responses": True,
            }
            if self._settings.tls:
                options |= {"ssl": True, "ssl_cert_reqs": "required", "ssl_check_hostname": True}
            # The cluster client discovers the nodes as it is made: it may raise already.
            self._client = RedisCluster(**options) if self._settings.cluster else Redis(**options)
        return self._client

    def _auth_token(self) -> str:
        try:
            secret = self._secretsmanager.get_secret_value(SecretId=self._settings.auth_token_secret_arn)
            token: str = json.loads(secret["SecretString"])["auth_token"]
        except (BotoCoreError, ClientError) as error:
            raise Unavailable("the Redis AUTH token could not be read") from error
        return token


def _authentication_refused(error: BaseException) -> bool:
    """Whether Redis refused the token; the cluster client reports that as the cause of its own error."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, AuthenticationError):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


@dataclass(frozen=True)
class Refusal:
    """Why a request is refused: the function answers with this status code and body."""

    status_code: int
    body: dict[str, Any]
    cause: str | None = None  # for the log: what failed, where


class Registry:
    """The device owners as the worker last published them, cached in memory for CACHE_SECONDS."""

    def __init__(self, redis: SharedRedis, clock: Callable[[], float] = time.monotonic) -> None:
        self._redis = redis
        self._clock = clock
        self._cache: dict[str, tuple[str | None, float]] = {}  # device id -> (owner, expiry)

    def refusal(self, client_id: str | None, device_ids: Collection[str]) -> Refusal | None:
        """Why a client may not read or write these devices, if it may not: 403 if the request has no
        client, or names devices not registered to it (unregistered or another's: which, is not said);
        503 if the registry cannot be read."""
        if not client_id:
            return Refusal(403, {"message": "the request has no API key; call the API with one (x-api-key)"})
        try:
            owners = self.owners(device_ids)
        except Unavailable as error:
            return Refusal(503, {"message": f"device registry unavailable: {error}"}, cause=error.cause)
        refused = sorted(device_id for device_id in device_ids if owners[device_id] != client_id)
        if refused:
            return Refusal(
                403, {"message": "these devices are not registered to this API client", "devices": refused}
            )
        return None

    def owners(self, device_ids: Collection[str]) -> dict[str, str | None]:
        """The client owning each device (None: not registered); raises Unavailable if they cannot be
        told. Devices cached within CACHE_SECONDS cost no call; the others take one round trip."""
        now = self._clock()
        owners: dict[str, str | None] = {}
        missing = []
        for device_id in device_ids:
            cached = self._cache.get(device_id)
            if cached is not None and cached[1] > now:
                owners[device_id] = cached[0]
            else:
                missing.append(device_id)
        if missing:
            published, found = self._redis.run(lambda client: _lookup(client, missing))
            if not published:
                raise Unavailable(f"the device owners have not been published for {OWNERS_STALE_SECONDS} s")
            if len(self._cache) + len(missing) > MAX_CACHED_DEVICES:
                self._cache.clear()
            expiry = now + CACHE_SECONDS
            for device_id, owner in zip(missing, found, strict=True):
                self._cache[device_id] = (owner, expiry)
                owners[device_id] = owner
        return owners


def _lookup(client: Redis | RedisCluster, device_ids: list[str]) -> tuple[bool, list[str | None]]:
    """Whether the map is published, and the devices' owners: one pipeline, so one round trip (both keys are
    in one slot, so on one node)."""
    pipeline = client.pipeline(transaction=False)
    pipeline.exists(OWNERS_PUBLISHED_KEY)
    pipeline.hmget(OWNERS_KEY, device_ids)
    published, owners = pipeline.execute()
    return bool(published), owners
