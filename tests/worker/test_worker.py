"""Two worker processes share a four-shard stream; one is killed in the middle of a batch, the other takes its
shards over, and every reading is counted exactly once: in PostgreSQL's rollups and registry, in the EFS
archive and, for the newest, in Redis; the registry's owners are published to Redis. Records of one reading
(as ingest wrote them before it packed readings) and packed records are both read."""

import asyncio
import gzip
import json
import signal
from collections import defaultdict
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import readings
from readings.ownership import OWNERS_KEY, OWNERS_PUBLISHED_KEY
from readings.rds import DatabaseSettings
from stream_worker import database, worker
from stream_worker.archive import Archive
from stream_worker.devices import register

from tests.functions.events import minutes_ago, reading
from tests.worker.conftest import SHARD_COUNT, Services, StartWorker, wait_until

DEVICES = [f"device-{number:02}" for number in range(24)]
SHARDS = {f"shardId-{number:012}" for number in range(SHARD_COUNT)}

Readings = list[dict[str, Any]]


def readings_from(start: datetime, count: int, devices: list[str]) -> Readings:
    """`count` readings of each device, 7.5 s apart, so that they span minutes; some above the threshold."""
    return [
        reading(device, start + timedelta(seconds=7.5 * step), temperature=40 + (7 * step + index) % 50)
        for index, device in enumerate(devices)
        for step in range(count)
    ]


def canonical(document: dict[str, Any]) -> bytes:
    """The record data ingest writes."""
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def put(services: Services, payloads: list[tuple[str, bytes]]) -> set[str]:
    """Puts (partition key, data) records on the stream; returns the shards they went to."""
    shards = set()
    for start in range(0, len(payloads), 500):
        response = services.kinesis.put_records(
            StreamName=services.stream_name,
            Records=[{"PartitionKey": key, "Data": data} for key, data in payloads[start : start + 500]],
        )
        assert response["FailedRecordCount"] == 0
        shards |= {record["ShardId"] for record in response["Records"]}
    return shards


def put_single_readings(services: Services, documents: Readings) -> set[str]:
    """One record per reading, keyed by its device: records of version 1."""
    return put(services, [(document["device_id"], canonical(document)) for document in documents])


def put_packed_readings(services: Services, documents: Readings) -> None:
    """The readings packed as ingest packs them, a few per record."""
    for start in range(0, len(documents), 7):
        packed = readings.pack([readings.Reading.from_document(d) for d in documents[start : start + 7]])
        put(services, [(record.partition_key, record.data) for record in packed])


def expected_state(documents: Readings) -> dict[str, Any]:
    distinct = {(document["device_id"], document["timestamp"]): document for document in documents}
    rollups: dict[tuple[str, datetime], list[Any]] = defaultdict(lambda: [0, Decimal(0), None, None])
    seen: dict[str, list[datetime]] = defaultdict(list)
    for (device, timestamp), document in distinct.items():
        value = Decimal(str(document["metrics"]["temperature"]))
        rollup = rollups[(device, datetime.fromisoformat(timestamp[:13] + ":00:00+00:00"))]
        rollup[0] += 1
        rollup[1] += value
        rollup[2] = value if rollup[2] is None else min(rollup[2], value)
        rollup[3] = value if rollup[3] is None else max(rollup[3], value)
        seen[device].append(datetime.fromisoformat(timestamp))
    latest = {device: document for (device, _), document in sorted(distinct.items())}
    return {
        "rollups": {key: tuple(rollup) for key, rollup in rollups.items()},
        "devices": {device: (min(moments), max(moments)) for device, moments in seen.items()},
        "latest": {
            device: (document["timestamp"].encode(), canonical(document))
            for device, document in latest.items()
        },
    }


def stored_state(services: Services) -> dict[str, Any]:
    latest = {}
    for device in DEVICES:
        fields = services.redis.hgetall(f"latest-reading:{device}")
        if fields:
            latest[device] = (fields[b"timestamp"], fields[b"reading"])
    with psycopg.connect(services.database.conninfo()) as connection:
        rollups = connection.execute(
            "SELECT device_id, hour, count, sum, min, max FROM hourly_rollups WHERE metric = 'temperature'"
        ).fetchall()
        devices = connection.execute("SELECT device_id, first_seen, last_seen FROM devices").fetchall()
    return {
        "rollups": {(device, hour): tuple(values) for device, hour, *values in rollups},
        "devices": {device: (first, last) for device, first, last in devices},
        "latest": latest,
    }


def waiting_for_locks(services: Services) -> int:
    """The worker's database sessions waiting for a lock."""
    with psycopg.connect(services.database.conninfo()) as connection:
        row = connection.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = 'iot_worker' AND wait_event_type = 'Lock'"
        ).fetchone()
    assert row is not None
    return int(row[0])


def archived_lines(services: Services) -> list[bytes]:
    """Every line of every published archive file, duplicates and all."""
    return sorted(
        line
        for path in services.archive_dir.glob("[0-9]*/*/*/*/*.jsonl.gz")
        for line in gzip.decompress(path.read_bytes()).splitlines()
    )


def settle_archive(services: Services) -> None:
    """What a worker's recovery does, at once: once no worker runs, no transaction is in flight."""
    config = DatabaseSettings.from_env(services.database.environment("iot_worker"))

    async def settle() -> None:
        async with database.connection_pool(config, statement_timeout_seconds=5) as pool:
            await worker.settle_archive(pool, Archive(services.archive_dir), min_age_seconds=0)

    asyncio.run(settle())


def leases(services: Services) -> dict[str, Any]:
    """The lease of each shard, as async-kinesis's RedisCheckPointer keeps it (its key is its own)."""
    return {
        shard: json.loads(services.redis.get(f"pyredis-{services.stream_name}-{shard}") or "null")
        for shard in SHARDS
    }


def test_a_worker_takes_over_the_shards_of_a_dead_one_and_every_reading_is_counted_once(
    services: Services, start_worker: StartWorker
) -> None:
    register(services.database.conninfo(), "client1", DEVICES[:3])
    first, second = start_worker("first"), start_worker("second")
    wait_until(
        lambda: (
            first.leased_shards()
            and second.leased_shards()
            and first.leased_shards() | second.leased_shards() == SHARDS
        ),
        90,  # two worker processes start and balance leases; slow when every CPU is busy (CI runs 4 workers)
        lambda: f"the workers leased {first.leased_shards()} and {second.leased_shards()}",
    )

    before = readings_from(minutes_ago(10), 5, DEVICES)
    resent = before[7]
    assert put_single_readings(services, [*before, resent]) == SHARDS, "the devices do not cover every shard"
    put(services, [(DEVICES[0], b"not JSON")])
    wait_until(
        lambda: stored_state(services) == expected_state(before),
        30,
        lambda: f"stored before the kill: {stored_state(services)}",
    )

    # Killed in the middle of a batch's transaction: the rollups are locked while these arrive, so that both
    # workers wait inside theirs (having recorded the batch's readings as counted, uncommitted). The dead
    # worker's transaction rolls back, and the survivor counts its records once it has taken its shards.
    during = readings_from(minutes_ago(8), 5, DEVICES)
    with psycopg.connect(services.database.conninfo()) as locker:
        locker.execute("LOCK TABLE hourly_rollups IN SHARE MODE")
        put_packed_readings(services, during)
        wait_until(
            lambda: waiting_for_locks(services) == 2,
            10,  # well within the batch deadline (20 s), which the survivor must meet once the lock is gone
            lambda: f"{waiting_for_locks(services)} workers wait for the rollups",
        )
        first.signal(signal.SIGKILL)
        assert first.process.wait(timeout=10) == -signal.SIGKILL
    # Newer readings for every device but the first, which gets an older one: Redis must keep its newest.
    after = readings_from(minutes_ago(5), 5, DEVICES[1:]) + readings_from(minutes_ago(20), 1, DEVICES[:1])
    put_packed_readings(services, after)
    # A packed record with a reading that can never be stored: it is skipped, and its neighbours stored.
    neighbours = readings_from(minutes_ago(3), 1, DEVICES[:2])
    unstorable = neighbours[0] | {"device_id": DEVICES[2], "metrics": {"temperature": 2e-130}}
    put(
        services,
        [("mixed", json.dumps({"v": 2, "readings": [neighbours[0], unstorable, neighbours[1]]}).encode())],
    )
    every_reading = before + during + after + neighbours

    expected = expected_state(every_reading)
    wait_until(
        lambda: stored_state(services) == expected,
        60,
        lambda: f"the survivor leased {second.leased_shards()}; stored {stored_state(services)}",
    )
    assert second.leased_shards() == SHARDS
    # The registry's owners, for ingest and query (the workers publish them when they start).
    assert services.redis.hgetall(OWNERS_KEY) == {device.encode(): b"client1" for device in DEVICES[:3]}
    assert services.redis.exists(OWNERS_PUBLISHED_KEY)

    second.signal(signal.SIGTERM)
    assert second.process.wait(timeout=20) == 0, "the worker did not stop cleanly on SIGTERM"
    assert all(lease["ref"] is None for lease in leases(services).values()), "the leases were not released"
    settle_archive(services)
    distinct = {(document["device_id"], document["timestamp"]): document for document in every_reading}
    assert archived_lines(services) == sorted(canonical(document) for document in distinct.values())
    assert list((services.archive_dir / "pending").iterdir()) == []
