"""Two worker processes share a four-shard stream; one is killed, the other takes its shards over, and every
reading is stored exactly once: in the raw table, in the aggregates and, for the newest, in Redis. Records of
one reading (as ingest wrote them before it packed readings) and packed records are both read."""

import json
import signal
from collections import defaultdict
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import readings

from tests.functions.events import minutes_ago, reading
from tests.worker.conftest import SHARD_COUNT, THRESHOLDS, Services, StartWorker, wait_until

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


def scan(services: Services, table: str) -> list[dict[str, Any]]:
    pages = services.dynamodb.get_paginator("scan").paginate(TableName=table, ConsistentRead=True)
    return [item for page in pages for item in page["Items"]]


def expected_state(readings: Readings) -> dict[str, Any]:
    distinct = {(document["device_id"], document["timestamp"]): document for document in readings}
    aggregates: dict[tuple[str, str], dict[str, Any]] = defaultdict(
        lambda: {"count": 0, "counted_ms": set(), "sum": Decimal(0)}
    )
    for (device, timestamp), document in distinct.items():
        aggregate = aggregates[(device, timestamp[:16] + "Z")]
        aggregate["count"] += 1
        aggregate["counted_ms"].add(int(timestamp[17:19]) * 1000 + int(timestamp[20:23]))
        aggregate["sum"] += Decimal(str(document["metrics"]["temperature"]))
    latest = {device: document for (device, _), document in sorted(distinct.items())}
    return {
        "raw": {key: Decimal(str(document["metrics"]["temperature"])) for key, document in distinct.items()},
        "aggregates": dict(aggregates),
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
    return {
        "raw": {
            (item["device_id"]["S"], item["timestamp"]["S"]): Decimal(
                item["metrics"]["M"]["temperature"]["N"]
            )
            for item in scan(services, services.raw_table)
        },
        "aggregates": {
            (item["device_id"]["S"], item["minute"]["S"]): {
                "count": int(item["reading_count"]["N"]),
                "counted_ms": {int(number) for number in item["counted_ms"]["NS"]},
                "sum": Decimal(item["metrics"]["M"]["temperature"]["M"]["sum"]["N"]),
            }
            for item in scan(services, services.aggregates_table)
        },
        "latest": latest,
    }


def alerted(services: Services) -> set[tuple[str, str]]:
    """(device_id, timestamp) of every alert published; a replay may publish one twice."""
    alerts = set()
    while messages := services.sqs.receive_message(
        QueueUrl=services.alerts_queue_url, MaxNumberOfMessages=10
    ).get("Messages"):
        for message in messages:
            alert = json.loads(message["Body"])
            alerts.add((alert["device_id"], alert["timestamp"]))
            services.sqs.delete_message(
                QueueUrl=services.alerts_queue_url, ReceiptHandle=message["ReceiptHandle"]
            )
    return alerts


def leases(services: Services) -> dict[str, Any]:
    """The lease of each shard, as async-kinesis's RedisCheckPointer keeps it (its key is its own)."""
    return {
        shard: json.loads(services.redis.get(f"pyredis-{services.stream_name}-{shard}") or "null")
        for shard in SHARDS
    }


def test_a_worker_takes_over_the_shards_of_a_dead_one_and_every_reading_is_stored_once(
    services: Services, start_worker: StartWorker
) -> None:
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
        lambda: len(stored_state(services)["raw"]) == len(before),
        30,
        lambda: f"{len(stored_state(services)['raw'])} of {len(before)} readings stored before the kill",
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
    after += neighbours

    expected = expected_state(before + after)
    wait_until(
        lambda: stored_state(services) == expected,
        60,
        lambda: f"the survivor leased {second.leased_shards()}; stored {stored_state(services)}",
    )
    assert second.leased_shards() == SHARDS
    breaches = {
        (document["device_id"], document["timestamp"])
        for document in before + after
        if document["metrics"]["temperature"] > THRESHOLDS["temperature"]["max"]
    }
    assert breaches and alerted(services) == breaches

    second.signal(signal.SIGTERM)
    assert second.process.wait(timeout=20) == 0, "the worker did not stop cleanly on SIGTERM"
    assert all(lease["ref"] is None for lease in leases(services).values()), "the leases were not released"
