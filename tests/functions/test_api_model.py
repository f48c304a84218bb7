"""The API's request model and the ingest function accept and reject the same bodies."""

import json
from collections.abc import Callable
from datetime import UTC, datetime
from types import ModuleType
from typing import Any

import fastjsonschema
import pytest

from iot_constructs.api import readings_request_schema
from stacks.config import READING_SCHEMA

NOW = datetime(2026, 11, 23, 17, 4, 5, tzinfo=UTC)
READING = {"device_id": "sensor-1", "timestamp": "2026-11-23T17:04:00Z", "metrics": {"temperature": 21.5}}
SAMPLE_BODIES: dict[str, Any] = {
    "one reading": READING,
    "a batch": [READING, {**READING, "device_id": "sensor-2", "sequence": 7, "firmware": "1.2.3"}],
    "epoch milliseconds": {**READING, "timestamp": int(NOW.timestamp() * 1000)},
    "an empty batch": [],
    "no device": {"timestamp": READING["timestamp"], "metrics": {"t": 1}},
    "an unknown field": {**READING, "colour": "red"},
    "a metric that is text": {**READING, "metrics": {"temperature": "warm"}},
    "no metrics": {**READING, "metrics": {}},
    "a bad device id": {**READING, "device_id": "bad id!"},
    "a string": "hello",
    "a batch with one bad reading": [READING, {**READING, "metrics": None}],
}
Validate = Callable[[Any], Any]


@pytest.fixture
def validate_model() -> Validate:
    validate: Validate = fastjsonschema.compile(readings_request_schema(READING_SCHEMA))
    return validate


def model_accepts(validate_model: Validate, body: Any) -> bool:
    try:
        validate_model(body)
    except fastjsonschema.JsonSchemaException:
        return False
    return True


def function_accepts(ingest: ModuleType, body: Any) -> bool:
    try:
        ingest.parse_readings(json.dumps(body), ingest.CONFIG, NOW)
    except ingest.InvalidRequest:
        return False
    return True


@pytest.mark.parametrize("sample", SAMPLE_BODIES)
def test_the_api_model_and_the_ingest_function_agree(
    ingest: ModuleType, validate_model: Validate, sample: str
) -> None:
    body = SAMPLE_BODIES[sample]
    assert model_accepts(validate_model, body) == function_accepts(ingest, body)


def test_the_samples_hold_both_outcomes(ingest: ModuleType) -> None:
    assert {function_accepts(ingest, body) for body in SAMPLE_BODIES.values()} == {True, False}
