"""The stream worker's settings, parsed once from its environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Config:
    """The worker's own settings; the processor reads its own (table names, TTLs, ...) when imported."""

    stream_name: str
    redis_host: str
    redis_port: int
    redis_tls: bool
    redis_cluster: bool
    redis_auth_token: str | None = field(repr=False)
    lease_timeout_seconds: int
    lease_heartbeat_seconds: int

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Config:
        config = cls(
            stream_name=_required(env, "STREAM_NAME"),
            redis_host=_required(env, "REDIS_HOST"),
            redis_port=_whole_number(env, "REDIS_PORT", default=6379),
            redis_tls=_boolean(env, "REDIS_TLS", default=True),
            redis_cluster=_boolean(env, "REDIS_CLUSTER", default=True),
            redis_auth_token=env.get("REDIS_AUTH_TOKEN") or None,
            lease_timeout_seconds=_whole_number(env, "LEASE_TIMEOUT_SECONDS", default=30),
            lease_heartbeat_seconds=_whole_number(env, "LEASE_HEARTBEAT_SECONDS", default=5),
        )
        if 3 * config.lease_heartbeat_seconds > config.lease_timeout_seconds:
            raise ValueError(
                "LEASE_HEARTBEAT_SECONDS must be at most a third of LEASE_TIMEOUT_SECONDS, so that a live "
                "worker keeps its leases through two missed heartbeats"
            )
        return config


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


def _whole_number(env: Mapping[str, str], name: str, default: int) -> int:
    value = env.get(name, "")
    if not value:
        return default
    if not (value.isascii() and value.isdigit() and int(value) > 0):
        raise ValueError(f"{name} is {value!r}; set it to a positive whole number")
    return int(value)
