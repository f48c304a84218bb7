"""The reading schema is the contract: ingest and the consumers apply it through one package, readings; what
ingest writes, they read back unchanged; and whatever it admits can be stored and summed."""

import json
from decimal import Decimal, localcontext
from types import ModuleType
from typing import Any

import fastjsonschema
import pytest
import readings

from tests.functions.conftest import FUNCTIONS
from tests.functions.events import iso, minutes_ago

SCHEMA: dict[str, Any] = json.loads((FUNCTIONS / "readings" / "reading_schema.json").read_text())


def test_the_schema_is_draft_04_as_api_gateway_models_require() -> None:
    assert SCHEMA["$schema"] == "http://json-schema.org/draft-04/schema#"
    fastjsonschema.compile(SCHEMA)


@pytest.mark.parametrize(
    "schema",
    [{"type": "object"}, {"type": "object", "additionalProperties": False, "dependencies": {"a": ["b"]}}],
    ids=["open-object", "unknown-keyword"],
)
def test_a_schema_that_the_checks_could_not_apply_completely_is_refused(schema: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="closed objects"):
        readings.compile_check(schema)


def test_every_reading_ingest_accepts_comes_out_of_its_record_as_it_went_in(ingest: ModuleType) -> None:
    moment = minutes_ago(1, seconds=0.001)
    extremes = {
        "zero": 0,
        "largest": 1e15,
        "most_negative": -1e15,
        "smallest": 0.000001,
        "fifteen_digits": 999999999999999,
        "six_places": -123456789.123456,
        "exponent": 1.5e-5,
        "m" * 64: 0.5,
    }
    body: list[dict[str, Any]] = [
        {"device_id": "a", "timestamp": iso(moment), "metrics": {"t": 1}},
        {"device_id": "A" + "z" * 127, "timestamp": int(moment.timestamp() * 1000), "metrics": extremes},
        {
            "device_id": "gw-17:boiler_2.b",
            "timestamp": moment.isoformat(),
            "metrics": {f"m{n}": n / 64 for n in range(64)},
            "sequence": 2**53 - 1,
            "firmware": "1.2.3-rc.1+build.5",
        },
    ]

    accepted = [entry.reading for entry in ingest.parse_readings(json.dumps(body), ingest.CONFIG, moment)]
    (record,) = readings.pack(accepted)
    unpacked = readings.unpack(record.data)

    assert unpacked == readings.Unpacked(accepted, [])
    assert [json.loads(reading.data())["metrics"] for reading in unpacked.readings] == [
        item["metrics"] for item in body
    ]


def test_the_largest_reading_the_schema_accepts_fits_in_a_record_of_its_own() -> None:
    largest = {
        "device_id": "d" * 128,
        "timestamp": "2026-11-23T17:04:05.123456+05:30",
        "metrics": {f"m{n:02}" + "x" * 61: -123456789012345.0 for n in range(64)},
        "sequence": 2**53 - 1,
        "firmware": "f" * 64,
    }
    document = readings.parse_json(json.dumps(largest))
    assert readings.reading_problems(document, "$") == []

    (record,) = readings.pack([readings.Reading.from_document(document)])

    assert record.size <= readings.MAX_RECORD_BYTES


def test_the_largest_sums_of_a_minute_are_exact_and_storable(processor: ModuleType) -> None:
    """60,000 readings (one per millisecond) of the values furthest apart in size that the rules admit."""
    values = [Decimal("1E+15"), Decimal("0.000001"), Decimal("-999999999.999999")] * 20_000
    stats = processor.Stats(1, values[0], values[0], values[0])
    for value in values[1:]:
        stats = stats.with_value(value)

    with localcontext() as context:
        context.prec = 100
        exact = sum(values, Decimal(0))
    assert stats.total == exact
    assert len(stats.total.as_tuple().digits) <= 38 and abs(stats.total) >= Decimal("1e-130")


def test_batches_keep_order_and_bounds_and_put_an_oversized_item_alone() -> None:
    sizes = [3, 3, 3, 9, 1, 1, 1, 1, 1]

    groups = readings.batches(sizes, max_items=3, max_bytes=6, size=lambda size: size)

    assert groups == [[3, 3], [3], [9], [1, 1, 1], [1, 1]]
