"""`python -m stream_worker.probe`: do the worker's data stores answer it, with its own settings?

Checks PostgreSQL (a login as the worker's database user, which reads the device registry), Redis (PING, with
the worker's token and TLS) and the archive file system (a file written, read back and removed); prints one
line per store and exits 1 if any failed. `make verify ENV=...` runs it as a one-off task of the worker's task
definition, so from inside the VPC, through the worker's security group and role; on the emulator, as a
process of this machine against the stores `make deploy` started.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import Callable

import psycopg
from redis.exceptions import RedisError
from stream_worker.config import Config
from stream_worker.database import connection_kwargs
from stream_worker.worker import connect_redis


def postgres(config: Config) -> str:
    with psycopg.connect(**connection_kwargs(config.database)) as connection:
        row = connection.execute("SELECT current_user, count(*) FROM devices").fetchone()
    assert row is not None  # an aggregate returns one row
    user, devices = row
    return f"logged in to {config.database.host} as {user}; {devices} devices registered"


def redis(config: Config) -> str:
    async def ping() -> None:
        client = connect_redis(config)
        try:
            await client.ping()
        finally:
            await client.aclose()

    asyncio.run(ping())
    return f"{config.redis_host}:{config.redis_port} answered PING"


def archive(config: Config) -> str:
    config.archive_dir.mkdir(parents=True, exist_ok=True)
    path = config.archive_dir / f".probe-{uuid.uuid4().hex}"
    content = b"probe"
    try:
        path.write_bytes(content)
        if path.read_bytes() != content:
            raise OSError(f"{path} did not read back what was written")
    finally:
        path.unlink(missing_ok=True)
    return f"wrote, read and removed a file in {config.archive_dir}"


PROBES: dict[str, Callable[[Config], str]] = {"postgres": postgres, "redis": redis, "archive": archive}


def main() -> int:
    config = Config.from_env(os.environ)
    failures = 0
    for name, probe in PROBES.items():
        try:
            print(f"ok    {name}: {probe(config)}", flush=True)
        except (OSError, psycopg.Error, RedisError) as error:
            failures += 1
            print(f"FAIL  {name}: {type(error).__name__}: {error}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
