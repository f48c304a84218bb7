"""Lambda function benchmark: processor throughput and AWS API calls per 1,000 readings, against moto.

Run: .venv/bin/python bench/functions.py

Workload: 250 devices send a reading every 10 s with two metrics (1% breach a threshold), posted to ingest in
requests of 500; the processor then gets the stream in event-source-mapping batches of 500 records, twice
(the second time as a replay). Calls are counted with a botocore event hook, as the handlers make them;
botocore's own retries of a call are not counted.

Throughput is of the processor handler with moto serving its AWS calls in-process, and of the handler's own
work (its time minus the time inside AWS calls, which still includes botocore's request building). The
first is dominated by moto: its TransactWriteItems deep-copies the table once per item in the request.
Neither figure includes DynamoDB's real latency.
"""

import importlib.util
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
from moto import mock_aws

from tools.local.round_trip import kinesis_event

FUNCTIONS = Path(__file__).resolve().parent.parent / "functions"
DEVICES = 250
READINGS = 5000
REQUEST_SIZE = 500
BATCH_SIZE = 500
ENVIRONMENT = {
    "AWS_DEFAULT_REGION": "eu-west-1",
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "POWERTOOLS_SERVICE_NAME": "iot-functions-bench",
    "POWERTOOLS_METRICS_NAMESPACE": "IotPlatformBench",
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_LOG_LEVEL": "ERROR",
    "POWERTOOLS_METRICS_DISABLED": "true",
    "STREAM_NAME": "readings",
    "MAX_BATCH_SIZE": str(REQUEST_SIZE),
    "MAX_BODY_BYTES": str(1024 * 1024),
    "MAX_READING_AGE_SECONDS": "86400",
    "MAX_CLOCK_SKEW_SECONDS": "300",
    "PUT_RECORDS_MAX_ATTEMPTS": "3",
    "RAW_TABLE_NAME": "raw-readings",
    "AGGREGATES_TABLE_NAME": "aggregates",
    "THRESHOLDS_PARAMETER_NAME": "/iot/bench/thresholds",
    "READING_TTL_DAYS": "30",
    "AGGREGATE_TTL_DAYS": "400",
    "DYNAMODB_MAX_ATTEMPTS": "3",
    "POWERTOOLS_PARAMETERS_MAX_AGE": "300",
}


class Context:
    function_name = "bench"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:bench"
    memory_limit_in_mb = 1024
    aws_request_id = "bench"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


@dataclass
class Measurement:
    calls: Counter[str] = field(default_factory=Counter)
    seconds_in_calls: float = 0.0
    seconds: float = 0.0


class CallMeter:
    """Counts AWS API calls by service and operation, and times them, while measuring."""

    def __init__(self) -> None:
        self.measurement: Measurement | None = None
        self.call_started = 0.0

    def before_call(self, event_name: str, **kwargs: Any) -> None:
        if self.measurement:
            _, service, operation = event_name.split(".")
            self.measurement.calls[f"{service} {operation}"] += 1
            self.call_started = time.perf_counter()

    def after_call(self, **kwargs: Any) -> None:
        if self.measurement:
            self.measurement.seconds_in_calls += time.perf_counter() - self.call_started

    @contextmanager
    def measure(self) -> Iterator[Measurement]:
        self.measurement = measurement = Measurement()
        started = time.perf_counter()
        try:
            yield measurement
        finally:
            measurement.seconds = time.perf_counter() - started
            self.measurement = None


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"{name}_handler", FUNCTIONS / name / "handler.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    sys.dont_write_bytecode = True  # no __pycache__ in functions/: each directory is zipped as it is
    spec.loader.exec_module(module)
    return module


def create_resources() -> None:
    kinesis, dynamodb, sns, ssm = (boto3.client(service) for service in ("kinesis", "dynamodb", "sns", "ssm"))
    kinesis.create_stream(StreamName=os.environ["STREAM_NAME"], ShardCount=1)
    for table, sort_key in (
        (os.environ["RAW_TABLE_NAME"], "timestamp"),
        (os.environ["AGGREGATES_TABLE_NAME"], "minute"),
    ):
        dynamodb.create_table(
            TableName=table,
            KeySchema=[
                {"AttributeName": "device_id", "KeyType": "HASH"},
                {"AttributeName": sort_key, "KeyType": "RANGE"},
            ],
            AttributeDefinitions=[
                {"AttributeName": "device_id", "AttributeType": "S"},
                {"AttributeName": sort_key, "AttributeType": "S"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )
    os.environ["ALERT_TOPIC_ARN"] = sns.create_topic(Name="alerts")["TopicArn"]
    thresholds = {"temperature": {"max": 80}, "humidity": {"min": 10}}
    ssm.put_parameter(
        Name=os.environ["THRESHOLDS_PARAMETER_NAME"], Type="String", Value=json.dumps(thresholds)
    )


def workload() -> list[dict[str, Any]]:
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=15)
    return [
        {
            "device_id": f"device-{n % DEVICES:04d}",
            "timestamp": (
                start + timedelta(seconds=10 * (n // DEVICES), milliseconds=n % DEVICES)
            ).isoformat(),
            "metrics": {"temperature": 81.0 if n % 100 == 0 else 20 + n % 7 / 2, "humidity": 45.5},
        }
        for n in range(READINGS)
    ]


def stream_batches() -> list[dict[str, Any]]:
    kinesis = boto3.client("kinesis")
    stream = os.environ["STREAM_NAME"]
    shard_id = kinesis.list_shards(StreamName=stream)["Shards"][0]["ShardId"]
    stream_arn = kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]["StreamARN"]
    iterator = kinesis.get_shard_iterator(
        StreamName=stream, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
    )
    response = kinesis.get_records(ShardIterator=iterator["ShardIterator"], Limit=10_000)
    records = response["Records"]
    role = "arn:aws:iam::123456789012:role/bench"
    return [
        kinesis_event(stream_arn, shard_id, role, records[start : start + BATCH_SIZE])
        for start in range(0, len(records), BATCH_SIZE)
    ]


def per_thousand(calls: Counter[str]) -> str:
    return ", ".join(f"{name} {count * 1000 / READINGS:.1f}" for name, count in sorted(calls.items()))


def main() -> None:
    os.environ.update(ENVIRONMENT)
    with mock_aws():
        boto3.setup_default_session()
        meter = CallMeter()
        # Clients copy the session's hooks when created, so the hooks go in before the handlers load.
        boto3.DEFAULT_SESSION.events.register("before-call", meter.before_call)
        boto3.DEFAULT_SESSION.events.register("after-call", meter.after_call)
        create_resources()
        ingest, processor = load("ingest"), load("processor")
        context = Context()
        readings = workload()

        with meter.measure() as ingested:
            for start in range(0, READINGS, REQUEST_SIZE):
                body = json.dumps(readings[start : start + REQUEST_SIZE])
                response = ingest.handler(
                    {"httpMethod": "POST", "path": "/v1/readings", "body": body}, context
                )
                assert response["statusCode"] == 202, response["body"]
        print(f"ingest: {READINGS:,} readings in requests of {REQUEST_SIZE}")
        print(f"  AWS calls per 1,000 readings: {per_thousand(ingested.calls)}")

        batches = stream_batches()
        assert sum(len(batch["Records"]) for batch in batches) == READINGS
        for delivery in ("first delivery", "replay of the same batches"):
            with meter.measure() as processed:
                for batch in batches:
                    assert processor.handler(batch, context) == {"batchItemFailures": []}
            own_seconds = processed.seconds - processed.seconds_in_calls
            print(f"processor, {delivery}: {READINGS:,} readings in {len(batches)} batches of {BATCH_SIZE}")
            print(f"  AWS calls per 1,000 readings: {per_thousand(processed.calls)}")
            print(f"  throughput with moto serving the calls: {READINGS / processed.seconds:,.0f} readings/s")
            print(
                f"  throughput of the handler's own work (time in AWS calls excluded): "
                f"{READINGS / own_seconds:,.0f} readings/s"
            )


if __name__ == "__main__":
    main()
