"""The reading schema is the contract; the processor's and query's own checks agree with it."""

import json
from decimal import Decimal
from types import ModuleType
from typing import Any

import fastjsonschema
import pytest

from tests.functions.conftest import FUNCTIONS
from tests.functions.events import iso, minutes_ago

SCHEMA: dict[str, Any] = json.loads((FUNCTIONS / "ingest" / "reading_schema.json").read_text())
DEVICE_ID_PATTERN = SCHEMA["properties"]["device_id"]["pattern"]
(METRIC_NAME_PATTERN,) = SCHEMA["properties"]["metrics"]["patternProperties"]


def test_the_schema_is_draft_04_as_api_gateway_models_require() -> None:
    assert SCHEMA["$schema"] == "http://json-schema.org/draft-04/schema#"
    fastjsonschema.compile(SCHEMA)


@pytest.mark.parametrize(
    "schema",
    [{"type": "object"}, {"type": "object", "additionalProperties": False, "dependencies": {"a": ["b"]}}],
    ids=["open-object", "unknown-keyword"],
)
def test_ingest_refuses_a_schema_it_could_not_check_completely(
    ingest: ModuleType, schema: dict[str, Any]
) -> None:
    with pytest.raises(ValueError, match="closed objects"):
        ingest.compile_check(schema)


def test_processor_and_query_use_the_schemas_patterns(processor: ModuleType, query: ModuleType) -> None:
    assert processor.DEVICE_ID.pattern == DEVICE_ID_PATTERN
    assert processor.METRIC_NAME.pattern == METRIC_NAME_PATTERN
    assert query.DEVICE_ID.pattern == DEVICE_ID_PATTERN


def test_the_processor_accepts_every_record_ingest_writes(ingest: ModuleType, processor: ModuleType) -> None:
    moment = minutes_ago(1, seconds=0.001)
    extremes = {"zero": 0, "large": 1e15, "negative": -1e15, "tiny": 1e-130, "integer": 7, "m" * 64: 0.5}
    body = [
        {"device_id": "a", "timestamp": iso(moment), "metrics": {"t": 1}},
        {"device_id": "A" + "z" * 127, "timestamp": int(moment.timestamp() * 1000), "metrics": extremes},
        {
            "device_id": "gw-17:boiler_2.b",
            "timestamp": moment.isoformat(),
            "metrics": {f"m{n}": n for n in range(64)},
            "sequence": 2**53 - 1,
            "firmware": "1.2.3-rc.1+build.5",
        },
    ]

    readings = ingest.parse_readings(json.dumps(body), ingest.CONFIG, moment)

    for written in readings:
        processor.parse_reading(json.loads(written.data, parse_float=Decimal))
