"""The stream worker's settings, parsed once from its environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from readings.rds import DatabaseSettings
from readings.settings import boolean, positive_int, required


@dataclass(frozen=True)
class Config:
    """The worker's own settings."""

    stream_name: str
    redis_host: str
    redis_port: int
    redis_tls: bool
    redis_cluster: bool
    redis_auth_token: str | None = field(repr=False)
    lease_timeout_seconds: int
    lease_heartbeat_seconds: int
    database: DatabaseSettings
    archive_dir: Path
    stream_retention_hours: int

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Config:
        config = cls(
            stream_name=required(env, "STREAM_NAME"),
            redis_host=required(env, "REDIS_HOST"),
            redis_port=positive_int(env, "REDIS_PORT", default=6379),
            redis_tls=boolean(env, "REDIS_TLS", default=True),
            redis_cluster=boolean(env, "REDIS_CLUSTER", default=True),
            redis_auth_token=env.get("REDIS_AUTH_TOKEN") or None,
            lease_timeout_seconds=positive_int(env, "LEASE_TIMEOUT_SECONDS", default=30),
            lease_heartbeat_seconds=positive_int(env, "LEASE_HEARTBEAT_SECONDS", default=5),
            database=DatabaseSettings.from_env(env),
            archive_dir=Path(required(env, "ARCHIVE_DIR")),
            stream_retention_hours=positive_int(env, "STREAM_RETENTION_HOURS"),
        )
        if 3 * config.lease_heartbeat_seconds > config.lease_timeout_seconds:
            raise ValueError(
                "LEASE_HEARTBEAT_SECONDS must be at most a third of LEASE_TIMEOUT_SECONDS, so that a live "
                "worker keeps its leases through two missed heartbeats"
            )
        return config
