"""Connecting to the platform's PostgreSQL on RDS: IAM authentication tokens, and TLS verified against the
RDS certificate authorities (verify-full).

RDS signs its servers' certificates with its own CAs, which no system trust store holds. AWS publishes them
per region at RDS_CA_BUNDLE_URL; the bundle is fetched once per process over HTTPS (verified with the system's
trust store, through the VPC's NAT) and kept in a file, which both PostgreSQL drivers read.
"""

from __future__ import annotations

import ssl
import tempfile
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import boto3

from readings.settings import boolean, port, required

RDS_CA_BUNDLE_URL = "https://truststore.pki.rds.amazonaws.com/{region}/{region}-bundle.pem"
FETCH_TIMEOUT_SECONDS = 10


@dataclass(frozen=True)
class DatabaseSettings:
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
        cls,
        env: Mapping[str, str],
        *,
        user_variable: str = "DATABASE_USER",
        password_variable: str = "DATABASE_PASSWORD",
    ) -> DatabaseSettings:
        settings = cls(
            host=required(env, "DATABASE_HOST"),
            port=port(env, "DATABASE_PORT", default=5432),
            name=required(env, "DATABASE_NAME"),
            user=required(env, user_variable),
            password=env.get(password_variable) or None,
            tls=boolean(env, "DATABASE_TLS", default=True),
            region=env.get("AWS_REGION", ""),
        )
        if (settings.tls or settings.password is None) and not settings.region:
            raise ValueError(
                "environment variable AWS_REGION is required for the RDS CA bundle and IAM auth tokens"
            )
        return settings

    @classmethod
    def admin_from_env(cls, env: Mapping[str, str]) -> DatabaseSettings:
        """The admin user's (migrations, device registration): RDS's master user, with its password."""
        required(env, "DATABASE_ADMIN_PASSWORD")
        return cls.from_env(
            env, user_variable="DATABASE_ADMIN_USER", password_variable="DATABASE_ADMIN_PASSWORD"
        )


@cache
def ca_bundle(region: str) -> Path:
    """The region's RDS CA bundle, as a PEM file; raises OSError if it cannot be fetched or holds no
    certificate."""
    url = RDS_CA_BUNDLE_URL.format(region=region)
    context = ssl.create_default_context()
    with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT_SECONDS, context=context) as response:
        pem = response.read().decode("ascii")
    if "-----BEGIN CERTIFICATE-----" not in pem:
        raise OSError(f"{url} holds no certificate")
    path = Path(tempfile.mkdtemp(prefix="rds-ca-")) / f"{region}-bundle.pem"
    path.write_text(pem)
    return path


def auth_token(host: str, port: int, user: str, region: str) -> str:
    """A 15-minute IAM authentication token for `user`, signed locally with the caller's credentials (the
    role needs rds-db:connect on the user)."""
    token: str = boto3.client("rds", region_name=region).generate_db_auth_token(
        DBHostname=host, Port=port, DBUsername=user, Region=region
    )
    return token
