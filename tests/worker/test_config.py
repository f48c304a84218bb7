"""The worker's settings: defaults for the cloud, and a message naming the variable that is wrong."""

from pathlib import Path

import pytest
from readings.rds import DatabaseSettings
from stream_worker.config import Config

MINIMAL = {
    "STREAM_NAME": "readings",
    "REDIS_HOST": "redis.example",
    "DATABASE_HOST": "db.example",
    "DATABASE_NAME": "iot",
    "DATABASE_USER": "iot_worker",
    "ARCHIVE_DIR": "/mnt/archive",
    "STREAM_RETENTION_HOURS": "24",
    "AWS_REGION": "eu-west-1",
}


def test_the_defaults_are_the_clouds_and_the_secrets_stay_out_of_logs() -> None:
    config = Config.from_env(MINIMAL | {"REDIS_AUTH_TOKEN": "s3cret-token"})
    assert (config.redis_port, config.redis_tls, config.redis_cluster) == (6379, True, True)
    assert (config.lease_timeout_seconds, config.lease_heartbeat_seconds) == (30, 5)
    assert config.redis_auth_token == "s3cret-token"
    assert "s3cret-token" not in repr(config)
    # An IAM auth token (no password) over TLS verified against the RDS CA bundle.
    assert config.database == DatabaseSettings(
        "db.example", 5432, "iot", "iot_worker", None, True, "eu-west-1"
    )
    assert (config.archive_dir, config.stream_retention_hours) == (Path("/mnt/archive"), 24)


def test_the_admin_logs_in_with_the_master_password() -> None:
    admin = DatabaseSettings.admin_from_env(
        MINIMAL | {"DATABASE_ADMIN_USER": "master", "DATABASE_ADMIN_PASSWORD": "s3cret-password"}
    )
    assert (admin.user, admin.password, admin.tls) == ("master", "s3cret-password", True)
    assert "s3cret-password" not in repr(admin)


def test_a_local_database_needs_no_region() -> None:
    local = MINIMAL | {"DATABASE_PASSWORD": "local", "DATABASE_TLS": "false", "AWS_REGION": ""}
    assert Config.from_env(local).database.region == ""


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"STREAM_NAME": ""}, "STREAM_NAME is required"),
        ({"REDIS_TLS": "yes"}, "REDIS_TLS is 'yes'"),
        ({"REDIS_PORT": "0"}, "REDIS_PORT is '0'"),
        ({"LEASE_HEARTBEAT_SECONDS": "11"}, "LEASE_HEARTBEAT_SECONDS must be at most a third"),
        ({"STREAM_RETENTION_HOURS": ""}, "STREAM_RETENTION_HOURS is required"),
        ({"ARCHIVE_DIR": ""}, "ARCHIVE_DIR is required"),
        ({"DATABASE_TLS": "off"}, "DATABASE_TLS is 'off'"),
        ({"AWS_REGION": ""}, "AWS_REGION is required for the RDS CA bundle and IAM auth tokens"),
    ],
)
def test_an_invalid_setting_is_named(overrides: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Config.from_env(MINIMAL | overrides)


def test_the_admin_needs_its_password() -> None:
    with pytest.raises(ValueError, match="DATABASE_ADMIN_PASSWORD is required"):
        DatabaseSettings.admin_from_env(MINIMAL | {"DATABASE_ADMIN_USER": "master"})
