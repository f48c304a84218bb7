"""The worker's PostgreSQL writes: each reading counted once into the hourly rollups, the device registry and
the archive, in one transaction per batch.

A batch's transaction first records the identities (device, millisecond) of its readings in
counted_readings, skipping those already there: only the readings it newly records are counted, so a replayed
or re-delivered reading changes nothing, and of two workers given the same record (a lease taken over from a
slow worker) the second waits for the first's transaction and then finds them counted. Each statement takes
the whole batch as arrays (unnest), so a batch makes the same few statements whatever its size.

Connections log in with a fresh IAM auth token each (tokens last 15 minutes; a connection outlives its
token, but the pool replaces its connections before then anyway) unless the configuration has a password,
over TLS verified against the RDS CA bundle unless DATABASE_TLS is false.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from itertools import pairwise
from typing import Any

from psycopg_pool import AsyncConnectionPool
from readings import Reading, rds
from readings.rds import DatabaseSettings
from stream_worker.archive import Archive

CONNECT_TIMEOUT_SECONDS = 10
POOL_SIZE = 2
# Below the 15 minutes an IAM token lasts, as a deployment's security rules expect of a token's sessions.
POOL_MAX_LIFETIME_SECONDS = 10 * 60

COUNT = """
INSERT INTO counted_readings (device_id, measured_at)
SELECT * FROM unnest(%s::text[], %s::timestamptz[])
ON CONFLICT DO NOTHING
RETURNING device_id, measured_at
"""
ROLLUPS = """
INSERT INTO hourly_rollups AS r (device_id, hour, metric, count, sum, min, max)
SELECT * FROM unnest(
    %s::text[], %s::timestamptz[], %s::text[], %s::bigint[], %s::numeric[], %s::numeric[], %s::numeric[]
)
ON CONFLICT (device_id, hour, metric) DO UPDATE SET
    count = r.count + excluded.count,
    sum = r.sum + excluded.sum,
    min = least(r.min, excluded.min),
    max = greatest(r.max, excluded.max)
"""
# A device seen for the first time gets a row; then every device of the batch is updated from what the batch
# newly counted of it (an INSERT ... ON CONFLICT could not see the batch's first sequence number). The owner
# (client_id, registered_at) is the registration's, never the worker's.
NEW_DEVICES = """
INSERT INTO devices (device_id) SELECT unnest(%s::text[]) ON CONFLICT DO NOTHING
"""
SEEN_DEVICES = """
UPDATE devices AS d SET
    first_seen = least(d.first_seen, b.first_seen),
    last_seen = greatest(d.last_seen, b.last_seen),
    firmware = CASE
        WHEN d.last_seen IS NULL OR b.last_seen >= d.last_seen THEN coalesce(b.firmware, d.firmware)
        ELSE d.firmware
    END,
    last_sequence = coalesce(b.last_sequence, d.last_sequence),
    gaps_seen = d.gaps_seen + b.gaps + coalesce(greatest(b.first_sequence - d.last_sequence - 1, 0), 0)
FROM unnest(
    %s::text[], %s::timestamptz[], %s::timestamptz[], %s::text[], %s::bigint[], %s::bigint[], %s::bigint[]
) AS b(device_id, first_seen, last_seen, firmware, first_sequence, last_sequence, gaps)
WHERE d.device_id = b.device_id
"""
ARCHIVE_BATCH = """
INSERT INTO archive_batches (batch_id, readings) VALUES (nextval('archive_batch_ids'), %s)
RETURNING batch_id, committed_at
"""
COMMITTED_BATCHES = "SELECT batch_id, committed_at FROM archive_batches WHERE batch_id = ANY(%s)"
PRUNE = "DELETE FROM counted_readings WHERE counted_at < now() - make_interval(hours => %s)"
OWNERS = "SELECT device_id, client_id FROM devices WHERE client_id IS NOT NULL"


def connection_kwargs(config: DatabaseSettings) -> dict[str, Any]:
    """psycopg's connection parameters for one new connection (so a new IAM token, if it needs one)."""
    kwargs: dict[str, Any] = {
        "host": config.host,
        "port": config.port,
        "dbname": config.name,
        "user": config.user,
        "password": config.password or rds.auth_token(config.host, config.port, config.user, config.region),
        "connect_timeout": CONNECT_TIMEOUT_SECONDS,
    }
    if config.tls:
        kwargs |= {"sslmode": "verify-full", "sslrootcert": str(rds.ca_bundle(config.region))}
    return kwargs


def connection_pool(config: DatabaseSettings, statement_timeout_seconds: float) -> AsyncConnectionPool:
    """A closed pool of POOL_SIZE connections; open it with `await pool.open(wait=True)`.

    The server ends a statement that runs, or a transaction left idle, longer than statement_timeout_seconds:
    so a transaction never commits later than that after its last statement, even when its worker hangs.
    """
    milliseconds = round(statement_timeout_seconds * 1000)
    options = f"-c statement_timeout={milliseconds} -c idle_in_transaction_session_timeout={milliseconds}"

    async def kwargs() -> dict[str, Any]:
        # Signing a token, or fetching the CA bundle the first time, must not hold up the event loop.
        return await asyncio.to_thread(connection_kwargs, config) | {"options": options}

    return AsyncConnectionPool(
        kwargs=kwargs,
        min_size=POOL_SIZE,
        max_size=POOL_SIZE,
        max_lifetime=POOL_MAX_LIFETIME_SECONDS,
        timeout=CONNECT_TIMEOUT_SECONDS,
        open=False,
    )


@dataclass(frozen=True)
class Counted:
    """What a batch newly counted, and the archive file that holds it (None when it counted nothing)."""

    readings: list[Reading]
    batch_id: int | None = None


async def count_batch(pool: AsyncConnectionPool, archive: Archive, readings: Sequence[Reading]) -> Counted:
    """Counts the readings not yet counted into the rollups and the registry, and archives them: one
    transaction, then the archive file is published. Of two readings with the same identity in a batch, the
    first is counted."""
    batch: dict[tuple[str, datetime], Reading] = {}
    for reading in readings:
        batch.setdefault((reading.device_id, datetime.fromisoformat(reading.timestamp)), reading)
    async with pool.connection() as connection, connection.transaction():
        cursor = await connection.execute(COUNT, [[device for device, _ in batch], [at for _, at in batch]])
        new = [batch[identity] for identity in await cursor.fetchall()]
        if not new:
            return Counted([])
        async with connection.pipeline():
            await connection.execute(ROLLUPS, rollup_columns(new))
            devices = device_columns(new)
            await connection.execute(NEW_DEVICES, [devices[0]])
            await connection.execute(SEEN_DEVICES, devices)
            cursor = await connection.execute(ARCHIVE_BATCH, [len(new)])
            row = await cursor.fetchone()
        assert row is not None
        batch_id, committed_at = row
        # After the last statement but COMMIT: the transaction commits within the server's idle timeout of
        # this file being written, or never (see stream_worker.worker.PENDING_MIN_AGE_SECONDS).
        await asyncio.to_thread(archive.write_pending, batch_id, new)
    await asyncio.to_thread(archive.publish, batch_id, committed_at)
    return Counted(new, batch_id)


def rollup_columns(readings: Sequence[Reading]) -> list[list[Any]]:
    """The readings' counts, sums, minimums and maximums per device, hour and metric, as ROLLUPS's arrays,
    in key order (rows locked in one order by every worker cannot deadlock)."""
    # Exact: a value is within +-1e15 with at most 6 decimal places (readings), and a batch holds some
    # thousand readings at most (the worker's 500, plus the rest of one record), so a sum needs at most 26
    # digits, within the 28 of Python's default decimal context.
    rollups: dict[tuple[str, datetime, str], list[Any]] = {}
    for reading in readings:
        hour = datetime.fromisoformat(reading.timestamp).replace(minute=0, second=0, microsecond=0)
        for metric, number in reading.metrics.items():
            value = Decimal(number)
            rollup = rollups.get((reading.device_id, hour, metric))
            if rollup is None:
                rollups[(reading.device_id, hour, metric)] = [1, value, value, value]
            else:
                rollup[0] += 1
                rollup[1] += value
                rollup[2] = min(rollup[2], value)
                rollup[3] = max(rollup[3], value)
    keys = sorted(rollups)
    return [
        [device for device, _, _ in keys],
        [hour for _, hour, _ in keys],
        [metric for _, _, metric in keys],
        *([rollups[key][column] for key in keys] for column in range(4)),
    ]


def device_columns(readings: Sequence[Reading]) -> list[list[Any]]:
    """What the readings tell of each device, as SEEN_DEVICES's arrays, by device id: first and last seen,
    the newest reading's firmware, the first and last sequence numbers, and the sequence numbers skipped
    between them, in time order."""
    by_device: dict[str, list[Reading]] = defaultdict(list)
    for reading in readings:
        by_device[reading.device_id].append(reading)
    columns: list[list[Any]] = [[] for _ in range(7)]
    for device_id in sorted(by_device):
        seen = sorted(by_device[device_id], key=lambda reading: reading.timestamp)
        sequences = [reading.sequence for reading in seen if reading.sequence is not None]
        gaps = sum(max(later - earlier - 1, 0) for earlier, later in pairwise(sequences))
        row = (
            device_id,
            datetime.fromisoformat(seen[0].timestamp),
            datetime.fromisoformat(seen[-1].timestamp),
            seen[-1].firmware,
            sequences[0] if sequences else None,
            sequences[-1] if sequences else None,
            gaps,
        )
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    return columns


async def committed_batches(pool: AsyncConnectionPool, batch_ids: Sequence[int]) -> dict[int, datetime]:
    """Of these archive batches, those whose transaction committed, with its time."""
    async with pool.connection() as connection:
        cursor = await connection.execute(COMMITTED_BATCHES, [list(batch_ids)])
        return {batch_id: committed_at for batch_id, committed_at in await cursor.fetchall()}


async def prune_counted(pool: AsyncConnectionPool, older_than_hours: int) -> int:
    """Forgets the readings counted more than older_than_hours ago; returns how many."""
    async with pool.connection() as connection:
        cursor = await connection.execute(PRUNE, [older_than_hours])
        return cursor.rowcount


async def owners(pool: AsyncConnectionPool) -> list[tuple[str, str]]:
    """(device id, client id) of every registered device."""
    async with pool.connection() as connection:
        cursor = await connection.execute(OWNERS)
        return await cursor.fetchall()
