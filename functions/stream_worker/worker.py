"""Kinesis -> PostgreSQL, the EFS archive and Redis on ECS Fargate, behind shard leases.

Every task runs one async-kinesis Consumer. Its Redis checkpointer leases each shard to one task, keeps the
leases alive with heartbeats, and lets another task take a shard over once its lease has gone without a
heartbeat for LEASE_TIMEOUT_SECONDS; a task that stops on SIGTERM releases its leases at once. Records (one
reading, or several packed by ingest) are unpacked and checked by the readings package; each batch's readings
are counted once into PostgreSQL's hourly rollups and device registry and archived on EFS (stream_worker.
database and stream_worker.archive), and the newest reading of each device is kept in Redis. The processor
Lambda, not the worker, stores the raw readings and minute aggregates in DynamoDB and publishes alerts.

A shard's checkpoint moves only after every record up to it is stored in all three, so a task that dies
loses nothing: the next owner replays at most what came after the checkpoint, and replayed readings change
nothing. Beside the stream, every task publishes the device registry's owners into Redis for ingest and query
(readings.ownership), settles the archive's pending files, and prunes the counted readings that can no
longer come again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from kinesis import Consumer, RedisCheckPointer  # type: ignore[import-untyped]
from kinesis.checkpointers import BaseHeartbeatCheckPointer  # type: ignore[import-untyped]
from psycopg_pool import AsyncConnectionPool
from readings import Reading, Unpacked, unpack
from readings.ownership import (
    OWNERS_KEY,
    OWNERS_PUBLISH_SECONDS,
    OWNERS_PUBLISHED_KEY,
    OWNERS_STAGING_KEY,
    OWNERS_STALE_SECONDS,
)
from redis.asyncio import Redis, RedisCluster
from redis.exceptions import RedisError
from stream_worker import database
from stream_worker.archive import Archive
from stream_worker.config import Config

# A batch ends after the record that brings it to this many readings (a packed record holds some 200).
MAX_BATCH_READINGS = 500
BATCH_WINDOW_SECONDS = 1.0
# The records fetched ahead of the batches, across the task's shards. async-kinesis's default, 10,000, was
# sized for a reading per record: packed records of up to 25 KB would let it hold 250 MB, half of a small
# task's memory. Four batches' worth holds at most 50 MB and still keeps the next batch ready.
QUEUED_RECORDS = 4 * MAX_BATCH_READINGS
# async-kinesis gives up on a record it cannot queue for 30 s and moves its shard past it: were that record's
# checkpoint written later, the record would be lost. The queue only stays full while the worker is busy with
# a batch, so a batch that takes longer than this stops the worker, before its checkpoint, instead. PostgreSQL
# ends a statement, or a transaction left idle, after as long (database.connection_pool), so a batch's
# transaction commits within BATCH_DEADLINE_SECONDS of its archive file being written, or never.
BATCH_DEADLINE_SECONDS = 20.0
# A pending archive file this old belongs to no transaction that can still commit: recovery may settle it.
PENDING_MIN_AGE_SECONDS = 2 * BATCH_DEADLINE_SECONDS
ARCHIVE_RECOVERY_SECONDS = 5 * 60
# A record is delivered again only while it is on the stream, and its readings were counted after it was
# put there: a reading counted more than the stream's retention ago cannot come again from that record. The
# margin covers the clocks of Kinesis and PostgreSQL.
PRUNE_MARGIN_HOURS = 1
PRUNE_SECONDS = 10 * 60
STORE_MAX_ATTEMPTS = 4
STORE_RETRY_DELAY_SECONDS = 0.5
# What may fail for a while and pass: the database (connections, deadlocks between workers counting the same
# devices, timeouts), the archive's file system.
TRANSIENT_ERRORS = (psycopg.OperationalError, OSError)
# The problems of a batch's readings that cannot be stored are logged up to this many; all are counted.
MAX_LOGGED_PROBLEMS = 100
# Longer than the second the library waits after finding a shard leased, so that a worker starting a moment
# after another still gets its share (see Leases).
ACQUIRE_INTERVAL_SECONDS = 2.0
# Bounds every Redis call, so that a batch, and the worker's exit after a failed one, end in time.
REDIS_TIMEOUT_SECONDS = 5
# One hash per device, replaced only by a reading at least as new (canonical timestamps sort as times do;
# an equal one is the same reading resent). It expires a year after the reading was measured: that also makes
# it evictable under ElastiCache's volatile-lru, unlike the leases.
LATEST_READING_SCRIPT = """
local stored = redis.call('HGET', KEYS[1], 'timestamp')
if stored and stored > ARGV[1] then
    return 0
end
redis.call('HSET', KEYS[1], 'timestamp', ARGV[1], 'reading', ARGV[2])
redis.call('EXPIREAT', KEYS[1], ARGV[3])
return 1
"""
LATEST_READING_TTL_SECONDS = 365 * 24 * 3600
# Fields per HSET when the owners map is published.
OWNERS_CHUNK = 1000

logger = Logger()


class Leases(RedisCheckPointer):  # type: ignore[misc]  # async-kinesis has no type information
    """async-kinesis's Redis leases and checkpoints, adapted to the worker.

    - RedisCheckPointer builds its own client from REDIS_* variables, without TLS; this uses the worker's.
    - auto_checkpoint=False: the consumer only buffers the checkpoints of records it has handed over, and
      `manual_checkpoint()` writes them once the worker has stored those records.
    - The library leases every free shard it finds at once and never rebalances, so the first worker to start
      would take them all. Taking one shard per ACQUIRE_INTERVAL_SECONDS lets workers that start together
      share the stream.
    """

    def __init__(self, client: Redis | RedisCluster, name: str, worker_id: str, config: Config) -> None:
        # RedisCheckPointer.__init__ only adds its own client to this.
        BaseHeartbeatCheckPointer.__init__(
            self,
            name=name,
            id=worker_id,
            session_timeout=config.lease_timeout_seconds,
            heartbeat_frequency=config.lease_heartbeat_seconds,
            auto_checkpoint=False,
        )
        self.client = client
        self._next_acquisition = 0.0

    async def allocate(self, shard_id: str) -> tuple[bool, str | None]:
        loop = asyncio.get_running_loop()
        if loop.time() < self._next_acquisition or await self._leased_elsewhere(shard_id):
            return False, None
        leased, checkpoint = await super().allocate(shard_id)
        if leased:
            self._next_acquisition = loop.time() + ACQUIRE_INTERVAL_SECONDS
            logger.info("Leased a shard", shard_id=shard_id, checkpoint=checkpoint)
        return leased, checkpoint

    async def _leased_elsewhere(self, shard_id: str) -> bool:
        """Whether the shard's lease is alive, as the library decides it; the library finds it out too, but
        only after sleeping a second, inline, which delays the fetching of every shard the worker holds."""
        lease = await self.client.get(self.get_key(shard_id))
        heartbeat = json.loads(lease)["ts"] if lease else None
        return heartbeat is not None and self.get_ts() - heartbeat < self.session_timeout

    async def do_heartbeat(self, key: str, value: dict[str, Any]) -> None:
        # The library's heartbeat task ends at its first error; a Redis failover must not end it.
        try:
            await super().do_heartbeat(key, value)
        except RedisError as error:
            logger.warning("Lease heartbeat failed", key=key, error=str(error))

    async def _checkpoint(self, shard_id: str, sequence: str) -> None:
        # The consumer releases a shard as soon as it reads its end (after resharding), while the checkpoint
        # of its last records waits for them to be stored; writing it then would take the lease back.
        if self.is_allocated(shard_id):
            await super()._checkpoint(shard_id, sequence)


class RecordData:
    """An async-kinesis processor that hands each record's data over as it is, for readings.unpack to read.

    The library's JSON processors would read metric values as binary floats, and fail on a record that is not
    JSON over and over, until the consumer stops fetching.
    """

    def parse(self, data: bytes) -> Iterator[bytes]:
        yield data


@dataclass(frozen=True)
class Stores:
    """Where the worker writes."""

    pool: AsyncConnectionPool
    archive: Archive
    redis: Redis | RedisCluster


def main() -> None:
    # The libraries' own logs (async-kinesis, botocore, redis, psycopg, asyncio) in the same JSON, warnings
    # and up.
    copy_config_to_registered_loggers(source_logger=logger, log_level=logging.WARNING)
    try:
        asyncio.run(run(Config.from_env(os.environ)))
    except Exception:
        logger.exception("The worker failed")
        raise SystemExit(1) from None


async def run(config: Config) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(stop_signal, stop.set)

    worker_id = f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
    redis = connect_redis(config)
    pool = database.connection_pool(config.database, statement_timeout_seconds=BATCH_DEADLINE_SECONDS)
    stores = Stores(pool, Archive(config.archive_dir), redis)
    leases = Leases(redis, name=config.stream_name, worker_id=worker_id, config=config)
    logger.info("Starting", worker_id=worker_id, stream_name=config.stream_name)
    try:
        await pool.open(wait=True)
        prune_after_hours = config.stream_retention_hours + PRUNE_MARGIN_HOURS
        # Each first runs now: the owners map is fresh, and what a worker that died left pending is settled
        # (settling only touches files too old to be a running batch's, so it can run beside the batches).
        periodic = [
            asyncio.create_task(every(OWNERS_PUBLISH_SECONDS, publish_owners, pool, redis)),
            asyncio.create_task(
                every(ARCHIVE_RECOVERY_SECONDS, settle_archive, pool, stores.archive, PENDING_MIN_AGE_SECONDS)
            ),
            asyncio.create_task(every(PRUNE_SECONDS, prune_counted, pool, prune_after_hours)),
        ]
        try:
            await consume(config, stores, leases, stop)
        finally:
            for task in periodic:
                task.cancel()
            await asyncio.gather(*periodic, return_exceptions=True)
    finally:
        await pool.close()
        await redis.aclose()


async def consume(config: Config, stores: Stores, leases: Leases, stop: asyncio.Event) -> None:
    async with Consumer(
        config.stream_name,
        checkpointer=leases,
        processor=RecordData(),
        # A shard without a checkpoint is read from its oldest record, never from its newest.
        iterator_type="TRIM_HORIZON",
        max_queue_size=QUEUED_RECORDS,
        # The library sleeps this long inline for every shard it finds caught up, delaying all the
        # others; its per-shard fetch rate (one GetRecords a second) already paces the polling.
        sleep_time_no_records=0.2,
        # ListShards allows 100 calls a second per stream; DescribeStream, 10 per account.
        use_list_shards=True,
    ) as consumer:
        while not stop.is_set():
            if not consumer.is_fetching:
                raise RuntimeError("the consumer stopped fetching after repeated errors")
            records = await next_batch(consumer)
            try:
                async with asyncio.timeout(BATCH_DEADLINE_SECONDS):
                    if records:
                        await process(records, stores)
                    # Every checkpoint buffered so far is of records handed over, so now stored.
                    await leases.manual_checkpoint()
            except TimeoutError:
                raise RuntimeError(f"a batch took longer than {BATCH_DEADLINE_SECONDS} s") from None
        logger.info("Stopping: releasing the leases")


def connect_redis(config: Config) -> Redis | RedisCluster:
    options: dict[str, Any] = {
        "host": config.redis_host,
        "port": config.redis_port,
        "password": config.redis_auth_token,
        "socket_timeout": REDIS_TIMEOUT_SECONDS,
        "socket_connect_timeout": REDIS_TIMEOUT_SECONDS,
    }
    if config.redis_tls:
        options |= {"ssl": True, "ssl_cert_reqs": "required", "ssl_check_hostname": True}
    return RedisCluster(**options) if config.redis_cluster else Redis(**options)


async def next_batch(consumer: Any) -> list[Unpacked]:
    """Records until they hold MAX_BATCH_READINGS readings, the stream is idle, or BATCH_WINDOW_SECONDS have
    passed."""
    records: list[Unpacked] = []
    readings = 0
    try:
        async with asyncio.timeout(BATCH_WINDOW_SECONDS):
            while readings < MAX_BATCH_READINGS:
                record = unpack(await anext(consumer))
                records.append(record)
                readings += len(record.readings)
    except (TimeoutError, StopAsyncIteration):
        pass
    return records


async def process(records: list[Unpacked], stores: Stores) -> None:
    """Stores the records' readings. One that cannot be stored is logged and skipped: it must not hold up
    its shard, and no retry could change it."""
    readings = [reading for record in records for reading in record.readings]
    problems = [problem for record in records for problem in record.problems]
    if problems:
        logger.warning(
            "Skipping readings that cannot be stored",
            problem_count=len(problems),
            problems=[asdict(problem) for problem in problems[:MAX_LOGGED_PROBLEMS]],
        )
    if not readings:
        return
    counted = await count_readings(readings, stores.pool, stores.archive)
    await keep_latest_readings(stores.redis, readings)
    logger.info(
        "Stored a batch",
        records=len(records),
        readings=len(readings),
        invalid_records=sum(bool(record.problems) for record in records),
        counted=len(counted.readings),
        archive_batch_id=counted.batch_id,
    )


async def count_readings(
    readings: list[Reading], pool: AsyncConnectionPool, archive: Archive
) -> database.Counted:
    """database.count_batch, tried again after what may pass (a failed attempt either committed, and its
    readings are found counted, or changed nothing); raises if the batch still fails after
    STORE_MAX_ATTEMPTS attempts."""
    for attempt in range(1, STORE_MAX_ATTEMPTS + 1):
        if attempt > 1:
            await asyncio.sleep(STORE_RETRY_DELAY_SECONDS * (attempt - 1))
        try:
            return await database.count_batch(pool, archive, readings)
        except TRANSIENT_ERRORS as error:
            logger.warning("Counting a batch failed", attempt=attempt, error=str(error))
    raise RuntimeError(f"a batch was still not counted after {STORE_MAX_ATTEMPTS} attempts")


async def keep_latest_readings(redis: Redis | RedisCluster, readings: list[Reading]) -> None:
    newest: dict[str, Reading] = {}
    for reading in readings:
        kept = newest.get(reading.device_id)
        if kept is None or reading.timestamp >= kept.timestamp:
            newest[reading.device_id] = reading
    pipeline = redis.pipeline(transaction=False)  # one key per command: fine for a cluster
    for reading in newest.values():
        pipeline.eval(
            LATEST_READING_SCRIPT,
            1,
            latest_reading_key(reading.device_id),
            reading.timestamp,
            reading.data(),
            reading.epoch_seconds + LATEST_READING_TTL_SECONDS,
        )
    await pipeline.execute()


def latest_reading_key(device_id: str) -> str:
    return f"latest-reading:{device_id}"


async def every(seconds: float, job: Callable[..., Awaitable[object]], *arguments: Any) -> None:
    """Runs the job every `seconds`, the first time at once. A failure is logged; the job runs again when
    next due."""
    while True:
        try:
            await job(*arguments)
        except Exception:
            logger.exception("A periodic job failed", job=job.__name__)
        await asyncio.sleep(seconds)


async def publish_owners(pool: AsyncConnectionPool, redis: Redis | RedisCluster) -> None:
    """Replaces Redis's map of device owners with the registry's, as readings.ownership describes. One
    MULTI/EXEC (the keys share a slot), so that workers publishing at the same time cannot mix their maps."""
    owners = await database.owners(pool)
    pipeline = redis.pipeline(transaction=True)
    pipeline.delete(OWNERS_STAGING_KEY)
    for start in range(0, len(owners), OWNERS_CHUNK):
        pipeline.hset(OWNERS_STAGING_KEY, mapping=dict(owners[start : start + OWNERS_CHUNK]))
    if owners:
        pipeline.rename(OWNERS_STAGING_KEY, OWNERS_KEY)
    else:
        pipeline.delete(OWNERS_KEY)
    pipeline.set(OWNERS_PUBLISHED_KEY, datetime.now(UTC).isoformat(), ex=OWNERS_STALE_SECONDS)
    await pipeline.execute()


async def settle_archive(pool: AsyncConnectionPool, archive: Archive, min_age_seconds: float) -> None:
    """Publishes the pending archive files of committed batches and deletes the others' (stream_worker.
    archive), of those older than min_age_seconds."""
    batch_ids = await asyncio.to_thread(archive.stale_batches, min_age_seconds)
    if batch_ids:
        committed = await database.committed_batches(pool, batch_ids)
        settled = await asyncio.to_thread(archive.settle, batch_ids, committed)
        logger.info("Settled pending archive files", published=settled.published, deleted=settled.deleted)


async def prune_counted(pool: AsyncConnectionPool, older_than_hours: int) -> None:
    pruned = await database.prune_counted(pool, older_than_hours)
    logger.info("Pruned counted readings", pruned=pruned, older_than_hours=older_than_hours)


if __name__ == "__main__":
    main()
