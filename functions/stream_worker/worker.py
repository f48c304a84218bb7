"""Kinesis -> DynamoDB and Redis on ECS Fargate: the processor's exactly-once storage, behind shard leases.

Every task runs one async-kinesis Consumer. Its Redis checkpointer leases each shard to one task, keeps the
leases alive with heartbeats, and lets another task take a shard over once its lease has gone without a
heartbeat for LEASE_TIMEOUT_SECONDS; a task that stops on SIGTERM releases its leases at once. Records (one
reading, or several packed by ingest) are unpacked and checked by the readings package, and their readings
stored by the processor's code (raw readings, per-minute aggregates counted exactly once, threshold alerts);
the newest reading of each device is also kept in Redis.

A shard's checkpoint moves only after every record up to it is stored, so a task that dies loses nothing:
the next owner replays at most what came after the checkpoint, and replayed writes change nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import boto3
from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.utilities.parameters import SSMProvider
from botocore.config import Config as BotocoreConfig
from kinesis import Consumer, RedisCheckPointer  # type: ignore[import-untyped]
from kinesis.checkpointers import BaseHeartbeatCheckPointer  # type: ignore[import-untyped]
from processor import handler as processor
from readings import Reading, Unpacked, unpack
from redis.asyncio import Redis, RedisCluster
from redis.exceptions import RedisError
from stream_worker.config import Config

# A batch ends after the record that brings it to this many readings (a packed record holds some 200).
MAX_BATCH_READINGS = 500
BATCH_WINDOW_SECONDS = 1.0
# async-kinesis gives up on a record it cannot queue for 30 s and moves its shard past it: were that record's
# checkpoint written later, the record would be lost. The queue only stays full while the worker is busy with
# a batch, so a batch that takes longer than this stops the worker, before its checkpoint, instead.
BATCH_DEADLINE_SECONDS = 20.0
STORE_MAX_ATTEMPTS = 4
STORE_RETRY_DELAY_SECONDS = 0.5
# The problems of a batch's readings that cannot be stored are logged up to this many; all are counted.
MAX_LOGGED_PROBLEMS = 100
# Longer than the second the library waits after finding a shard leased, so that a worker starting a moment
# after another still gets its share (see Leases).
ACQUIRE_INTERVAL_SECONDS = 2.0
# Bounds every AWS and Redis call, so that a batch, and the worker's exit after a failed one, end in time.
AWS_CLIENT_CONFIG = BotocoreConfig(
    connect_timeout=5, read_timeout=10, retries={"mode": "standard", "max_attempts": 3}
)
REDIS_TIMEOUT_SECONDS = 5
# One hash per device, replaced only by a reading at least as new (canonical timestamps sort as times do;
# an equal one is the same reading resent, which replaces the raw item too). It expires with the raw
# reading, which also makes it evictable under ElastiCache's volatile-lru, unlike the leases.
LATEST_READING_SCRIPT = """
local stored = redis.call('HGET', KEYS[1], 'timestamp')
if stored and stored > ARGV[1] then
    return 0
end
redis.call('HSET', KEYS[1], 'timestamp', ARGV[1], 'reading', ARGV[2])
redis.call('EXPIREAT', KEYS[1], ARGV[3])
return 1
"""

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
        if loop.time() < self._next_acquisition:
            return False, None
        leased, checkpoint = await super().allocate(shard_id)
        if leased:
            self._next_acquisition = loop.time() + ACQUIRE_INTERVAL_SECONDS
            logger.info("Leased a shard", shard_id=shard_id, checkpoint=checkpoint)
        return leased, checkpoint

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
class Aws:
    dynamodb: Any
    sns: Any
    ssm: SSMProvider


def main() -> None:
    # The libraries' own logs (async-kinesis, botocore, redis, asyncio) in the same JSON, warnings and up.
    copy_config_to_registered_loggers(source_logger=logger, log_level=logging.WARNING)
    try:
        config = Config.from_env(os.environ)
        aws = Aws(
            dynamodb=boto3.client("dynamodb", config=AWS_CLIENT_CONFIG),
            sns=boto3.client("sns", config=AWS_CLIENT_CONFIG),
            # Caches for POWERTOOLS_PARAMETERS_MAX_AGE seconds, as in the processor.
            ssm=SSMProvider(boto3_client=boto3.client("ssm", config=AWS_CLIENT_CONFIG)),
        )
        asyncio.run(run(config, aws))
    except Exception:
        logger.exception("The worker failed")
        raise SystemExit(1) from None


async def run(config: Config, aws: Aws) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(stop_signal, stop.set)

    worker_id = f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
    redis = connect_redis(config)
    leases = Leases(redis, name=config.stream_name, worker_id=worker_id, config=config)
    logger.info("Starting", worker_id=worker_id, stream_name=config.stream_name)
    try:
        async with Consumer(
            config.stream_name,
            checkpointer=leases,
            processor=RecordData(),
            # A shard without a checkpoint is read from its oldest record, never from its newest.
            iterator_type="TRIM_HORIZON",
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
                            await process(records, aws, redis)
                        # Every checkpoint buffered so far is of records handed over, so now stored.
                        await leases.manual_checkpoint()
                except TimeoutError:
                    raise RuntimeError(f"a batch took longer than {BATCH_DEADLINE_SECONDS} s") from None
            logger.info("Stopping: releasing the leases")
    finally:
        await redis.aclose()


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


async def process(records: list[Unpacked], aws: Aws, redis: Redis | RedisCluster) -> None:
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
    counted, breaches = await store_readings(readings, aws)
    await keep_latest_readings(redis, readings)
    logger.info(
        "Stored a batch",
        records=len(records),
        readings=len(readings),
        invalid_records=sum(bool(record.problems) for record in records),
        counted=counted,
        breaches=breaches,
    )


async def store_readings(readings: list[Reading], aws: Aws) -> tuple[int, int]:
    """The processor's writes. What AWS did not take is written again, the way Lambda retries a record: it is
    safe to. Returns the readings newly counted and the alerts published; raises if readings are still not
    stored after STORE_MAX_ATTEMPTS attempts."""
    pending = readings
    counted = breaches = 0
    for attempt in range(1, STORE_MAX_ATTEMPTS + 1):
        if attempt > 1:
            await asyncio.sleep(STORE_RETRY_DELAY_SECONDS * (attempt - 1))
        try:
            outcome = await asyncio.to_thread(_store_readings, pending, aws)
        except processor.AWS_ERRORS as error:  # the thresholds could not be read
            logger.warning("Storing a batch failed", attempt=attempt, error=str(error))
            continue
        counted += outcome.counted
        breaches += outcome.breaches
        if not outcome.unstored:
            return counted, breaches
        pending = [reading for reading in pending if reading.identity in outcome.unstored]
        logger.warning("AWS did not take every reading of a batch", attempt=attempt, unstored=len(pending))
    raise RuntimeError(f"readings were still not stored after {STORE_MAX_ATTEMPTS} attempts")


def _store_readings(readings: list[Reading], aws: Aws) -> processor.Outcome:
    config = processor.CONFIG
    thresholds = processor.parse_thresholds(aws.ssm.get(config.thresholds_parameter_name, transform="json"))
    return processor.store_readings(readings, thresholds, config, aws.dynamodb, aws.sns)


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
            processor.expires_at(reading.epoch_seconds, processor.CONFIG.reading_ttl),
        )
    await pipeline.execute()


def latest_reading_key(device_id: str) -> str:
    return f"latest-reading:{device_id}"


if __name__ == "__main__":
    main()
