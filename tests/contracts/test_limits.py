"""The limits chain (limits.py) of each stack: every limit admits what the one before it lets through."""

import copy
from typing import Any

import pytest

from tests.conftest import Synth
from tests.contracts import limits
from tests.contracts.limits import Link


def assert_holds(stack: dict[str, Any], link: Link) -> None:
    assert link.holds is not False, limits.failure(stack, link)


def test_the_waf_admits_every_body_ingest_accepts(stack: dict[str, Any]) -> None:
    assert_holds(stack, limits.waf_body_link(stack))


def test_api_gateway_and_lambda_admit_the_largest_body_ingest_accepts(stack: dict[str, Any]) -> None:
    assert_holds(stack, limits.payload_link(stack))


def test_the_waf_rate_per_ip_admits_a_clients_usage_plan_rate(stack: dict[str, Any]) -> None:
    assert_holds(stack, limits.waf_rate_link(stack))


def test_a_clients_usage_plan_fits_within_the_stage_throttle(stack: dict[str, Any]) -> None:
    assert_holds(stack, limits.usage_plan_link(stack))


def test_api_gateway_waits_as_long_as_the_functions_behind_it_may_run(stack: dict[str, Any]) -> None:
    assert_holds(stack, limits.integration_timeout_link(stack))


def test_the_stream_takes_the_stage_rate_of_requests_of_the_sized_size(stack: dict[str, Any]) -> None:
    assert_holds(stack, limits.stream_typical_link(stack))


def test_every_retry_of_a_batch_fits_within_the_mappings_maximum_record_age(stack: dict[str, Any]) -> None:
    assert_holds(stack, limits.retries_link(stack))


def test_the_mappings_maximum_record_age_fits_within_the_streams_retention(stack: dict[str, Any]) -> None:
    assert_holds(stack, limits.retention_link(stack))


def test_a_stream_record_fits_the_readings_packed_into_it(stack: dict[str, Any]) -> None:
    assert_holds(stack, limits.record_size_link(stack))


def test_every_item_the_schema_allows_fits_a_dynamodb_item(stack: dict[str, Any]) -> None:
    assert_holds(stack, limits.item_size_link(stack))


def test_every_metric_value_the_schema_admits_is_a_dynamodb_number(stack: dict[str, Any]) -> None:
    assert_holds(stack, limits.value_range_link(stack))


def test_every_per_minute_sum_the_aggregates_keep_is_a_dynamodb_number(stack: dict[str, Any]) -> None:
    assert_holds(stack, limits.sum_range_link(stack))


@pytest.mark.parametrize("name", ["staging", "prod"])
def test_the_waf_body_check_accepts_an_override_of_the_size_rule_or_a_scope_down_off_the_readings_path(
    synth: Synth, name: str
) -> None:
    """Either fix of the 8 KB body limit passes: counting SizeRestrictions_BODY, or keeping the rule group off
    POST /v1/readings. Leaving the group as it is does not."""
    stack = synth.stacks[f"iot-platform-{name}"]
    plain, overridden, scoped = (copy.deepcopy(stack) for _ in range(3))
    override = {"rule_action_override": [{"name": "SizeRestrictions_BODY", "action_to_use": {"count": {}}}]}
    readings_path = {
        "byte_match_statement": {
            "search_string": "/v1/readings",
            "positional_constraint": "ENDS_WITH",
            "field_to_match": {"uri_path": {}},
            "text_transformation": [{"priority": 0, "type": "NONE"}],
        }
    }
    scope_down = {"scope_down_statement": {"not_statement": {"statement": readings_path}}}
    for variant, change in ((plain, {}), (overridden, override), (scoped, scope_down)):
        acl = limits.web_acl(variant)
        assert acl is not None, f"{name}: no web ACL on the stage"
        for rule in acl["rule"]:
            group = rule["statement"].get("managed_rule_group_statement", {})
            if group.get("name") == "AWSManagedRulesCommonRuleSet":
                group.pop("rule_action_override", None)
                group.pop("scope_down_statement", None)
                rule["override_action"] = {"none": {}}
                group.update(change)
    assert limits.waf_body_link(plain).holds is False, (
        "the check misses the common rule set's 8 KB body limit"
    )
    for fixed in (overridden, scoped):
        assert limits.waf_body_link(fixed).holds, limits.failure(fixed, limits.waf_body_link(fixed))
