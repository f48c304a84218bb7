"""POST /v1/readings: what lands on the stream, which requests are refused, and how."""

import base64
import json
from collections.abc import Callable
from types import ModuleType
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests.functions.conftest import Aws, LambdaContext, LoadFunction
from tests.functions.events import iso, minutes_ago, post_readings, reading

# Small limits, so that exceeding them takes a small request.
LIMITS = {"MAX_BATCH_SIZE": "10", "MAX_BODY_BYTES": "65536"}
FRESH = iso(minutes_ago(1))


def post(function: ModuleType, context: LambdaContext, body: Any) -> tuple[int, dict[str, Any]]:
    text = body if isinstance(body, str) else json.dumps(body)
    response = function.handler(post_readings(text), context)
    return response["statusCode"], json.loads(response["body"])


def stream_data(aws: Aws) -> list[tuple[str, dict[str, Any]]]:
    return [
        (record["kinesis"]["partitionKey"], json.loads(base64.b64decode(record["kinesis"]["data"])))
        for record in aws.stream_event()["Records"]
    ]


def test_a_batch_is_put_on_the_stream_in_canonical_form(
    ingest: ModuleType, aws: Aws, context: LambdaContext
) -> None:
    moment = minutes_ago(3, seconds=4.5)
    epoch_ms = int(moment.timestamp() * 1000)
    body = [
        {"device_id": "dev-1", "timestamp": iso(moment), "metrics": {"temperature": 21.5}, "sequence": 7},
        {"device_id": "dev-2", "timestamp": epoch_ms, "metrics": {"humidity": 40}, "firmware": "1.4.2-rc.1"},
        {
            "device_id": "dev-3",
            "timestamp": moment.astimezone(ZoneInfo("Asia/Kolkata")).isoformat(),
            "metrics": {"pressure": 1013.25, "temperature": -3},
        },
    ]

    status, response = post(ingest, context, body)

    assert (status, response) == (202, {"accepted": 3})
    assert stream_data(aws) == [
        (
            "dev-1",
            {"device_id": "dev-1", "timestamp": iso(moment), "metrics": {"temperature": 21.5}, "sequence": 7},
        ),
        (
            "dev-2",
            {
                "device_id": "dev-2",
                "timestamp": iso(moment),
                "metrics": {"humidity": 40},
                "firmware": "1.4.2-rc.1",
            },
        ),
        (
            "dev-3",
            {
                "device_id": "dev-3",
                "timestamp": iso(moment),
                "metrics": {"pressure": 1013.25, "temperature": -3},
            },
        ),
    ]


def test_a_single_reading_object_is_accepted(ingest: ModuleType, aws: Aws, context: LambdaContext) -> None:
    status, response = post(ingest, context, reading("dev-1", minutes_ago(1), temperature=20))

    assert (status, response) == (202, {"accepted": 1})
    assert [device for device, _ in stream_data(aws)] == ["dev-1"]


def _reading_text(metrics: str = '{"temperature": 21.5}', **fields: str) -> str:
    """A reading written as JSON text, so that a test can put in what json.dumps would not write."""
    members = {"device_id": '"dev-1"', "timestamp": json.dumps(FRESH), "metrics": metrics} | fields
    return "{" + ", ".join(f'"{name}": {value}' for name, value in members.items()) + "}"


MALFORMED: dict[str, tuple[str, str, str]] = {
    # case: (body, path of a problem, part of its message)
    "not-json": ('{"device_id": ', "$", "not valid JSON"),
    "nan-literal": (_reading_text('{"temperature": NaN}'), "$.metrics.temperature", "must be number"),
    "infinity-literal": (
        _reading_text('{"temperature": -Infinity}'),
        "$.metrics.temperature",
        "must be number",
    ),
    "overflowing-number": (_reading_text('{"temperature": 1e400}'), "$.metrics.temperature", "smaller than"),
    "underflowing-number": (
        _reading_text('{"temperature": 1e-200}'),
        "$.metrics.temperature",
        "at least 1e-130",
    ),
    "duplicate-key": (_reading_text(device_id='"dev-1", "device_id": "dev-2"'), "$", "duplicate keys"),
    "device-id-not-string": (_reading_text(device_id="42"), "$.device_id", "must be string"),
    "device-id-pattern": (_reading_text(device_id='"-dev"'), "$.device_id", "must match pattern"),
    "metric-not-number": (_reading_text('{"temperature": "hot"}'), "$.metrics.temperature", "must be number"),
    "metric-boolean": (_reading_text('{"temperature": true}'), "$.metrics.temperature", "must be number"),
    "metric-name-pattern": (_reading_text('{"temp erature": 1}'), "$.metrics.temp erature", "is not allowed"),
    "metrics-empty": (_reading_text("{}"), "$.metrics", "at least 1"),
    "metrics-too-many": (
        _reading_text(json.dumps({f"m{index}": index for index in range(65)})),
        "$.metrics",
        "at most 64",
    ),
    "missing-fields": ("{}", "$.device_id", "is required"),
    "unknown-field": (_reading_text(location='"kitchen"'), "$.location", "is not allowed"),
    "timestamp-without-zone": (_reading_text(timestamp='"2026-11-23T17:04:05"'), "$.timestamp", "pattern"),
    "timestamp-impossible-date": (
        _reading_text(timestamp='"2026-02-30T10:00:00Z"'),
        "$.timestamp",
        "not a valid",
    ),
    "timestamp-fractional-ms": (
        _reading_text(timestamp="1795453445123.5"),
        "$.timestamp",
        "string or integer",
    ),
    "timestamp-too-old": (
        _reading_text(timestamp=json.dumps(iso(minutes_ago(8 * 24 * 60)))),
        "$.timestamp",
        "past",
    ),
    # A day ahead: still beyond the allowed skew however long the session runs before this test does.
    "timestamp-in-future": (
        _reading_text(timestamp=json.dumps(iso(minutes_ago(-24 * 60)))),
        "$.timestamp",
        "future",
    ),
    "sequence-negative": (_reading_text(sequence="-1"), "$.sequence", "bigger than or equal to 0"),
    "firmware-not-string": (_reading_text(firmware="2"), "$.firmware", "must be string"),
    "body-not-reading": ('"hello"', "$", "reading object or an array"),
    "batch-item-not-object": ("[1]", "$[0]", "must be object"),
    "batch-empty": ("[]", "$", "batch is empty"),
    "batch-too-large": ("[" + ", ".join([_reading_text()] * 11) + "]", "$", "the limit is 10"),
    "body-too-large": (_reading_text() + " " * 65536, "$", "bytes; the limit is 65536"),
}


@pytest.mark.parametrize(("body", "path", "message"), MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_requests_get_400_and_nothing_is_written(
    load_function: LoadFunction, aws: Aws, context: LambdaContext, body: str, path: str, message: str
) -> None:
    ingest = load_function("ingest", **LIMITS)

    status, response = post(ingest, context, body)

    assert status == 400
    assert any(
        problem["path"] == path and message in problem["message"] for problem in response["problems"]
    ), response
    assert stream_data(aws) == []


def test_a_400_names_every_problem_of_every_reading(
    ingest: ModuleType, aws: Aws, context: LambdaContext
) -> None:
    body = (
        "["
        + _reading_text()
        + ", "
        + _reading_text('{"temperature": "hot", "humidity": NaN}', device_id='"-x"', timestamp='"yesterday"')
        + ', {"metrics": {}, "colour": "red"}]'
    )

    status, response = post(ingest, context, body)

    assert status == 400
    assert sorted(problem["path"] for problem in response["problems"]) == [
        "$[1].device_id",
        "$[1].metrics.humidity",
        "$[1].metrics.temperature",
        "$[1].timestamp",
        "$[2].colour",
        "$[2].device_id",
        "$[2].metrics",
        "$[2].timestamp",
    ]
    assert response["problem_count"] == 8
    assert stream_data(aws) == []


def test_a_400_lists_at_most_1000_problems_and_counts_them_all(
    ingest: ModuleType, aws: Aws, context: LambdaContext
) -> None:
    bad_metrics = json.dumps({f"m{index}": "x" for index in range(60)})
    body = "[" + ", ".join([_reading_text(bad_metrics)] * 20) + "]"

    status, response = post(ingest, context, body)

    assert status == 400
    assert response["problem_count"] == 20 * 60
    assert len(response["problems"]) == 1000


class PutRecordsStub:
    """Wraps the client's put_records: refuses the entries `refuse` picks, sends the others to moto."""

    def __init__(
        self, put_records: Callable[..., dict[str, Any]], refuse: Callable[[int, str], bool]
    ) -> None:
        self.put_records = put_records
        self.refuse = refuse
        self.calls: list[list[str]] = []  # the partition keys of each call

    def __call__(self, StreamName: str, Records: list[dict[str, Any]]) -> dict[str, Any]:
        attempt = len(self.calls)
        self.calls.append([record["PartitionKey"] for record in Records])
        refused = [self.refuse(attempt, record["PartitionKey"]) for record in Records]
        sent = [record for record, no in zip(Records, refused, strict=True) if not no]
        results = iter(self.put_records(StreamName=StreamName, Records=sent)["Records"] if sent else [])
        error = {
            "ErrorCode": "ProvisionedThroughputExceededException",
            "ErrorMessage": "Rate exceeded for shard",
        }
        return {
            "FailedRecordCount": sum(refused),
            "Records": [error if no else next(results) for no in refused],
        }


def test_put_records_calls_carry_at_most_500_readings(
    load_function: LoadFunction, aws: Aws, context: LambdaContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingest = load_function("ingest", MAX_BATCH_SIZE="1200")
    stub = PutRecordsStub(ingest.kinesis.put_records, lambda attempt, device: False)
    monkeypatch.setattr(ingest.kinesis, "put_records", stub)
    moment = minutes_ago(1)

    status, response = post(
        ingest, context, [reading(f"dev-{n}", moment, temperature=n) for n in range(1200)]
    )

    assert (status, response) == (202, {"accepted": 1200})
    assert [len(call) for call in stub.calls] == [500, 500, 200]
    assert len(stream_data(aws)) == 1200


def test_refused_entries_are_retried_alone_until_accepted(
    ingest: ModuleType, aws: Aws, context: LambdaContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    stub = PutRecordsStub(
        ingest.kinesis.put_records, lambda attempt, device: attempt < 2 and device == "flaky"
    )
    monkeypatch.setattr(ingest.kinesis, "put_records", stub)
    moment = minutes_ago(1)

    status, response = post(
        ingest, context, [reading(device, moment, temperature=1) for device in ("a", "flaky", "b")]
    )

    assert (status, response) == (202, {"accepted": 3})
    assert stub.calls == [["a", "flaky", "b"], ["flaky"], ["flaky"]]
    assert sorted(device for device, _ in stream_data(aws)) == ["a", "b", "flaky"]


def test_readings_still_refused_after_the_retries_are_named_in_a_503(
    ingest: ModuleType, aws: Aws, context: LambdaContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    stub = PutRecordsStub(ingest.kinesis.put_records, lambda attempt, device: device.startswith("dead"))
    monkeypatch.setattr(ingest.kinesis, "put_records", stub)
    moment = minutes_ago(1)
    body = [reading(device, moment, temperature=1) for device in ("a", "dead-1", "b", "dead-2")]
    body[3]["timestamp"] = int(moment.timestamp() * 1000)  # named as the client sent it

    status, response = post(ingest, context, body)

    assert status == 503
    assert response["accepted"] == 2
    assert response["refused"] == [
        {
            "index": 1,
            "device_id": "dead-1",
            "timestamp": iso(moment),
            "error_code": "ProvisionedThroughputExceededException",
        },
        {
            "index": 3,
            "device_id": "dead-2",
            "timestamp": int(moment.timestamp() * 1000),
            "error_code": "ProvisionedThroughputExceededException",
        },
    ]
    assert len(stub.calls) == 3  # PUT_RECORDS_MAX_ATTEMPTS
    assert sorted(device for device, _ in stream_data(aws)) == ["a", "b"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"STREAM_NAME": ""}, "STREAM_NAME is required"),
        ({"MAX_BATCH_SIZE": "0"}, "MAX_BATCH_SIZE is '0'"),
        ({"PUT_RECORDS_MAX_ATTEMPTS": "three"}, "PUT_RECORDS_MAX_ATTEMPTS is 'three'"),
        ({"MAX_BODY_BYTES": str(5 * 1024 * 1024)}, "at most 4194304"),
    ],
)
def test_a_bad_environment_stops_the_function_at_start(
    load_function: LoadFunction, override: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        load_function("ingest", **override)
