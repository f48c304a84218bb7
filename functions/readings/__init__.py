"""The reading: its schema, what makes one storable, its canonical form, and the stream records that carry it.

Ingest checks every reading of a request with these rules and packs the ones it accepts into stream records;
the processor and the stream worker unpack the records and check every reading again with the same rules,
because a stream also carries what was written before a deploy or by another producer. Whatever the rules
accept can be stored, summed and queried: no reading that passes them makes a DynamoDB write fail.

Each Lambda package holds this directory at its root next to the function's handler.py, and so does the
stream worker's image: code imports it as `readings`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import fastjsonschema

SCHEMA: dict[str, Any] = json.loads((Path(__file__).parent / "reading_schema.json").read_text())
DEVICE_ID = re.compile(SCHEMA["properties"]["device_id"]["pattern"])
# Stored timestamps are fixed-width UTC with milliseconds, so text order is time order.
CANONICAL_TIMESTAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_MILLISECOND = timedelta(milliseconds=1)
# The last moment with a four-digit year: canonical timestamps have one, and Python's dates end there.
LATEST_EPOCH_MS = SCHEMA["properties"]["timestamp"]["maximum"]

# Metric values. DynamoDB stores numbers of at most 38 significant digits and magnitudes from 1e-130 to 1e126,
# and the processor sums every metric per device and minute. A value is a number within +-1e15 (the schema)
# with at most 6 decimal places and at most 15 significant digits (checked here: draft-04's multipleOf is
# computed in binary floating point, which finds 0.3 no multiple of 0.000001). Then:
# - every value and every sum is a multiple of 0.000001, so no sum but 0 is smaller than that in magnitude:
#   none falls below 1e-130 (2e-130 and -1.5e-130 are refused: their sum, 5e-131, could not be stored);
# - a sum of n values is at most n * 1e15 in magnitude, with at most 6 decimal places, so it has at most
#   38 significant digits while n * 1e15 < 1e32: any sum of up to 1e17 readings. An aggregate counts at most
#   60,000 readings (one per millisecond of its minute): its sums need at most 26 digits, which Python's
#   default decimal context (28 digits) computes exactly;
# - 15 significant digits survive a binary double, which is how most clients, and the query function's JSON,
#   carry numbers: a value is returned as it was sent.
MAX_DECIMAL_PLACES = 6
MAX_SIGNIFICANT_DIGITS = 15

# A record of several readings (version 2), and a record holding one reading as a bare object (version 1, what
# ingest wrote before it packed readings), are told apart by the "v" member no reading may have.
RECORD_VERSION = 2
# A record's data and partition key fit in this many bytes: one PUT payload unit (Kinesis bills a record one
# unit per started 25 KB) and 2.4% of what a shard takes a second (1 MiB), so no record holds a shard for
# long. It holds about 200 typical readings (about 120 bytes each), so a shard's limit of 1,000 records a
# second no longer binds before its bytes do. A reading that the schema accepts is at most about 7 KB.
MAX_RECORD_BYTES = 25_000
RECORD_START, RECORD_END = b'{"readings":[', b'],"v":%d}' % RECORD_VERSION
# The hash of the data spreads records evenly over the shards (Kinesis hashes the key again with MD5);
# 8 bytes are ample for that, and short, since keys count against a shard's bytes too.
PARTITION_KEY_BYTES = 8

DRAFT_04 = "http://json-schema.org/draft-04/schema#"
# What compile_check understands on an object schema; it refuses a schema that needs more.
OBJECT_KEYWORDS = {
    "$schema",
    "title",
    "description",
    "type",
    "required",
    "properties",
    "patternProperties",
    "additionalProperties",
    "minProperties",
    "maxProperties",
}

Number = int | Decimal
Identity = tuple[str, str]  # (device_id, canonical timestamp): a reading's key in the raw table
T = TypeVar("T")


@dataclass(frozen=True)
class Problem:
    path: str  # JSONPath of what is wrong; $ is the whole document
    message: str


class InvalidJson(ValueError):
    pass


class _NotANumber:
    """NaN and Infinity are not JSON, yet Python parses them: they become this, which no schema accepts."""


NOT_A_NUMBER = _NotANumber()


def parse_json(text: str) -> Any:
    """The JSON value of `text`, with numbers exactly as written: a fraction or an exponent makes a Decimal.

    Raises InvalidJson, naming the problem, for text that is not JSON, that repeats a key in an object (which
    of the values would count?) or that nests deeper than Python parses. NaN and Infinity parse as
    NOT_A_NUMBER, for the schema to name where they are.
    """
    try:
        return json.loads(
            text, parse_float=Decimal, parse_constant=lambda _: NOT_A_NUMBER, object_pairs_hook=_unique_keys
        )
    except RecursionError:
        raise InvalidJson("it nests arrays and objects too deeply") from None
    except ValueError as error:
        raise InvalidJson(str(error)) from None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) != len(pairs):
        duplicates = sorted(key for key, count in Counter(key for key, _ in pairs).items() if count > 1)
        raise ValueError(f"an object repeats the keys {duplicates}")
    return document


Check = Callable[[Any, str], list[Problem]]


def compile_check(schema: Mapping[str, Any]) -> Check:
    """A check naming every problem of a value against a draft-04 schema.

    A closed object is checked member by member, so each bad member is named; any other value by
    fastjsonschema, which names its first problem. (fastjsonschema collects every error only from 2.22,
    newer than the one the Powertools layer bundles.)
    """
    if schema.get("type") != "object":
        return _value_check(fastjsonschema.compile({"$schema": DRAFT_04, **schema}))
    unsupported = schema.keys() - OBJECT_KEYWORDS
    if unsupported or schema.get("additionalProperties") is not False:
        raise ValueError(f"compile_check needs closed objects without {sorted(unsupported)}")
    required = schema.get("required", [])
    fewest, most = schema.get("minProperties", 0), schema.get("maxProperties", math.inf)
    properties = {name: compile_check(member) for name, member in schema.get("properties", {}).items()}
    # The schema's patterns are anchored (^...$); fullmatch also refuses the trailing newline $ lets through.
    patterns = [
        (re.compile(pattern), compile_check(member))
        for pattern, member in schema.get("patternProperties", {}).items()
    ]

    def check(value: Any, path: str) -> list[Problem]:
        if not isinstance(value, dict):
            return [Problem(path, "must be object")]
        problems = [Problem(f"{path}.{name}", "is required") for name in required if name not in value]
        if len(value) < fewest:
            problems.append(Problem(path, f"must have at least {fewest} members"))
        if len(value) > most:
            problems.append(Problem(path, f"must have at most {most} members"))
        for key, member in value.items():
            member_check = properties.get(key) or next((c for p, c in patterns if p.fullmatch(key)), None)
            if member_check is None:
                problems.append(Problem(f"{path}.{key}", "is not allowed"))
            else:
                problems += member_check(member, f"{path}.{key}")
        return problems

    return check


def _value_check(validate: Callable[[Any], Any]) -> Check:
    def check(value: Any, path: str) -> list[Problem]:
        try:
            validate(value)
        except fastjsonschema.JsonSchemaValueException as error:
            return [Problem(path, error.message.removeprefix("data "))]
        return []

    return check


check_schema = compile_check(SCHEMA)


def reading_problems(item: Any, path: str) -> list[Problem]:
    """Every reason why `item`, a value parse_json returned, is not a reading that can be stored.

    None if it is one. Paths start with `path`, the item's place in its document.
    """
    problems = check_schema(item, path)
    if not isinstance(item, dict):
        return problems
    named = {problem.path for problem in problems}
    metrics = item.get("metrics")
    if isinstance(metrics, dict):
        for name, value in metrics.items():
            value_path = f"{path}.metrics.{name}"
            message = None if value_path in named else _value_problem(value)
            if message:
                problems.append(Problem(value_path, message))
    timestamp_path = f"{path}.timestamp"
    if "timestamp" in item and timestamp_path not in named:
        problems += [Problem(timestamp_path, message) for message in _timestamp_problems(item["timestamp"])]
    return problems


def _value_problem(value: Number | float) -> str | None:
    """Why a number within the schema's bounds cannot be stored and summed exactly, if it cannot."""
    _, digits, exponent = Decimal(repr(value) if isinstance(value, float) else value).as_tuple()
    assert isinstance(exponent, int)  # the schema let no NaN or infinity through
    trailing_zeros = len(digits) - len("".join(map(str, digits)).rstrip("0"))
    significant = len(digits) - trailing_zeros if any(digits) else 0
    decimal_places = max(0, -(exponent + trailing_zeros)) if any(digits) else 0
    if decimal_places > MAX_DECIMAL_PLACES:
        return f"has {decimal_places} decimal places; at most {MAX_DECIMAL_PLACES} can be summed exactly"
    if significant > MAX_SIGNIFICANT_DIGITS:
        return f"has {significant} significant digits; at most {MAX_SIGNIFICANT_DIGITS} are kept exactly"
    return None


def _timestamp_problems(timestamp: str | int) -> list[str]:
    try:
        milliseconds = epoch_ms(timestamp)
    except ValueError as error:
        return [f"is not a valid date and time: {error}"]
    if not 0 <= milliseconds <= LATEST_EPOCH_MS:
        return [f"is outside {canonical_timestamp(0)} to {canonical_timestamp(LATEST_EPOCH_MS)}"]
    return []


def epoch_ms(timestamp: str | int) -> int:
    """Milliseconds since 1970-01-01T00:00:00Z of a timestamp the schema accepts (less than 1 ms dropped)."""
    if isinstance(timestamp, int):
        return timestamp
    return (datetime.fromisoformat(timestamp) - EPOCH) // ONE_MILLISECOND


def canonical_timestamp(milliseconds: int) -> str:
    """The moment `milliseconds` after the epoch in UTC with milliseconds, e.g. 2026-11-23T17:04:05.123Z: one
    fixed-width form, so text order is time order."""
    moment = EPOCH + milliseconds * ONE_MILLISECOND
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Reading:
    """A reading that can be stored, in canonical form."""

    device_id: str
    timestamp: str  # canonical
    metrics: dict[str, Number]
    sequence: int | None = None
    firmware: str | None = None

    @classmethod
    def from_document(cls, item: Mapping[str, Any]) -> Reading:
        """The reading of an item that reading_problems found nothing wrong with."""
        return cls(
            device_id=item["device_id"],
            timestamp=canonical_timestamp(epoch_ms(item["timestamp"])),
            metrics=dict(item["metrics"]),
            sequence=item.get("sequence"),
            firmware=item.get("firmware"),
        )

    @property
    def identity(self) -> Identity:
        return (self.device_id, self.timestamp)

    @property
    def minute(self) -> str:
        return self.timestamp[:16] + "Z"

    @property
    def millisecond_of_minute(self) -> int:
        return int(self.timestamp[17:19]) * 1000 + int(self.timestamp[20:23])

    @property
    def epoch_seconds(self) -> int:
        return epoch_ms(self.timestamp) // 1000

    def data(self) -> bytes:
        """The reading as canonical JSON: sorted keys, no spaces, metric values as JSON numbers.

        A metric value has at most 15 significant digits, so the binary double that carries it into JSON
        writes it exactly (as the shortest text that reads back as the same double).
        """
        document: dict[str, Any] = {
            "device_id": self.device_id,
            "timestamp": self.timestamp,
            "metrics": {
                name: float(value) if isinstance(value, Decimal) else value
                for name, value in self.metrics.items()
            },
        }
        if self.sequence is not None:
            document["sequence"] = self.sequence
        if self.firmware is not None:
            document["firmware"] = self.firmware
        return json.dumps(document, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


@dataclass(frozen=True)
class Record:
    """A stream record of version 2, and which of the packed readings it holds."""

    data: bytes
    partition_key: str
    readings: range  # positions in the sequence given to pack

    @property
    def size(self) -> int:
        """What the record counts against Kinesis's limits: its data and its partition key."""
        return len(self.data) + len(self.partition_key)


def pack(readings: Sequence[Reading]) -> list[Record]:
    """The readings in order, in as few records of at most MAX_RECORD_BYTES as they fit."""
    data = [reading.data() for reading in readings]
    room = MAX_RECORD_BYTES - len(RECORD_START) - len(RECORD_END) - 2 * PARTITION_KEY_BYTES
    records = []
    for positions in batches(range(len(data)), max_bytes=room, size=lambda position: len(data[position]) + 1):
        record_data = RECORD_START + b",".join(data[position] for position in positions) + RECORD_END
        key = hashlib.blake2b(record_data, digest_size=PARTITION_KEY_BYTES).hexdigest()
        records.append(Record(record_data, key, range(positions[0], positions[-1] + 1)))
    return records


@dataclass(frozen=True)
class Unpacked:
    """What a record holds: the readings that can be stored, and every problem of the others."""

    readings: list[Reading]
    problems: list[Problem]


def unpack(data: bytes) -> Unpacked:
    """The readings of a record of either version; a reading that cannot be stored is a problem of its own."""
    try:
        document = parse_json(data.decode())
    except (UnicodeDecodeError, InvalidJson) as error:
        return Unpacked([], [Problem("$", f"the record is not JSON: {error}")])
    if not (isinstance(document, dict) and "v" in document):
        items = [("$", document)]
    elif (
        document.keys() == {"v", "readings"}
        and type(document["v"]) is int
        and document["v"] == RECORD_VERSION
    ):
        if not (isinstance(document["readings"], list) and document["readings"]):
            return Unpacked([], [Problem("$.readings", "must be a non-empty array")])
        items = [(f"$.readings[{index}]", item) for index, item in enumerate(document["readings"])]
    else:
        return Unpacked([], [Problem("$", f"is not a record of version 1 or {RECORD_VERSION}")])
    readings, problems = [], []
    for path, item in items:
        item_problems = reading_problems(item, path)
        if item_problems:
            problems += item_problems
        else:
            readings.append(Reading.from_document(item))
    return Unpacked(readings, problems)


def batches(
    items: Sequence[T], *, max_bytes: int, size: Callable[[T], int], max_items: float = math.inf
) -> list[list[T]]:
    """The items in order, in consecutive groups of at most max_items items whose sizes add up to max_bytes.

    An item larger than max_bytes makes a group of its own.
    """
    groups: list[list[T]] = []
    group: list[T] = []
    group_bytes = 0
    for item in items:
        item_bytes = size(item)
        if group and (len(group) >= max_items or group_bytes + item_bytes > max_bytes):
            groups.append(group)
            group, group_bytes = [], 0
        group.append(item)
        group_bytes += item_bytes
    if group:
        groups.append(group)
    return groups
