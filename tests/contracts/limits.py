"""The limits chain of one synthesized stack: each limit must admit what the one before it lets through.

Each link is derived by one function below, from the stack (WAF, API stage and usage plan, functions, event
source mapping, stream), the ingest function's settings and the reading schema the ingest function uses.
A link is None where its limit does not exist (no WAF in dev).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from decimal import DefaultContext
from functools import cache
from typing import Any

import readings

from iot_constructs.stream import PACKED_READING_BYTES, PARTITION_KEY_LENGTH
from stacks.config import PROD_LOAD
from tests.contracts.stack_model import (
    Body,
    Stack,
    environment,
    lambda_function,
    referenced,
    refers_to,
    resources,
)

# AWS's documented limits.
API_GATEWAY_MAX_PAYLOAD = (
    10 * 1024 * 1024
)  # https://docs.aws.amazon.com/apigateway/latest/developerguide/limits.html
API_GATEWAY_INTEGRATION_TIMEOUT_MS = 29_000  # the default of timeout_milliseconds, same page
LAMBDA_MAX_SYNC_PAYLOAD = (
    6 * 1024 * 1024
)  # https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html
LAMBDA_EVENT_ENVELOPE = 64 * 1024  # headers and request context around the body, generously
KINESIS_SHARD_RECORDS = (
    1000  # per second, https://docs.aws.amazon.com/streams/latest/dev/service-sizes-and-limits.html
)
KINESIS_SHARD_BYTES = 1024 * 1024  # per second, same page
KINESIS_MAX_RECORD = 1024 * 1024  # data blob before base64, same page
# A new on-demand stream's write capacity: https://docs.aws.amazon.com/streams/latest/dev/how-do-i-size-a-stream.html
ON_DEMAND_RECORDS = 4000
ON_DEMAND_BYTES = 4 * 1024 * 1024
WAF_DEFAULT_WINDOW_SECONDS = 300  # rate-based rules: https://docs.aws.amazon.com/waf/latest/developerguide/waf-rule-statement-type-rate-based.html
# Managed rules that block bodies above a size: https://docs.aws.amazon.com/waf/latest/developerguide/aws-managed-rule-groups-baseline.html
MANAGED_BODY_LIMITS = {("AWS", "AWSManagedRulesCommonRuleSet"): ("SizeRestrictions_BODY", 8 * 1024)}
# DynamoDB: https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/ServiceQuotas.html
DYNAMODB_MAX_ITEM = 400 * 1024
DYNAMODB_MAX_DIGITS = 38
DYNAMODB_MIN_MAGNITUDE = 1e-130
DYNAMODB_MAX_MAGNITUDE = 9.9999999999999999999999999999999999999e125
DYNAMODB_NUMBERS = "DynamoDB numbers: magnitude 1e-130 to 1e+126, 38 significant digits"
# What the processor stores (functions/README.md, Tables): timestamps are UTC with milliseconds.
CANONICAL_TIMESTAMP = "2026-11-23T17:04:05.123Z"
CANONICAL_MINUTE = "2026-11-23T17:04Z"
READINGS_PER_MINUTE = 60 * 1000  # one per millisecond of the minute: `counted_ms` holds at most these
FLOAT_DIGITS = 17  # repr() of a binary64, which is what a JSON number becomes in ingest


@dataclass(frozen=True)
class Link:
    name: str
    limit: str
    """What the limit lets through, with its numbers."""
    load: str
    """What it must admit, with its numbers."""
    holds: bool | None
    """None: the limit does not exist in this environment."""


# --- reading the stack ----------------------------------------------------------------------------------


def ingest_settings(stack: Stack) -> dict[str, str]:
    function = lambda_function(stack, "ingest")
    assert function is not None, f"{environment(stack)}: no ingest function"
    variables: dict[str, str] = function[1].get("environment", {}).get("variables", {})
    return variables


def _one(stack: Stack, type_: str) -> Body | None:
    found = list(resources(stack, type_).values())
    assert len(found) <= 1, f"{environment(stack)}: expected at most one {type_}, found {len(found)}"
    return found[0] if found else None


def stage_throttle(stack: Stack) -> tuple[float, int]:
    """(rate, burst) of the stage's `*/*` method settings; the account's defaults otherwise."""
    for settings in resources(stack, "aws_api_gateway_method_settings").values():
        if settings.get("method_path") == "*/*":
            values = settings.get("settings", {})
            return float(values.get("throttling_rate_limit", 10_000)), int(
                values.get("throttling_burst_limit", 5000)
            )
    return 10_000.0, 5000


def client_throttle(stack: Stack) -> tuple[float, int]:
    plan = _one(stack, "aws_api_gateway_usage_plan")
    assert plan is not None, f"{environment(stack)}: no usage plan"
    throttle = plan.get("throttle_settings", {})
    return float(throttle["rate_limit"]), int(throttle["burst_limit"])


def web_acl(stack: Stack) -> Body | None:
    """The web ACL associated with the API's stage, if any."""
    for association in resources(stack, "aws_wafv2_web_acl_association").values():
        stage = referenced(association["resource_arn"])
        acl = referenced(association["web_acl_arn"])
        if stage is not None and stage.type == "aws_api_gateway_stage" and acl is not None:
            found: Body = stack["resource"][acl.type][acl.name]
            return found
    return None


def reading_schema() -> dict[str, Any]:
    """The reading schema the functions share (functions/readings)."""
    schema: dict[str, Any] = readings.SCHEMA
    return schema


# --- the links ------------------------------------------------------------------------------------------


def _body_rule_active(rule: Body, rule_name: str) -> bool:
    """Whether a managed rule group's size rule blocks POST /v1/readings: neither overridden to count or
    allow, nor taken off the readings path by a scope-down statement."""
    if "count" in rule.get("override_action", {}):
        return False
    statement = rule["statement"]["managed_rule_group_statement"]
    for override in statement.get("rule_action_override", []):
        action = override.get("action_to_use", {})
        if override.get("name") == rule_name and ("count" in action or "allow" in action):
            return False
    scope_down = json.dumps(statement.get("scope_down_statement", {}))
    return not ("not_statement" in scope_down and "readings" in scope_down)


def waf_body_link(stack: Stack) -> Link:
    """The WAF's body inspection admits every body ingest accepts (MAX_BODY_BYTES)."""
    body_limit = int(ingest_settings(stack)["MAX_BODY_BYTES"])
    acl = web_acl(stack)
    load = f"ingest accepts bodies up to MAX_BODY_BYTES = {body_limit} bytes"
    if acl is None:
        return Link("WAF body size", "no WAF on the stage", load, None)
    limits = []
    for rule in acl.get("rule", []):
        group = rule.get("statement", {}).get("managed_rule_group_statement", {})
        key = (group.get("vendor_name"), group.get("name"))
        if key in MANAGED_BODY_LIMITS and _body_rule_active(rule, MANAGED_BODY_LIMITS[key][0]):
            rule_name, size = MANAGED_BODY_LIMITS[key]
            limits.append((size, f"{key[1]}'s {rule_name} blocks bodies over {size} bytes"))
    if not limits:
        return Link("WAF body size", "no WAF rule limits the body size", load, True)
    size, why = min(limits)
    return Link("WAF body size", why, load, size >= body_limit)


def payload_link(stack: Stack) -> Link:
    """API Gateway's payload limit and Lambda's synchronous payload limit admit the largest body, escaped in
    the proxy event (at most six bytes per byte: `\\u00XX`) with its envelope."""
    body_limit = int(ingest_settings(stack)["MAX_BODY_BYTES"])
    event = 6 * body_limit + LAMBDA_EVENT_ENVELOPE
    return Link(
        "API Gateway and Lambda payloads",
        f"API Gateway admits {API_GATEWAY_MAX_PAYLOAD} bytes, Lambda a {LAMBDA_MAX_SYNC_PAYLOAD}-byte event",
        f"a {body_limit}-byte body, at most {event} bytes as an event",
        body_limit <= API_GATEWAY_MAX_PAYLOAD and event <= LAMBDA_MAX_SYNC_PAYLOAD,
    )


def waf_rate_link(stack: Stack) -> Link:
    """The WAF's per-IP rate (requests per evaluation window, 5 minutes by default) admits one client's
    usage plan rate, so that a client within its plan is never blocked."""
    rate, _ = client_throttle(stack)
    load = f"a client may send {rate:g} requests/s (usage plan)"
    acl = web_acl(stack)
    rules = [r for r in (acl or {}).get("rule", []) if "rate_based_statement" in r.get("statement", {})]
    if not rules:
        return Link("WAF rate per IP", "no WAF rate rule", load, None)
    statement = rules[0]["statement"]["rate_based_statement"]
    window = int(statement.get("evaluation_window_sec", WAF_DEFAULT_WINDOW_SECONDS))
    per_second = int(statement["limit"]) / window
    return Link(
        "WAF rate per IP",
        f"the WAF blocks an IP above {statement['limit']} requests per {window} s "
        f"= {per_second:.2f} requests/s",
        load,
        per_second >= rate,
    )


def usage_plan_link(stack: Stack) -> Link:
    """One client's usage plan (rate and burst) fits within the stage's throttle."""
    rate, burst = client_throttle(stack)
    stage_rate, stage_burst = stage_throttle(stack)
    return Link(
        "usage plan within the stage",
        f"the stage throttles at {stage_rate:g} requests/s, burst {stage_burst}",
        f"a client's plan allows {rate:g} requests/s, burst {burst}",
        rate <= stage_rate and burst <= stage_burst,
    )


def _processor_mapping(stack: Stack) -> tuple[Body, Body]:
    function = lambda_function(stack, "processor")
    assert function is not None, f"{environment(stack)}: no processor function"
    mappings = [
        m
        for m in resources(stack, "aws_lambda_event_source_mapping").values()
        if refers_to(m["function_name"], function[0])
    ]
    assert len(mappings) == 1, (
        f"{environment(stack)}: expected one mapping to the processor, found {len(mappings)}"
    )
    return function[1], mappings[0]


def _stream(stack: Stack) -> Body:
    stream = _one(stack, "aws_kinesis_stream")
    assert stream is not None, f"{environment(stack)}: no stream"
    return stream


def retries_link(stack: Stack) -> Link:
    """Every attempt at a batch (the first and maximum_retry_attempts more, each up to the processor's
    timeout, after the batching window) fits within the mapping's maximum record age."""
    function, mapping = _processor_mapping(stack)
    retries, timeout = int(mapping.get("maximum_retry_attempts", -1)), int(function.get("timeout", 3))
    age = int(mapping.get("maximum_record_age_in_seconds", -1))
    window = int(mapping.get("maximum_batching_window_in_seconds", 0))
    needed = (retries + 1) * timeout + window
    return Link(
        "retries within the record age",
        f"the mapping drops records older than {age} s"
        if age >= 0
        else "the mapping keeps records forever (-1)",
        f"(1 + {retries} retries) x {timeout} s timeout + {window} s window = {needed} s"
        if retries >= 0
        else "unbounded retries",
        retries >= 0 and (age < 0 or needed <= age),
    )


def retention_link(stack: Stack) -> Link:
    """The mapping's maximum record age fits within the stream's retention, so records reach the on-failure
    destination instead of expiring unseen."""
    _, mapping = _processor_mapping(stack)
    age = int(mapping.get("maximum_record_age_in_seconds", -1))
    hours = int(_stream(stack).get("retention_period", 24))
    return Link(
        "record age within retention",
        f"the stream keeps records {hours} h = {hours * 3600} s",
        f"the mapping retries records up to {age} s old" if age >= 0 else "the mapping retries forever (-1)",
        0 <= age <= hours * 3600,
    )


def integration_timeout_link(stack: Stack) -> Link:
    """API Gateway waits for each function behind it at least as long as the function may run."""
    waits, runs, holds = [], [], True
    for integration in resources(stack, "aws_api_gateway_integration").values():
        target = referenced(integration.get("uri"))
        if target is None or target.type != "aws_lambda_function":
            continue
        function = stack["resource"][target.type][target.name]
        wait = int(integration.get("timeout_milliseconds", API_GATEWAY_INTEGRATION_TIMEOUT_MS))
        timeout = int(function.get("timeout", 3))
        waits.append(f"{wait} ms for {function['function_name']}")
        runs.append(f"{function['function_name']} may run {timeout} s")
        holds = holds and timeout * 1000 <= wait
    if not waits:
        return Link("integration timeouts", "no Lambda integrations", "", None)
    return Link(
        "integration timeouts",
        "API Gateway waits " + ", ".join(sorted(waits)),
        ", ".join(sorted(runs)),
        holds,
    )


def readings_per_record() -> tuple[int, str]:
    """How many of the largest readings ingest packs into one record (functions/readings packs records of at
    most MAX_RECORD_BYTES; a reading larger than that goes alone)."""
    per_record = max(1, readings.MAX_RECORD_BYTES // largest_reading_bytes())
    return per_record, f"{per_record} of the largest readings per record of {readings.MAX_RECORD_BYTES} bytes"


def stream_capacity(stack: Stack) -> tuple[int, int, str]:
    """(records/s, bytes/s, description) the stream accepts."""
    stream = _stream(stack)
    if stream.get("stream_mode_details", {}).get("stream_mode") == "ON_DEMAND":
        return ON_DEMAND_RECORDS, ON_DEMAND_BYTES, "on demand, as created"
    shards = int(stream["shard_count"])
    return shards * KINESIS_SHARD_RECORDS, shards * KINESIS_SHARD_BYTES, f"{shards} shards"


def stream_records_link(stack: Stack) -> Link:
    """The stream's write capacity in records takes the stage's rate of full batches: rate x
    ceil(MAX_BATCH_SIZE / readings per record) records/s."""
    rate, _ = stage_throttle(stack)
    batch = int(ingest_settings(stack)["MAX_BATCH_SIZE"])
    per_record, packing = readings_per_record()
    records = rate * math.ceil(batch / per_record)
    capacity, _, stream = stream_capacity(stack)
    return Link(
        "stream records/s",
        f"the stream ({stream}) takes {capacity} records/s",
        f"{rate:g} requests/s x {batch} readings, {packing} = {records:.0f} records/s",
        records <= capacity,
    )


def stream_typical_link(stack: Stack) -> Link:
    """The stream's write capacity takes the stage's whole rate of requests of the size the platform is
    sized for (stacks.config.PROD_LOAD: readings per request, PACKED_READING_BYTES each), in records and in
    bytes. (The largest requests at the stage's whole rate are the two links before and after: reported.)"""
    rate, _ = stage_throttle(stack)
    batch = PROD_LOAD.readings_per_request
    records = rate * math.ceil(batch * PACKED_READING_BYTES / readings.MAX_RECORD_BYTES)
    data = rate * batch * PACKED_READING_BYTES + records * PARTITION_KEY_LENGTH
    records_capacity, bytes_capacity, stream = stream_capacity(stack)
    return Link(
        "stream at the sized request",
        f"the stream ({stream}) takes {records_capacity} records/s and {bytes_capacity} bytes/s",
        f"{rate:g} requests/s x {batch} readings of {PACKED_READING_BYTES} bytes = {records:.0f} records/s, "
        f"{data:.0f} bytes/s",
        records <= records_capacity and data <= bytes_capacity,
    )


def stream_bytes_link(stack: Stack) -> Link:
    """The stream's write capacity in bytes takes the stage's rate of full-size bodies: rate x MAX_BODY_BYTES
    (a record carries about its readings' bytes)."""
    rate, _ = stage_throttle(stack)
    body_limit = int(ingest_settings(stack)["MAX_BODY_BYTES"])
    _, capacity, stream = stream_capacity(stack)
    return Link(
        "stream bytes/s",
        f"the stream ({stream}) takes {capacity} bytes/s",
        f"{rate:g} requests/s x {body_limit} bytes = {rate * body_limit:.0f} bytes/s",
        rate * body_limit <= capacity,
    )


# --- what the schema admits -----------------------------------------------------------------------------


def _max_length(schema: dict[str, Any]) -> int:
    """The longest string a string schema admits: its maxLength, or the width of its anchored pattern."""
    import re._parser as sre_parse  # type: ignore[import-not-found]  # the regex parser: its width bounds

    widths = [int(schema["maxLength"])] if "maxLength" in schema else []
    if "pattern" in schema:
        widths.append(int(sre_parse.parse(schema["pattern"]).getwidth()[1]))
    assert widths and min(widths) < 10_000, f"unbounded string: {schema}"
    return min(widths)


@dataclass(frozen=True)
class Bounds:
    device_id: int
    metric_names: int
    metric_name: int
    firmware: int
    sequence_digits: int
    smallest: float
    """The smallest non-zero magnitude of a metric value the schema admits (by powers of ten)."""
    finest: float
    """The finest digit an admitted value can carry (by powers of ten): every sum is a multiple of it."""
    largest: float
    integer_digits: int
    """The most digits an integer metric value can have (integers keep their digits; floats have 17)."""


@cache
def schema_bounds() -> Bounds:
    """What a reading may hold, found by asking the readings package that ingest and the consumers check
    readings with (its schema, and the value rules the schema cannot state): names and strings by their
    patterns, metric values by checking readings whose values are written as 10^k, sequences by their
    maximum."""
    schema = reading_schema()
    properties = schema["properties"]
    metrics = properties["metrics"]
    (name_pattern,) = metrics["patternProperties"]

    def admitted(value: str) -> bool:
        """Whether a reading with metric value `value` (as written in JSON), and with its negation, passes."""
        reading = '{{"device_id": "d", "timestamp": "2026-11-23T17:04:05Z", "metrics": {{"m": {}}}}}'
        return not any(
            readings.reading_problems(readings.parse_json(reading.format(sign + value)), "$")
            for sign in ("", "-")
        )

    smallest = min((10.0**-k for k in range(0, 324) if admitted(f"1e-{k}")), default=1.0)
    if admitted("5e-324"):
        smallest = 5e-324
    finest = min((10.0**-k for k in range(1, 324) if admitted("1." + "0" * (k - 1) + "1")), default=1.0)
    largest = max((10.0**k for k in range(0, 309) if admitted(f"1e{k}")), default=0.0)
    largest_integer = max((10**k for k in range(0, 400) if admitted(str(10**k))), default=0)
    return Bounds(
        device_id=_max_length(properties["device_id"]),
        metric_names=int(metrics.get("maxProperties", 10_000)),
        metric_name=_max_length({"pattern": name_pattern}),
        firmware=_max_length(properties["firmware"]),
        sequence_digits=len(str(int(properties["sequence"].get("maximum", 10**400)))),
        smallest=smallest,
        finest=min(smallest, finest),
        largest=largest,
        integer_digits=len(str(largest_integer)),
    )


def number_size(digits: int) -> int:
    """DynamoDB's size of a number: one byte per two significant digits, plus one."""
    return math.ceil(digits / 2) + 1


def _sized(name: str, value: int) -> int:
    return len(name.encode()) + value


def item_sizes() -> tuple[int, int]:
    """(largest raw item, largest aggregate item) in bytes by DynamoDB's rules (attribute names count; a map
    or set is 3 bytes plus one per element; numbers as number_size), for the largest reading the schema
    admits and the largest minute the processor keeps (functions/README.md, Tables)."""
    b = schema_bounds()
    value = number_size(max(FLOAT_DIGITS, b.integer_digits))
    expires_at = _sized("expires_at", number_size(11))
    metrics = _sized("metrics", 3 + b.metric_names * (b.metric_name + value + 1))
    raw = (
        _sized("device_id", b.device_id)
        + _sized("timestamp", len(CANONICAL_TIMESTAMP))
        + metrics
        + _sized("sequence", number_size(b.sequence_digits))
        + _sized("firmware", b.firmware)
        + expires_at
    )
    total = number_size(DefaultContext.prec)  # the processor sums Decimals in Python's default context
    stats = 3 + sum(
        _sized(n, v) + 1
        for n, v in (("count", number_size(5)), ("min", value), ("max", value), ("sum", total))
    )
    aggregate = (
        _sized("device_id", b.device_id)
        + _sized("minute", len(CANONICAL_MINUTE))
        + _sized("reading_count", number_size(len(str(READINGS_PER_MINUTE))))
        + _sized("counted_ms", 3 + READINGS_PER_MINUTE * (number_size(len(str(READINGS_PER_MINUTE - 1))) + 1))
        + _sized("metrics", 3 + b.metric_names * (b.metric_name + stats + 1))
        + expires_at
    )
    return raw, aggregate


def item_size_link(stack: Stack) -> Link:
    """The largest raw item and the largest aggregate item the schema allows fit DynamoDB's item size."""
    raw, aggregate = item_sizes()
    return Link(
        "DynamoDB item size",
        f"DynamoDB stores items up to {DYNAMODB_MAX_ITEM} bytes",
        f"the largest raw item is {raw} bytes, the largest aggregate item {aggregate} bytes",
        max(raw, aggregate) <= DYNAMODB_MAX_ITEM,
    )


def largest_reading_bytes() -> int:
    """The longest canonical JSON of a reading the schema admits."""
    b = schema_bounds()
    value = len(repr(-1.2345678901234567e-300))
    return (
        len('{"device_id":"","firmware":"","metrics":{},"sequence":,"timestamp":""}')
        + b.device_id
        + b.firmware
        + b.sequence_digits
        + len(CANONICAL_TIMESTAMP)
        + b.metric_names * (b.metric_name + value + 4)
    )


def record_size_link(stack: Stack) -> Link:
    """A stream record (the readings packed into it, as canonical JSON) fits Kinesis's record size."""
    reading = largest_reading_bytes()
    record = max(readings.MAX_RECORD_BYTES, reading)
    return Link(
        "stream record size",
        f"Kinesis takes records up to {KINESIS_MAX_RECORD} bytes",
        f"records of at most {readings.MAX_RECORD_BYTES} bytes, or one reading of at most {reading} bytes "
        f"= {record} bytes",
        record <= KINESIS_MAX_RECORD,
    )


def value_range_link(stack: Stack) -> Link:
    """Every metric value the schema admits is a DynamoDB number: magnitude 0 or within 1e-130..1e126, at
    most 38 significant digits."""
    b = schema_bounds()
    digits = max(FLOAT_DIGITS, b.integer_digits)
    return Link(
        "metric values in DynamoDB",
        DYNAMODB_NUMBERS,
        f"the schema admits magnitudes {b.smallest:g} to {b.largest:g}, up to {digits} digits",
        b.smallest >= DYNAMODB_MIN_MAGNITUDE
        and b.largest <= DYNAMODB_MAX_MAGNITUDE
        and digits <= DYNAMODB_MAX_DIGITS,
    )


def sum_range_link(stack: Stack) -> Link:
    """Every per-minute sum the aggregates keep is a DynamoDB number. A sum of up to READINGS_PER_MINUTE
    values is at most that many times the largest; a non-zero sum is a multiple of the finest digit a value
    can carry, so at least that; and Python's decimal context (28 digits) bounds its digits."""
    b = schema_bounds()
    largest = READINGS_PER_MINUTE * b.largest
    smallest_exponent = math.floor(math.log10(b.finest)) if b.finest > 0 else -math.inf
    return Link(
        "per-minute sums in DynamoDB",
        DYNAMODB_NUMBERS,
        f"sums of up to {READINGS_PER_MINUTE} values reach {largest:g}; a non-zero sum can be as small as "
        f"1e{smallest_exponent}; {DefaultContext.prec} digits",
        smallest_exponent >= math.log10(DYNAMODB_MIN_MAGNITUDE)
        and largest <= DYNAMODB_MAX_MAGNITUDE
        and DefaultContext.prec <= DYNAMODB_MAX_DIGITS,
    )


LINKS: tuple[Callable[[Stack], Link], ...] = (
    waf_body_link,
    payload_link,
    waf_rate_link,
    usage_plan_link,
    integration_timeout_link,
    retries_link,
    retention_link,
    stream_records_link,
    stream_typical_link,
    stream_bytes_link,
    record_size_link,
    item_size_link,
    value_range_link,
    sum_range_link,
)


def chain(stack: Stack) -> list[Link]:
    return [link(stack) for link in LINKS]


def failure(stack: Stack, link: Link) -> str:
    return f"{environment(stack)}: {link.name}: {link.limit}, but {link.load}"
