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
from functools import cache
from pathlib import Path

import boto3

RDS_CA_BUNDLE_URL = "https://truststore.pki.rds.amazonaws.com/{region}/{region}-bundle.pem"
FETCH_TIMEOUT_SECONDS = 10


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
