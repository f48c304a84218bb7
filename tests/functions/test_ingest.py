"""POST /v1/readings: what lands on the stream, which requests are refused, and how."""

import base64
import json
from collections.abc import Callable
from types import ModuleType
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from botocore.exceptions import ClientError
from readings import MAX_RECORD_BYTES, RECORD_VERSION

from tests.functions.conftest import Aws, LambdaContext, LoadFunction
from tests.functions.events import iso, minutes_ago, post_readings, reading

# A small batch limit, so that exceeding it takes a small request; a body limit that admits a 420 KB string.
LIMITS = {"MAX_BATCH_SIZE": "10", "MAX_BODY_BYTES": str(1024 * 1024)}
FRESH = iso(minutes_ago(1))


def post(function: ModuleType, context: LambdaContext, body: Any, **event: Any) -> tuple[int, dict[str, Any]]:
    text = body if isinstance(body, str) else json.dumps(body)
    response = function.handler(post_readings(text) | event, context)
    return response["statusCode"], json.loads(response["body"])


def stream_records(aws: Aws) -> list[tuple[str, dict[str, Any]]]:
    """(partition key, data) of every record on the stream."""
    return [
        (record["kinesis"]["partitionKey"], json.loads(base64.b64decode(record["kinesis"]["data"])))
        for record in aws.stream_event()["Records"]
    ]


def stream_readings(aws: Aws) -> list[dict[str, Any]]:
    """Every reading on the stream, in order."""
    return [reading for _, data in stream_records(aws) for reading in data["readings"]]


def test_a_batch_is_put_on_the_stream_in_canonical_form_in_one_record(
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

    assert (status, response) == (202, {"accepted": 3, "duplicates": 0})
    ((partition_key, data),) = stream_records(aws)
    assert data == {
        "v": RECORD_VERSION,
        "readings": [
            {"device_id": "dev-1", "timestamp": iso(moment), "metrics": {"temperature": 21.5}, "sequence": 7},
            {
                "device_id": "dev-2",
                "timestamp": iso(moment),
                "metrics": {"humidity": 40},
                "firmware": "1.4.2-rc.1",
            },
            {
                "device_id": "dev-3",
                "timestamp": iso(moment),
                "metrics": {"pressure": 1013.25, "temperature": -3},
            },
        ],
    }
    assert len(partition_key) == 16 and partition_key not in {"dev-1", "dev-2", "dev-3"}


def test_a_single_reading_object_is_accepted(ingest: ModuleType, aws: Aws, context: LambdaContext) -> None:
    status, response = post(ingest, context, reading("dev-1", minutes_ago(1), temperature=20))

    assert (status, response) == (202, {"accepted": 1, "duplicates": 0})
    assert [r["device_id"] for r in stream_readings(aws)] == ["dev-1"]


def test_readings_fill_records_of_at_most_25_kb_with_keys_spread_over_the_key_space(
    load_function: LoadFunction, aws: Aws, context: LambdaContext
) -> None:
    ingest = load_function("ingest", MAX_BATCH_SIZE="1000")
    moment = minutes_ago(1)
    body = [reading(f"device-{n:04}", moment, temperature=n / 2, humidity=40) for n in range(1000)]

    status, response = post(ingest, context, body)

    assert (status, response) == (202, {"accepted": 1000, "duplicates": 0})
    records = aws.stream_event()["Records"]
    sizes = [len(base64.b64decode(r["kinesis"]["data"])) + len(r["kinesis"]["partitionKey"]) for r in records]
    assert len(records) == 5 and max(sizes) <= MAX_RECORD_BYTES and min(sizes[:-1]) > 0.99 * MAX_RECORD_BYTES
    assert [r["device_id"] for r in stream_readings(aws)] == [r["device_id"] for r in body]
    # Kinesis maps the key's MD5 onto the shards' hash ranges; distinct keys spread records evenly.
    assert len({r["kinesis"]["partitionKey"] for r in records}) == 5


def test_readings_repeated_within_a_request_are_put_once_and_counted_as_duplicates(
    ingest: ModuleType, aws: Aws, context: LambdaContext
) -> None:
    moment = minutes_ago(1, seconds=5.123)
    same = {"device_id": "dev-1", "metrics": {"temperature": 21.5}}
    body = [
        {**same, "timestamp": iso(moment)[:-1] + "1Z"},  # less than a millisecond apart: one reading
        {**same, "timestamp": iso(moment)[:-1] + "4Z"},
        {**same, "timestamp": int(moment.timestamp() * 1000)},
        reading("dev-2", moment, temperature=20),
    ]

    status, response = post(ingest, context, body)

    assert (status, response) == (202, {"accepted": 2, "duplicates": 2})
    assert [(r["device_id"], r["timestamp"]) for r in stream_readings(aws)] == [
        ("dev-1", iso(moment)),
        ("dev-2", iso(moment)),
    ]


def test_two_different_readings_of_one_device_and_millisecond_get_400(
    ingest: ModuleType, aws: Aws, context: LambdaContext
) -> None:
    moment = minutes_ago(1)

    status, response = post(
        ingest, context, [reading("dev-1", moment, temperature=20), reading("dev-1", moment, temperature=21)]
    )

    assert status == 400
    assert [problem["path"] for problem in response["problems"]] == ["$[1]"]
    assert "timestamp (to the millisecond) of $[0]" in response["problems"][0]["message"]
    assert stream_records(aws) == []


def _reading_text(metrics: str = '{"temperature": 21.5}', **fields: str) -> str:
    """A reading written as JSON text, so that a test can put in what json.dumps would not write."""
    members = {"device_id": '"dev-1"', "timestamp": json.dumps(FRESH), "metrics": metrics} | fields
    return "{" + ", ".join(f'"{name}": {value}' for name, value in members.items()) + "}"


MALFORMED: dict[str, tuple[str, str, str]] = {
    # case: (body, path of a problem, part of its message)
    "not-json": ('{"device_id": ', "$", "not valid JSON"),
    "deeply-nested": ("[" * 10_000 + "]" * 10_000, "$", "nests arrays and objects too deeply"),
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
        "has 200 decimal places",
    ),
    # Each within DynamoDB's range, but their sum, 5e-131, is not: the minute could never be counted.
    "values-whose-sum-underflows": (
        "["
        + _reading_text('{"t": 2e-130}')
        + ", "
        + _reading_text('{"t": -1.5e-130}', timestamp='"' + iso(minutes_ago(1, seconds=1)) + '"')
        + "]",
        "$[1].metrics.t",
        "has 131 decimal places; at most 6",
    ),
    "seven-decimal-places": (_reading_text('{"t": 0.1234567}'), "$.metrics.t", "has 7 decimal places"),
    "sixteen-significant-digits": (
        _reading_text('{"t": 1234567890.123456}'),
        "$.metrics.t",
        "has 16 significant digits; at most 15",
    ),
    "more-than-38-digits": (
        _reading_text('{"t": 1.000000000000000000000000000000000000001}'),
        "$.metrics.t",
        "has 39 decimal places",
    ),
    "integer-of-40-digits": (_reading_text('{"t": ' + "9" * 40 + "}"), "$.metrics.t", "smaller than"),
    "duplicate-key": (_reading_text(device_id='"dev-1", "device_id": "dev-2"'), "$", "repeats the keys"),
    "device-id-not-string": (_reading_text(device_id="42"), "$.device_id", "must be string"),
    "device-id-pattern": (_reading_text(device_id='"-dev"'), "$.device_id", "must match pattern"),
    "metric-not-number": (_reading_text('{"temperature": "hot"}'), "$.metrics.temperature", "must be number"),
    "metric-boolean": (_reading_text('{"temperature": true}'), "$.metrics.temperature", "must be number"),
    "metric-name-pattern": (_reading_text('{"temp erature": 1}'), "$.metrics.temp erature", "is not allowed"),
    "metrics-empty": (_reading_text("{}"), "$.metrics", "at least 1"),
    "metrics-thousands": (
        _reading_text(json.dumps({f"m{index}": index for index in range(5000)})),
        "$.metrics",
        "at most 64",
    ),
    "firmware-of-420-kb": (_reading_text(firmware=json.dumps("1" * 420_000)), "$.firmware", "must match"),
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
    "timestamp-after-year-9999": (
        _reading_text(timestamp='"9999-12-31T23:59:59.999-01:00"'),
        "$.timestamp",
        "is outside 1970-01-01T00:00:00.000Z to 9999-12-31T23:59:59.999Z",
    ),
    "timestamp-last-moment-of-year-9999": (
        _reading_text(timestamp='"9999-12-31T23:59:59.999Z"'),
        "$.timestamp",
        "in the future",
    ),
    "timestamp-epoch-ms-after-year-9999": (
        _reading_text(timestamp="253402300800000"),
        "$.timestamp",
        "smaller than or equal to 253402300799999",
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
    "body-lone-surrogate": ('{"device_id": "dev-\ud800"}', "$", "not Unicode text: surrogates not allowed"),
    "body-empty": ("", "$", "not valid JSON"),
    "batch-item-not-object": ("[1]", "$[0]", "must be object"),
    "batch-empty": ("[]", "$", "batch is empty"),
    "batch-too-large": ("[" + ", ".join([_reading_text()] * 11) + "]", "$", "the limit is 10"),
    "body-too-large": (_reading_text() + " " * 1024 * 1024, "$", "bytes; the limit is 1048576"),
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
    assert stream_records(aws) == []


def test_a_base64_encoded_body_is_decoded(ingest: ModuleType, aws: Aws, context: LambdaContext) -> None:
    body = json.dumps(reading("dev-1", minutes_ago(1), temperature=20)).encode()

    status, response = post(ingest, context, base64.b64encode(body).decode(), isBase64Encoded=True)

    assert (status, response) == (202, {"accepted": 1, "duplicates": 0})
    assert [r["device_id"] for r in stream_readings(aws)] == ["dev-1"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("not base64!", "marked base64-encoded but is not base64"),
        (base64.b64encode(b'{"device_id": "\xff"}').decode(), "not UTF-8: invalid start byte at byte 15"),
    ],
    ids=["not-base64", "not-utf-8"],
)
def test_a_base64_encoded_body_that_does_not_decode_to_utf_8_gets_400(
    ingest: ModuleType, aws: Aws, context: LambdaContext, body: str, message: str
) -> None:
    status, response = post(ingest, context, body, isBase64Encoded=True)

    assert status == 400
    assert [problem["message"] for problem in response["problems"]] == [f"the body is {message}"]
    assert stream_records(aws) == []


@pytest.mark.parametrize(
    ("content_type", "message"),
    [
        ("text/plain", "the Content-Type is 'text/plain'; send application/json"),
        ("application/x-www-form-urlencoded", "the Content-Type is 'application/x-www-form-urlencoded'"),
        ("application/json; charset=iso-8859-1", "JSON is sent in utf-8"),
        (None, "the request has no Content-Type; send application/json"),
    ],
    ids=["text", "form", "latin-1", "none"],
)
def test_a_body_that_is_not_json_by_its_content_type_gets_415_naming_it(
    ingest: ModuleType, aws: Aws, context: LambdaContext, content_type: str | None, message: str
) -> None:
    headers = {"Accept": "application/json"} | ({"Content-Type": content_type} if content_type else {})

    status, response = post(ingest, context, reading("dev-1", minutes_ago(1), t=1), headers=headers)

    assert status == 415
    assert message in response["message"]
    assert stream_records(aws) == []


def test_json_is_recognised_whatever_the_case_of_its_content_type_and_with_a_utf_8_charset(
    ingest: ModuleType, aws: Aws, context: LambdaContext
) -> None:
    headers = {"content-type": 'Application/JSON; charset="UTF-8"'}

    status, _ = post(ingest, context, reading("dev-1", minutes_ago(1), t=1), headers=headers)

    assert status == 202


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
    assert stream_records(aws) == []


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
    """Wraps the client's put_records: `outcome(attempt, devices)` decides for a record, by the devices of its
    readings, whether moto takes it (None), it is refused (an error code), or the call fails as a whole
    ("raise")."""

    def __init__(
        self, put_records: Callable[..., dict[str, Any]], outcome: Callable[[int, list[str]], str | None]
    ) -> None:
        self.put_records = put_records
        self.outcome = outcome
        self.calls: list[list[list[str]]] = []  # per call, per record: the device ids of its readings

    def __call__(self, StreamName: str, Records: list[dict[str, Any]]) -> dict[str, Any]:
        attempt = len(self.calls)
        self.calls.append(
            [[r["device_id"] for r in json.loads(record["Data"])["readings"]] for record in Records]
        )
        outcomes = [self.outcome(attempt, devices) for devices in self.calls[-1]]
        if "raise" in outcomes:
            error = {"Code": "ProvisionedThroughputExceededException", "Message": "Rate exceeded"}
            raise ClientError({"Error": error}, "PutRecords")
        sent = [record for record, outcome in zip(Records, outcomes, strict=True) if outcome is None]
        results = iter(self.put_records(StreamName=StreamName, Records=sent)["Records"] if sent else [])
        return {
            "FailedRecordCount": sum(outcome is not None for outcome in outcomes),
            "Records": [
                next(results) if outcome is None else {"ErrorCode": outcome, "ErrorMessage": "refused"}
                for outcome in outcomes
            ],
        }


def large_readings(count: int) -> list[dict[str, Any]]:
    """Readings of about 2.4 KB (64 metrics each): ten fill a record."""
    moment = minutes_ago(1)
    return [
        reading(f"dev-{n:02}", moment, **{f"measurement_{m:02}_of_sensor_xy": m + n / 8 for m in range(64)})
        for n in range(count)
    ]


def test_put_records_calls_stay_within_500_records_and_5_mib(
    load_function: LoadFunction, aws: Aws, context: LambdaContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingest = load_function("ingest")
    stub = PutRecordsStub(ingest.kinesis.put_records, lambda attempt, devices: None)
    monkeypatch.setattr(ingest.kinesis, "put_records", stub)
    monkeypatch.setattr(ingest, "PUT_RECORDS_MAX_BYTES", 3 * MAX_RECORD_BYTES)  # 6 records take 2 calls
    body = large_readings(60)

    status, response = post(ingest, context, body)

    assert (status, response) == (202, {"accepted": 60, "duplicates": 0})
    assert [len(call) for call in stub.calls] == [3, 3]
    assert [r["device_id"] for r in stream_readings(aws)] == [r["device_id"] for r in body]


def test_refused_records_are_retried_alone_until_accepted(
    ingest: ModuleType, aws: Aws, context: LambdaContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    stub = PutRecordsStub(
        ingest.kinesis.put_records,
        lambda attempt, devices: (
            "ProvisionedThroughputExceededException" if attempt < 2 and "dev-10" in devices else None
        ),
    )
    monkeypatch.setattr(ingest.kinesis, "put_records", stub)
    body = large_readings(30)

    status, response = post(ingest, context, body)

    assert (status, response) == (202, {"accepted": 30, "duplicates": 0})
    assert [len(call) for call in stub.calls] == [3, 1, 1]
    assert stub.calls[1] == stub.calls[2] == [stub.calls[0][1]]
    assert sorted(r["device_id"] for r in stream_readings(aws)) == sorted(r["device_id"] for r in body)


def test_readings_still_refused_after_the_retries_are_named_in_a_503(
    ingest: ModuleType, aws: Aws, context: LambdaContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    stub = PutRecordsStub(
        ingest.kinesis.put_records,
        lambda attempt, devices: "InternalFailure" if "dev-10" in devices else None,
    )
    monkeypatch.setattr(ingest.kinesis, "put_records", stub)
    body = large_readings(30)
    for odd in body[1::2]:
        odd["timestamp"] = int(minutes_ago(1).timestamp() * 1000)  # named as the client sent it

    status, response = post(ingest, context, body)

    assert status == 503
    assert response["refused"] == [
        {
            "index": index,
            "device_id": body[index]["device_id"],
            "timestamp": body[index]["timestamp"],
            "error_code": "InternalFailure",
        }
        for index in range(10, 20)  # the second record's readings
    ]
    assert (response["accepted"], response["duplicates"]) == (20, 0)
    assert len(stub.calls) == 3  # PUT_RECORDS_MAX_ATTEMPTS
    assert [r["device_id"] for r in stream_readings(aws)] == [r["device_id"] for r in body[:10] + body[20:]]


def test_a_put_records_call_that_fails_on_a_retry_names_exactly_the_readings_not_on_the_stream(
    ingest: ModuleType, aws: Aws, context: LambdaContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first call writes all records but the second; every retry is throttled as a whole.
    stub = PutRecordsStub(
        ingest.kinesis.put_records,
        lambda attempt, devices: (
            "raise" if attempt else "ProvisionedThroughputExceededException" if "dev-10" in devices else None
        ),
    )
    monkeypatch.setattr(ingest.kinesis, "put_records", stub)
    body = large_readings(30)
    body.insert(20, dict(body[19]))  # a duplicate of a reading of the refused record

    status, response = post(ingest, context, body)

    assert status == 503
    assert [(r["index"], r["device_id"]) for r in response["refused"]] == [
        (index, body[index]["device_id"])
        for index in range(10, 21)  # the second record's, and the repeat
    ]
    assert {r["error_code"] for r in response["refused"]} == {"ProvisionedThroughputExceededException"}
    assert (response["accepted"], response["duplicates"]) == (20, 1)
    assert len(stub.calls) == 3
    assert [r["device_id"] for r in stream_readings(aws)] == [r["device_id"] for r in body[:10] + body[21:]]


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
