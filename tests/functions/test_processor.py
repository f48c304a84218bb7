"""Kinesis -> DynamoDB: what the processor stores, counts, alerts and reports; replays change nothing."""

import json
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.functions.conftest import Aws, LambdaContext, LoadFunction, create_tables
from tests.functions.events import iso, minutes_ago, post_readings, reading


def ingest_readings(ingest: ModuleType, context: LambdaContext, readings: list[dict[str, Any]]) -> None:
    response = ingest.handler(post_readings(json.dumps(readings)), context)
    assert response["statusCode"] == 202, response["body"]


def put_raw_records(aws: Aws, *payloads: bytes) -> None:
    """Records that did not come through ingest, as another producer (or a bug) could write them."""
    for payload in payloads:
        aws.kinesis.put_record(StreamName=aws.stream_name, Data=payload, PartitionKey="poison")


def packed(*documents: Any) -> bytes:
    """A record of version 2 holding `documents`, whatever they are."""
    return json.dumps({"v": 2, "readings": list(documents)}).encode()


def tables(aws: Aws) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    return aws.scan(aws.raw_table), aws.scan(aws.aggregates_table)


def raw_keys(aws: Aws) -> list[tuple[str, str]]:
    return sorted((item["device_id"]["S"], item["timestamp"]["S"]) for item in aws.scan(aws.raw_table))


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


def counts(aws: Aws) -> dict[str, int]:
    """Readings counted in the aggregates, by device."""
    counted: dict[str, int] = {}
    for (device, _), aggregate in stats(aws).items():
        counted[device] = counted.get(device, 0) + aggregate["reading_count"]
    return counted


def minute(moment_minutes_ago: int) -> str:
    return iso(minutes_ago(moment_minutes_ago))[:16] + "Z"


def failures(response: dict[str, Any]) -> list[str]:
    return [failure["itemIdentifier"] for failure in response["batchItemFailures"]]


def sequence_numbers(event: dict[str, Any]) -> list[str]:
    return [record["kinesis"]["sequenceNumber"] for record in event["Records"]]


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


def test_records_of_one_reading_as_ingest_wrote_them_before_it_packed_readings_are_still_stored(
    ingest: ModuleType, processor: ModuleType, aws: Aws, context: LambdaContext
) -> None:
    moment = minutes_ago(2)
    before_the_deploy = [
        json.dumps(reading(f"old-{n}", moment, temperature=n), sort_keys=True, separators=(",", ":")).encode()
        for n in range(3)
    ]
    put_raw_records(aws, *before_the_deploy)
    ingest_readings(ingest, context, [reading("new-0", moment, temperature=9)])

    response = processor.handler(aws.stream_event(), context)

    assert response == {"batchItemFailures": []}
    assert counts(aws) == {"old-0": 1, "old-1": 1, "old-2": 1, "new-0": 1}


def test_a_reading_in_any_form_the_schema_accepts_is_stored_under_its_canonical_time(
    processor: ModuleType, aws: Aws, context: LambdaContext
) -> None:
    moment = minutes_ago(2, seconds=5.25)
    put_raw_records(
        aws,
        json.dumps(reading("dev-1", moment, t=1) | {"timestamp": int(moment.timestamp() * 1000)}).encode(),
        packed(reading("dev-2", moment, t=2) | {"timestamp": moment.isoformat()}),
    )

    assert processor.handler(aws.stream_event(), context) == {"batchItemFailures": []}
    assert raw_keys(aws) == [("dev-1", iso(moment)), ("dev-2", iso(moment))]


def test_records_that_cannot_be_stored_are_reported_by_sequence_number_and_their_neighbours_stored(
    ingest: ModuleType, processor: ModuleType, aws: Aws, context: LambdaContext
) -> None:
    valid = reading("dev-1", minutes_ago(2), temperature=20)
    ingest_readings(ingest, context, [valid])
    put_raw_records(
        aws,
        b"\x00\x01 not json",
        b"[1, 2]",
        json.dumps({**valid, "metrics": {"temperature": "hot"}}).encode(),
        json.dumps({**valid, "timestamp": "2026-11-23T17:04:05"}).encode(),  # no zone
        json.dumps({**valid, "colour": "red"}).encode(),
        b'{"device_id": "dev-1", "timestamp": "2026-11-23T17:04:05.000Z", "metrics": {"temperature": NaN}}',
        b'{"device_id": "dev-1", "device_id": "dev-2", "timestamp": "2026-11-23T17:04:05.000Z"}',
        json.dumps({"v": 3, "readings": [valid]}).encode(),  # a version this code does not know
        b'{"v": 2, "readings": []}',
    )
    ingest_readings(ingest, context, [reading("dev-2", minutes_ago(2), temperature=21)])
    event = aws.stream_event()

    response = processor.handler(event, context)

    assert failures(response) == sequence_numbers(event)[1:10]
    assert sorted(item["device_id"]["S"] for item in aws.scan(aws.raw_table)) == ["dev-1", "dev-2"]


def test_a_batch_of_only_poison_records_is_reported_not_raised(
    processor: ModuleType, aws: Aws, context: LambdaContext
) -> None:
    put_raw_records(aws, b"{", b"null")
    event = aws.stream_event()

    response = processor.handler(event, context)

    assert failures(response) == sequence_numbers(event)


def test_a_bad_reading_in_a_packed_record_reports_the_record_and_its_other_readings_are_stored(
    processor: ModuleType, aws: Aws, context: LambdaContext
) -> None:
    moment = minutes_ago(2)
    put_raw_records(
        aws,
        packed(reading("dev-1", moment, t=1), reading("dev-2", moment, t=2)),
        packed(
            reading("dev-3", moment, t=3),
            reading("dev-4", moment) | {"metrics": {"t": "hot"}},
            reading("dev-5", moment, t=5),
        ),
        packed(reading("dev-6", moment, t=6)),
    )
    event = aws.stream_event()

    response = processor.handler(event, context)

    assert failures(response) == [sequence_numbers(event)[1]]
    assert counts(aws) == {"dev-1": 1, "dev-2": 1, "dev-3": 1, "dev-5": 1, "dev-6": 1}


def _with(**fields: Any) -> dict[str, Any]:
    return reading("dev-bad", minutes_ago(2, seconds=1), t=1) | fields


# Readings that no write can store, on the stream as an older ingest or another producer could put them there.
# Each used to fail the whole invocation, and every retry of it, so that its shard stopped.
NEVER_STORABLE: dict[str, bytes] = {
    # Each within DynamoDB's range, but their sum, 5e-131, is not: the aggregate could never be written.
    "values-whose-sum-underflows": packed(
        _with(metrics={"t": 2e-130}),
        _with(timestamp=iso(minutes_ago(2, seconds=2)), metrics={"t": -1.5e-130}),
    ),
    "firmware-of-420-kb": json.dumps(_with(firmware="1" * 420_000)).encode(),
    "fifty-thousand-metrics": json.dumps(_with(metrics={f"m{n}": 0 for n in range(50_000)})).encode(),
    "number-of-40-digits": b'{"device_id": "dev-bad", "timestamp": "2026-11-23T17:04:05.000Z", '
    b'"metrics": {"t": 1234567890123456789012345678901234567890}}',
    "year-10000": json.dumps(_with(timestamp="9999-12-31T23:59:59.999-01:00")).encode(),
}


@pytest.mark.parametrize("payload", NEVER_STORABLE.values(), ids=NEVER_STORABLE.keys())
def test_a_record_that_can_never_be_stored_is_reported_and_its_neighbours_are_stored(
    processor: ModuleType, aws: Aws, context: LambdaContext, payload: bytes
) -> None:
    moment = minutes_ago(2)
    put_raw_records(
        aws, packed(reading("dev-1", moment, t=1)), payload, packed(reading("dev-2", moment, t=2))
    )
    event = aws.stream_event()

    response = processor.handler(event, context)

    assert failures(response) == [sequence_numbers(event)[1]]
    assert counts(aws) == {"dev-1": 1, "dev-2": 1}


def test_a_reading_of_the_last_millisecond_of_year_9999_is_stored_with_its_expiry(
    processor: ModuleType, aws: Aws, context: LambdaContext
) -> None:
    put_raw_records(aws, packed(_with(timestamp="9999-12-31T23:59:59.999Z")))

    response = processor.handler(aws.stream_event(), context)

    assert response == {"batchItemFailures": []}
    ((item,),) = [aws.scan(aws.raw_table)]
    assert int(item["expires_at"]["N"]) == 253402300799 + 30 * 24 * 3600
    assert counts(aws) == {"dev-bad": 1}


def test_replaying_a_batch_of_packed_records_leaves_the_tables_as_they_were(
    ingest: ModuleType, processor: ModuleType, aws: Aws, context: LambdaContext
) -> None:
    for start in (0, 10):
        ingest_readings(
            ingest,
            context,
            [
                reading(f"dev-{n % 3}", minutes_ago(3, seconds=n * 7.5), temperature=n, humidity=90 - n)
                for n in range(start, start + 10)
            ],
        )
    event = aws.stream_event()
    assert len(event["Records"]) == 2
    processor.handler(event, context)
    after_first = tables(aws)

    response = processor.handler(event, context)

    assert response == {"batchItemFailures": []}
    assert tables(aws) == after_first
    assert sum(counts(aws).values()) == 20


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


class TransactionsStub:
    def __init__(self) -> None:
        self.calls: list[int] = []

    def transact_write_items(self, TransactItems: list[Any]) -> dict[str, Any]:
        self.calls.append(len(TransactItems))
        return {}


def test_aggregate_writes_go_in_transactions_of_at_most_100_writes_and_4_mb(processor: ModuleType) -> None:
    small = [processor.AggregateWrite({"Put": {"Item": {"device_id": {"S": "dev-1"}}}}, [])] * 250
    large = [processor.AggregateWrite({"Put": {"Item": {"device_id": {"S": "d" * 1_500_000}}}}, [])] * 3
    by_count, by_size = TransactionsStub(), TransactionsStub()

    processor.commit_aggregates(by_count, small)
    processor.commit_aggregates(by_size, large)

    assert (by_count.calls, by_size.calls) == ([100, 100, 50], [2, 1])


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


def three_records(ingest: ModuleType, context: LambdaContext) -> None:
    """Three requests, so three records: devices a-0 to a-2, b-0 to b-2, c-0 to c-2."""
    for group in "abc":
        ingest_readings(
            ingest, context, [reading(f"{group}-{n}", minutes_ago(2), temperature=81 + n) for n in range(3)]
        )


def refuse_device_b(call: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    """Wraps BatchWriteItem: it never takes the raw items of the b devices, and takes the others."""

    def batch_write_item(RequestItems: dict[str, Any]) -> dict[str, Any]:
        ((table, requests),) = RequestItems.items()
        refused = [r for r in requests if r["PutRequest"]["Item"]["device_id"]["S"].startswith("b-")]
        taken = [r for r in requests if r not in refused]
        response = call(RequestItems={table: taken}) if taken else {}
        return {**response, "UnprocessedItems": {table: refused} if refused else {}}

    return batch_write_item


def test_readings_dynamodb_still_leaves_unprocessed_fail_only_their_record_until_a_retry_stores_them(
    ingest: ModuleType,
    load_function: LoadFunction,
    aws: Aws,
    context: LambdaContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    three_records(ingest, context)
    event = aws.stream_event()
    throttled = load_function("processor")
    monkeypatch.setattr(
        throttled.dynamodb, "batch_write_item", refuse_device_b(throttled.dynamodb.batch_write_item)
    )

    response = throttled.handler(event, context)

    assert failures(response) == [sequence_numbers(event)[1]]
    assert counts(aws) == {f"{group}-{n}": 1 for group in "ac" for n in range(3)}
    assert not any(alert["device_id"].startswith("b-") for alert in aws.alerts())

    assert load_function("processor").handler(event, context) == {"batchItemFailures": []}
    assert counts(aws) == {f"{group}-{n}": 1 for group in "abc" for n in range(3)}
    assert sorted(alert["device_id"] for alert in aws.alerts()) == ["b-0", "b-1", "b-2"]


def test_an_aggregate_write_dynamodb_cancels_fails_the_records_of_its_readings_only(
    ingest: ModuleType,
    load_function: LoadFunction,
    aws: Aws,
    context: LambdaContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    three_records(ingest, context)
    event = aws.stream_event()
    conflicting = load_function("processor")
    monkeypatch.setattr(conflicting, "TRANSACT_MAX_ITEMS", 1)
    transact = conflicting.dynamodb.transact_write_items

    def cancel_device_b_1(TransactItems: list[dict[str, Any]]) -> Any:
        if TransactItems[0]["Put"]["Item"]["device_id"]["S"] == "b-1":
            error = {"Code": "TransactionCanceledException", "Message": "ConditionalCheckFailed"}
            raise ClientError({"Error": error}, "TransactWriteItems")
        return transact(TransactItems=TransactItems)

    monkeypatch.setattr(conflicting.dynamodb, "transact_write_items", cancel_device_b_1)

    response = conflicting.handler(event, context)

    assert failures(response) == [sequence_numbers(event)[1]]
    assert "b-1" not in counts(aws) and len(counts(aws)) == 8

    assert load_function("processor").handler(event, context) == {"batchItemFailures": []}
    assert counts(aws) == {f"{group}-{n}": 1 for group in "abc" for n in range(3)}


def test_a_reading_whose_alert_sns_does_not_take_is_counted_only_once_the_alert_is_published(
    ingest: ModuleType,
    load_function: LoadFunction,
    aws: Aws,
    context: LambdaContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    three_records(ingest, context)
    event = aws.stream_event()
    failing = load_function("processor")
    publish_batch = failing.sns.publish_batch

    def refuse_device_c_2(**request: Any) -> dict[str, Any]:
        entries = request["PublishBatchRequestEntries"]
        refused = [e for e in entries if json.loads(e["Message"])["device_id"] == "c-2"]
        taken = [e for e in entries if e not in refused]
        response = publish_batch(TopicArn=request["TopicArn"], PublishBatchRequestEntries=taken)
        failed = [{"Id": e["Id"], "Code": "InternalError", "SenderFault": False} for e in refused]
        return {**response, "Failed": response["Failed"] + failed}

    monkeypatch.setattr(failing.sns, "publish_batch", refuse_device_c_2)

    response = failing.handler(event, context)

    assert failures(response) == [sequence_numbers(event)[2]]
    assert "c-2" not in counts(aws) and len(counts(aws)) == 8
    assert "c-2" not in {alert["device_id"] for alert in aws.alerts()}

    assert load_function("processor").handler(event, context) == {"batchItemFailures": []}
    assert counts(aws) == {f"{group}-{n}": 1 for group in "abc" for n in range(3)}
    assert [alert["device_id"] for alert in aws.alerts()] == ["c-2"]
