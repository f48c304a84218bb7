"""The worker's PostgreSQL writes, archive and owners map, in process against a real PostgreSQL and
redis-server: every reading counted once into the rollups, the registry and the archive, however often its
batch comes; a batch's statements do not grow with it; the archive's pending files settled after a crash."""

import asyncio
import gzip
import json
import os
import time
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest
import redis
from psycopg_pool import AsyncConnectionPool
from readings import Reading
from readings.ownership import OWNERS_KEY, OWNERS_PUBLISHED_KEY, OWNERS_STALE_SECONDS
from readings.rds import DatabaseSettings
from stream_worker import database, worker
from stream_worker.archive import Archive
from stream_worker.devices import register

from tests.postgres import NewDatabase, PostgresDatabase
from tests.worker.conftest import REDIS_PASSWORD

T = TypeVar("T")
HOUR = datetime(2026, 11, 30, 14, tzinfo=UTC)


def reading(
    device_id: str, minute: float, sequence: int | None = None, firmware: str | None = None, **metrics: Any
) -> Reading:
    moment = HOUR + timedelta(minutes=minute)
    return Reading.from_document(
        {
            "device_id": device_id,
            "timestamp": moment.isoformat(timespec="milliseconds"),
            "metrics": {
                name: Decimal(str(value)) for name, value in (metrics or {"temperature": 20}).items()
            },
            **({"sequence": sequence} if sequence is not None else {}),
            **({"firmware": firmware} if firmware is not None else {}),
        }
    )


def with_pool(db: PostgresDatabase, work: Callable[[AsyncConnectionPool], Coroutine[Any, Any, T]]) -> T:
    """Runs `work` with the worker's pool, logged in as the worker's user."""
    config = DatabaseSettings.from_env(db.environment("iot_worker"))

    async def run() -> T:
        async with database.connection_pool(config, statement_timeout_seconds=5) as pool:
            return await work(pool)

    return asyncio.run(run())


def count(db: PostgresDatabase, archive: Archive, readings: Sequence[Reading]) -> database.Counted:
    return with_pool(db, lambda pool: database.count_batch(pool, archive, readings))


def rollups(db: PostgresDatabase) -> dict[tuple[str, datetime, str], tuple[int, Decimal, Decimal, Decimal]]:
    with psycopg.connect(db.conninfo()) as connection:
        rows = connection.execute("SELECT device_id, hour, metric, count, sum, min, max FROM hourly_rollups")
        return {(device, hour, metric): tuple(values) for device, hour, metric, *values in rows}


def expected_rollups(
    readings: Sequence[Reading],
) -> dict[tuple[str, datetime, str], tuple[int, Decimal, Decimal, Decimal]]:
    """Computed here, plainly: each distinct reading once."""
    distinct = {r.identity: r for r in readings}
    expected: dict[tuple[str, datetime, str], tuple[int, Decimal, Decimal, Decimal]] = {}
    for r in distinct.values():
        hour = datetime.fromisoformat(r.timestamp[:13] + ":00:00+00:00")
        for metric, value in r.metrics.items():
            n, total, low, high = expected.get(
                (r.device_id, hour, metric), (0, Decimal(0), Decimal(value), Decimal(value))
            )
            expected[(r.device_id, hour, metric)] = (
                n + 1,
                total + value,
                min(low, Decimal(value)),
                max(high, Decimal(value)),
            )
    return expected


def archived_lines(archive_dir: Path) -> list[bytes]:
    """Every line of every published archive file (the pending ones left out)."""
    return sorted(
        line
        for path in archive_dir.glob("[0-9]*/*/*/*/*.jsonl.gz")
        for line in gzip.decompress(path.read_bytes()).splitlines()
    )


def test_a_replayed_batch_changes_nothing(new_database: NewDatabase, tmp_path: Path) -> None:
    db, archive = new_database(), Archive(tmp_path)
    batch = [reading("a", minute, temperature=minute) for minute in range(5)] + [
        reading("b", 70, humidity=45.5)
    ]

    first = count(db, archive, batch)
    stored = rollups(db)
    replay = count(db, archive, batch)

    assert len(first.readings) == len(batch) and first.batch_id is not None
    assert (replay.readings, replay.batch_id) == ([], None)
    assert stored == rollups(db) == expected_rollups(batch)
    assert archived_lines(tmp_path) == sorted(r.data() for r in batch)
    assert list((tmp_path / "pending").iterdir()) == []
    # The file is in its batch's hour, and holds canonical readings, one a line.
    (published,) = tmp_path.glob("*/*/*/*/*.jsonl.gz")
    assert published.name == f"{first.batch_id}.jsonl.gz"
    assert json.loads(gzip.decompress(published.read_bytes()).splitlines()[0])["device_id"] == "a"


def test_overlapping_batches_count_each_reading_once_and_sums_are_exact(
    new_database: NewDatabase, tmp_path: Path
) -> None:
    db, archive = new_database(), Archive(tmp_path)
    readings = [reading("a", minute, temperature=Decimal("0.1") * minute - 3) for minute in range(0, 120, 7)]
    # The same reading twice in a batch counts once too.
    count(db, archive, readings[:10] + readings[:1])
    count(db, archive, readings[6:])

    assert rollups(db) == expected_rollups(readings)
    assert {key[1] for key in rollups(db)} == {HOUR, HOUR + timedelta(hours=1)}
    assert rollups(db)[("a", HOUR, "temperature")][1] == sum(Decimal("0.1") * m - 3 for m in range(0, 60, 7))
    assert archived_lines(tmp_path) == sorted(r.data() for r in readings)


def test_the_registry_keeps_what_was_seen_of_each_device_and_leaves_its_owner_alone(
    new_database: NewDatabase, tmp_path: Path
) -> None:
    db, archive = new_database(), Archive(tmp_path)
    register(db.conninfo(), "client1", ["a"])
    count(db, archive, [reading("a", 2, 1, "1.0"), reading("a", 3, 2, "1.0"), reading("a", 4, 5, "1.1")])
    # Gaps: 3 and 4, then 6 and 7 between the batches, then 9; the older reading without firmware or
    # sequence changes neither.
    count(db, archive, [reading("a", 5, 8), reading("a", 6, 10, "1.2"), reading("a", 1)])
    count(db, archive, [reading("a", 5, 8)])  # a replay: no gap counted again

    with psycopg.connect(db.conninfo()) as connection:
        row = connection.execute(
            "SELECT client_id, first_seen, last_seen, firmware, last_sequence, gaps_seen FROM devices"
        ).fetchall()
    assert row == [("client1", HOUR + timedelta(minutes=1), HOUR + timedelta(minutes=6), "1.2", 10, 5)]


def test_a_batch_makes_the_same_statements_whatever_its_size(
    new_database: NewDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db, archive = new_database(), Archive(tmp_path)
    statements: list[str] = []
    execute = psycopg.AsyncCursor.execute

    async def counting_execute(
        cursor: psycopg.AsyncCursor[Any], query: Any, *args: Any, **kwargs: Any
    ) -> Any:
        statements.append(str(query))
        return await execute(cursor, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.AsyncCursor, "execute", counting_execute)
    made = []
    for size, device_count in ((2, 1), (400, 40)):
        statements.clear()
        batch = [
            reading(f"d{n % device_count}-{size}", n / 7, n, temperature=n, humidity=1) for n in range(size)
        ]
        assert len(count(db, archive, batch).readings) == size
        made.append(len(statements))
    assert made[0] == made[1] == 5


def write_pending(archive: Archive, batch_id: int, age_seconds: float) -> Path:
    path = archive.write_pending(batch_id, [reading("a", batch_id)])
    os.utime(path, (time.time() - age_seconds,) * 2)
    return path


def test_recovery_publishes_the_pending_files_of_committed_batches_and_deletes_the_others(
    new_database: NewDatabase, tmp_path: Path
) -> None:
    db, archive = new_database(), Archive(tmp_path)
    committed_at = datetime(2026, 11, 30, 23, 59, 59, tzinfo=UTC)
    with psycopg.connect(db.conninfo()) as connection:
        connection.execute(
            "INSERT INTO archive_batches (batch_id, readings, committed_at) VALUES (7, 1, %s)", [committed_at]
        )
    committed = write_pending(archive, 7, age_seconds=60)
    uncommitted = write_pending(archive, 8, age_seconds=60)
    in_flight = write_pending(archive, 9, age_seconds=1)  # its transaction may still commit
    half_written = tmp_path / "pending" / ".10.jsonl.gz.tmp"
    half_written.write_bytes(b"\x1f")
    os.utime(half_written, (time.time() - 60,) * 2)
    content = committed.read_bytes()

    with_pool(db, lambda pool: worker.settle_archive(pool, archive, worker.PENDING_MIN_AGE_SECONDS))

    assert (tmp_path / "2026/11/30/23/7.jsonl.gz").read_bytes() == content
    assert not committed.exists() and not uncommitted.exists() and not half_written.exists()
    assert in_flight.exists()
    assert archived_lines(tmp_path) == [reading("a", 7).data()]


def test_the_owners_map_is_published_and_replaced_whole(new_database: NewDatabase, redis_port: int) -> None:
    db = new_database()
    register(db.conninfo(), "client1", ["a", "b"])
    register(db.conninfo(), "client2", ["c"])
    client = redis.Redis(port=redis_port, password=REDIS_PASSWORD)
    client.hset(OWNERS_KEY, "gone", "client9")  # a device the registry no longer has

    def publish() -> None:
        async def run(pool: AsyncConnectionPool) -> None:
            async_redis = redis.asyncio.Redis(port=redis_port, password=REDIS_PASSWORD)
            try:
                await worker.publish_owners(pool, async_redis)
            finally:
                await async_redis.aclose()

        with_pool(db, run)

    publish()
    assert client.hgetall(OWNERS_KEY) == {b"a": b"client1", b"b": b"client1", b"c": b"client2"}
    assert 0 < client.ttl(OWNERS_PUBLISHED_KEY) <= OWNERS_STALE_SECONDS

    with psycopg.connect(db.conninfo()) as connection:
        connection.execute("UPDATE devices SET client_id = NULL")
    publish()
    assert not client.exists(OWNERS_KEY) and client.exists(OWNERS_PUBLISHED_KEY)
    client.close()


def test_counted_readings_are_forgotten_once_they_cannot_come_again(
    new_database: NewDatabase, tmp_path: Path
) -> None:
    db = new_database()
    count(db, Archive(tmp_path), [reading("a", 1), reading("a", 2)])
    with psycopg.connect(db.conninfo()) as connection:
        connection.execute(
            "UPDATE counted_readings SET counted_at = now() - interval '26 hours' WHERE measured_at = %s",
            [HOUR + timedelta(minutes=1)],
        )

    pruned = with_pool(db, lambda pool: database.prune_counted(pool, 25))

    with psycopg.connect(db.conninfo()) as connection:
        left = connection.execute("SELECT measured_at FROM counted_readings").fetchall()
    assert pruned == 1 and left == [(HOUR + timedelta(minutes=2),)]


def test_a_batch_whose_file_was_not_published_after_commit_is_counted_once_and_recovery_publishes_it(
    new_database: NewDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db, archive = new_database(), Archive(tmp_path)
    batch = [reading("a", 1), reading("b", 2)]
    publish = Archive.publish
    failures = iter([OSError("EFS is gone")])

    def publish_failing_once(self: Archive, batch_id: int, committed_at: datetime) -> Path:
        if failure := next(failures, None):
            raise failure
        return publish(self, batch_id, committed_at)

    monkeypatch.setattr(Archive, "publish", publish_failing_once)
    retried = with_pool(db, lambda pool: worker.count_readings(batch, pool, archive))

    assert retried.readings == []  # the second attempt found both counted by the first
    assert rollups(db) == expected_rollups(batch)
    assert archived_lines(tmp_path) == []
    with_pool(db, lambda pool: worker.settle_archive(pool, archive, min_age_seconds=0))
    assert archived_lines(tmp_path) == sorted(r.data() for r in batch)
