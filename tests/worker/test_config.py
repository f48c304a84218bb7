"""The worker's settings: defaults for the cloud, and a message naming the variable that is wrong."""

import pytest
from stream_worker.config import Config

MINIMAL = {"STREAM_NAME": "readings", "REDIS_HOST": "redis.example"}


def test_the_defaults_are_the_clouds_and_the_token_stays_out_of_logs() -> None:
    config = Config.from_env(MINIMAL | {"REDIS_AUTH_TOKEN": "s3cret-token"})
    assert (config.redis_port, config.redis_tls, config.redis_cluster) == (6379, True, True)
    assert (config.lease_timeout_seconds, config.lease_heartbeat_seconds) == (30, 5)
    assert config.redis_auth_token == "s3cret-token"
    assert "s3cret-token" not in repr(config)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"STREAM_NAME": ""}, "STREAM_NAME is required"),
        ({"REDIS_TLS": "yes"}, "REDIS_TLS is 'yes'"),
        ({"REDIS_PORT": "0"}, "REDIS_PORT is '0'"),
        ({"LEASE_HEARTBEAT_SECONDS": "11"}, "LEASE_HEARTBEAT_SECONDS must be at most a third"),
    ],
)
def test_an_invalid_setting_is_named(overrides: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Config.from_env(MINIMAL | overrides)
