"""Kinesis -> DynamoDB: what the processor stores, counts, alerts and reports; replays change nothing."""

import json
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest

from tests.functions.conftest import Aws, LambdaContext, LoadFunction, create_tables
from tests.functions.events import iso, minutes_ago, post_readings, reading


def ingest_readings(ingest: ModuleType, context: LambdaContext, readings: list[dict[str, Any]]) -> None:
    response = ingest.handler(post_readings(json.dumps(readings)), context)
    assert response["statusCode"] == 202, response["body"]


def put_raw_records(aws: Aws, *payloads: bytes) -> None:
    """Records that did not come through ingest, as another producer (or a bug) could write them."""
    for payload in payloads:
        aws.kinesis.put_record(StreamName=aws.stream_name, Data=payload, PartitionKey="poison")


def tables(aws: Aws) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    return aws.scan(aws.raw_table), aws.scan(aws.aggregates_table)


def stats(aws: Aws) -> dict[tuple[str, str], dict[str, Any]]:
    """Aggregates as plain numbers, by (device_id, minute)."""
    return {
        (item["device_id"]["S"], item["minute"]["S"]): {
            "reading_count": int(item["reading_count"]["N"]),
            **{
                name: {key: float(value["N"]) for key, value in metric["M"].items()}
                for name, metric in item["metrics"]["M"].items()
            },
        }
        for item in aws.scan(aws.aggregates_table)
    }


def minute(moment_minutes_ago: int) -> str:
    return iso(minutes_ago(moment_minutes_ago))[:16] + "Z"


def test_a_valid_batch_lands_in_the_raw_and_aggregate_tables(
    ingest: ModuleType, processor: ModuleType, aws: Aws, context: LambdaContext
) -> None:
    readings = [
        reading("dev-1", minutes_ago(5, seconds=1), temperature=20, humidity=40),
        reading("dev-1", minutes_ago(5, seconds=30.25), temperature=22.5),
        reading("dev-1", minutes_ago(4, seconds=2), temperature=25),
        reading("dev-2", minutes_ago(5, seconds=59.999), temperature=-1.5),
    ]
    readings[0] |= {"sequence": 41, "firmware": "2.0.1"}
    ingest_readings(ingest, context, readings)

    response = processor.handler(aws.stream_event(), context)

    assert response == {"batchItemFailures": []}
    raw = {(item["device_id"]["S"], item["timestamp"]["S"]): item for item in aws.scan(aws.raw_table)}
    assert sorted(raw) == sorted((r["device_id"], r["timestamp"]) for r in readings)
    first = raw[("dev-1", readings[0]["timestamp"])]
    assert first["metrics"] == {"M": {"temperature": {"N": "20"}, "humidity": {"N": "40"}}}
    assert (first["sequence"], first["firmware"]) == ({"N": "41"}, {"S": "2.0.1"})
    expires_at = int(first["expires_at"]["N"]) - minutes_ago(5, seconds=1).timestamp()
    assert expires_at == 30 * 24 * 3600
    assert stats(aws) == {
        ("dev-1", minute(5)): {
            "reading_count": 2,
            "temperature": {"count": 2, "min": 20, "max": 22.5, "sum": 42.5},
            "humidity": {"count": 1, "min": 40, "max": 40, "sum": 40},
        },
        ("dev-1", minute(4)): {
            "reading_count": 1,
            "temperature": {"count": 1, "min": 25, "max": 25, "sum": 25},
        },
        ("dev-2", minute(5)): {
            "reading_count": 1,
            "temperature": {"count": 1, "min": -1.5, "max": -1.5, "sum": -1.5},
        },
    }


def test_poison_records_are_reported_by_sequence_number(
    ingest: ModuleType, processor: ModuleType, aws: Aws, context: LambdaContext
) -> None:
    valid = reading("dev-1", minutes_ago(2), temperature=20)
    ingest_readings(ingest, context, [valid])
    put_raw_records(
        aws,
        b"\x00\x01 not json",
        b"[1, 2]",
        json.dumps({**valid, "metrics": {"temperature": "hot"}}).encode(),
        json.dumps({**valid, "timestamp": "2026-11-23T17:04:05Z"}).encode(),  # not canonical
        json.dumps({**valid, "colour": "red"}).encode(),
        b'{"device_id": "dev-1", "timestamp": "2026-11-23T17:04:05.000Z", "metrics": {"temperature": NaN}}',
    )
    ingest_readings(ingest, context, [reading("dev-2", minutes_ago(2), temperature=21)])
    event = aws.stream_event()
    sequence_numbers = [record["kinesis"]["sequenceNumber"] for record in event["Records"]]

    response = processor.handler(event, context)

    assert response == {"batchItemFailures": [{"itemIdentifier": number} for number in sequence_numbers[1:7]]}
    assert sorted(item["device_id"]["S"] for item in aws.scan(aws.raw_table)) == ["dev-1", "dev-2"]


def test_a_batch_of_only_poison_records_is_reported_not_raised(
    processor: ModuleType, aws: Aws, context: LambdaContext
) -> None:
    put_raw_records(aws, b"{", b"null")
    event = aws.stream_event()

    response = processor.handler(event, context)

    assert response == {
        "batchItemFailures": [
            {"itemIdentifier": record["kinesis"]["sequenceNumber"]} for record in event["Records"]
        ]
    }


def test_replaying_a_batch_leaves_the_tables_as_they_were(
    ingest: ModuleType, processor: ModuleType, aws: Aws, context: LambdaContext
) -> None:
    ingest_readings(
        ingest,
        context,
        [
            reading(f"dev-{n % 3}", minutes_ago(3, seconds=n * 7.5), temperature=n, humidity=90 - n)
            for n in range(20)
        ],
    )
    event = aws.stream_event()
    processor.handler(event, context)
    after_first = tables(aws)

    response = processor.handler(event, context)

    assert response == {"batchItemFailures": []}
    assert tables(aws) == after_first


def test_a_reading_a_client_sent_twice_is_stored_and_counted_once(
    ingest: ModuleType, processor: ModuleType, aws: Aws, context: LambdaContext
) -> None:
    sent = reading("dev-1", minutes_ago(2, seconds=5), temperature=20)
    ingest_readings(ingest, context, [sent])
    ingest_readings(ingest, context, [sent])  # e.g. after a lost 202
    event = aws.stream_event()
    assert len(event["Records"]) == 2

    processor.handler(event, context)

    assert len(aws.scan(aws.raw_table)) == 1
    assert stats(aws)[("dev-1", minute(2))]["reading_count"] == 1


def test_a_replay_after_a_crash_part_way_counts_every_reading_once(
    ingest: ModuleType,
    load_function: LoadFunction,
    aws: Aws,
    context: LambdaContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ingest_readings(ingest, context, [reading(f"dev-{n}", minutes_ago(2), temperature=n) for n in range(5)])
    event = aws.stream_event()
    crashing = load_function("processor")
    # Small transactions, so that the crash comes after the first one committed.
    monkeypatch.setattr(crashing, "TRANSACT_MAX_ITEMS", 2)
    transact = crashing.dynamodb.transact_write_items
    calls: list[int] = []

    def crash_on_second_call(**request: Any) -> Any:
        calls.append(len(request["TransactItems"]))
        if len(calls) == 2:
            raise TimeoutError("the function timed out")
        return transact(**request)

    monkeypatch.setattr(crashing.dynamodb, "transact_write_items", crash_on_second_call)
    with pytest.raises(TimeoutError):
        crashing.handler(event, context)
    assert calls == [2, 2]

    load_function("processor").handler(event, context)  # Lambda retries the batch

    create_tables(aws.dynamodb, "raw-clean", "aggregates-clean")
    clean = load_function("processor", RAW_TABLE_NAME="raw-clean", AGGREGATES_TABLE_NAME="aggregates-clean")
    clean.handler(event, context)
    assert tables(aws) == (aws.scan("raw-clean"), aws.scan("aggregates-clean"))
    assert {counts["reading_count"] for counts in stats(aws).values()} == {1}


def test_aggregate_writes_go_in_transactions_of_at_most_100_writes_and_4_mb(processor: ModuleType) -> None:
    small = [{"Put": {"Item": {"device_id": {"S": "dev-1"}}}}] * 250
    large = [{"Put": {"Item": {"device_id": {"S": "d" * 1_500_000}}}}] * 3

    assert [len(transaction) for transaction in processor.group_transactions(small)] == [100, 100, 50]
    assert [len(transaction) for transaction in processor.group_transactions(large)] == [2, 1]


def test_threshold_breaches_are_published_once(
    ingest: ModuleType, processor: ModuleType, aws: Aws, context: LambdaContext
) -> None:
    moment = minutes_ago(2)
    ingest_readings(
        ingest,
        context,
        [
            reading("dev-1", moment, temperature=80, humidity=50),  # on the limit: no breach
            reading("dev-2", moment, temperature=80.5, humidity=5),
        ],
    )
    event = aws.stream_event()

    processor.handler(event, context)
    processor.handler(event, context)

    alerts = sorted(aws.alerts(), key=lambda alert: str(alert["metric"]))
    assert alerts == [
        {
            "device_id": "dev-2",
            "timestamp": iso(moment),
            "metric": "humidity",
            "value": 5,
            "bound": "min",
            "limit": 10,
        },
        {
            "device_id": "dev-2",
            "timestamp": iso(moment),
            "metric": "temperature",
            "value": 80.5,
            "bound": "max",
            "limit": 80,
        },
    ]


def test_changed_thresholds_apply_without_a_deploy(
    ingest: ModuleType, load_function: LoadFunction, aws: Aws, context: LambdaContext
) -> None:
    processor = load_function("processor", POWERTOOLS_PARAMETERS_MAX_AGE="0")
    ingest_readings(ingest, context, [reading("dev-1", minutes_ago(3), temperature=60)])
    processor.handler(aws.stream_event(), context)
    assert aws.alerts() == []

    aws.ssm.put_parameter(
        Name=aws.thresholds_parameter, Type="String", Value='{"temperature": {"max": 50}}', Overwrite=True
    )
    ingest_readings(ingest, context, [reading("dev-1", minutes_ago(2), temperature=61)])
    processor.handler(aws.stream_event(), context)

    assert [alert["value"] for alert in aws.alerts()] == [61]


@pytest.mark.parametrize(
    "thresholds", ['{"temperature": {"maximum": 50}}', '{"temperature": {"max": "50"}}', "[]"]
)
def test_malformed_thresholds_fail_the_invocation(
    ingest: ModuleType, processor: ModuleType, aws: Aws, context: LambdaContext, thresholds: str
) -> None:
    aws.ssm.put_parameter(Name=aws.thresholds_parameter, Type="String", Value=thresholds, Overwrite=True)
    ingest_readings(ingest, context, [reading("dev-1", minutes_ago(3), temperature=60)])

    with pytest.raises(ValueError, match="thresholds"):
        processor.handler(aws.stream_event(), context)


class LeaveHalfUnprocessed:
    """Wraps a DynamoDB batch call: its first `times` calls process half the request, return the rest."""

    def __init__(self, call: Callable[..., dict[str, Any]], unprocessed_key: str, times: int) -> None:
        self.call = call
        self.unprocessed_key = unprocessed_key
        self.times = times
        self.calls: list[dict[str, Any]] = []

    def __call__(self, RequestItems: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(RequestItems)
        if len(self.calls) > self.times:
            return self.call(RequestItems=RequestItems)
        ((table, request),) = RequestItems.items()
        processed, unprocessed = _halves(request)
        return {**self.call(RequestItems={table: processed}), self.unprocessed_key: {table: unprocessed}}


def _halves(request: Any) -> tuple[Any, Any]:
    """BatchWriteItem asks with a list of writes, BatchGetItem with {"Keys": [...], ...}."""
    entries = request if isinstance(request, list) else request["Keys"]
    half = len(entries) // 2
    if isinstance(request, list):
        return entries[:half], entries[half:]
    return {**request, "Keys": entries[:half]}, {**request, "Keys": entries[half:]}


def test_unprocessed_items_are_retried_until_written(
    ingest: ModuleType,
    processor: ModuleType,
    aws: Aws,
    context: LambdaContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ingest_readings(ingest, context, [reading(f"dev-{n}", minutes_ago(2), temperature=n) for n in range(20)])
    write = LeaveHalfUnprocessed(processor.dynamodb.batch_write_item, "UnprocessedItems", times=2)
    read = LeaveHalfUnprocessed(processor.dynamodb.batch_get_item, "UnprocessedKeys", times=2)
    monkeypatch.setattr(processor.dynamodb, "batch_write_item", write)
    monkeypatch.setattr(processor.dynamodb, "batch_get_item", read)

    response = processor.handler(aws.stream_event(), context)

    assert response == {"batchItemFailures": []}
    assert [len(request[aws.raw_table]) for request in write.calls] == [20, 10, 5]
    assert [len(request[aws.aggregates_table]["Keys"]) for request in read.calls] == [20, 10, 5]
    assert len(aws.scan(aws.raw_table)) == 20
    assert len(stats(aws)) == 20


def test_items_still_unprocessed_after_the_retries_fail_the_invocation(
    ingest: ModuleType,
    processor: ModuleType,
    aws: Aws,
    context: LambdaContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ingest_readings(ingest, context, [reading(f"dev-{n}", minutes_ago(2), temperature=n) for n in range(20)])
    write = LeaveHalfUnprocessed(processor.dynamodb.batch_write_item, "UnprocessedItems", times=3)
    monkeypatch.setattr(processor.dynamodb, "batch_write_item", write)

    with pytest.raises(processor.NotProcessed):
        processor.handler(aws.stream_event(), context)
    assert len(write.calls) == 3  # DYNAMODB_MAX_ATTEMPTS
    assert aws.scan(aws.aggregates_table) == []  # nothing counted: the retried batch will count it all
