"""The stream worker's settings, parsed once from its environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from readings.settings import boolean, positive_int, required


@dataclass(frozen=True)
class DatabaseConfig:
    """Where the platform's PostgreSQL is, and how to log in to it.

    Without a password the user logs in with an IAM auth token (RDS), made afresh for each connection; a
    password is for the admin user (RDS's master secret) and for the tests' and the local environment's
    server. TLS verifies the server against the RDS CA bundle (verify-full) unless DATABASE_TLS is false.
    """

    host: str
    port: int
    name: str
    user: str
    password: str | None = field(repr=False)
    tls: bool
    region: str

    @classmethod
    def from_env(
        cls, env: Mapping[str, str], *, user_variable: str, password_variable: str
    ) -> DatabaseConfig:
        config = cls(
            host=required(env, "DATABASE_HOST"),
            port=positive_int(env, "DATABASE_PORT", default=5432),
            name=required(env, "DATABASE_NAME"),
            user=required(env, user_variable),
            password=env.get(password_variable) or None,
            tls=boolean(env, "DATABASE_TLS", default=True),
            region=env.get("AWS_REGION", ""),
        )
        if (config.tls or config.password is None) and not config.region:
            raise ValueError(
                "environment variable AWS_REGION is required for the RDS CA bundle and IAM auth tokens"
            )
        return config

    @classmethod
    def admin_from_env(cls, env: Mapping[str, str]) -> DatabaseConfig:
        """The admin user's (migrations, device registration): RDS's master user, with its password."""
        required(env, "DATABASE_ADMIN_PASSWORD")
        return cls.from_env(
            env, user_variable="DATABASE_ADMIN_USER", password_variable="DATABASE_ADMIN_PASSWORD"
        )


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
    database: DatabaseConfig
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
            database=DatabaseConfig.from_env(
                env, user_variable="DATABASE_USER", password_variable="DATABASE_PASSWORD"
            ),
            archive_dir=Path(required(env, "ARCHIVE_DIR")),
            stream_retention_hours=positive_int(env, "STREAM_RETENTION_HOURS"),
        )
        if 3 * config.lease_heartbeat_seconds > config.lease_timeout_seconds:
            raise ValueError(
                "LEASE_HEARTBEAT_SECONDS must be at most a third of LEASE_TIMEOUT_SECONDS, so that a live "
                "worker keeps its leases through two missed heartbeats"
            )
        return config
