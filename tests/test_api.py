"""The REST API as synthesized, and its request model agreeing with the ingest function."""

import json
from typing import Any

import pytest

from iot_constructs.api import readings_request_schema
from stacks.config import PROJECT, READING_SCHEMA, environment, short_lived_environment
from tests.conftest import CUSTOM_DOMAIN, LONGEST_SUFFIX, Synth
from tests.synth_json import one, reference_target, resources


def config_of(stack_name: str) -> Any:
    name = stack_name.removeprefix(f"{PROJECT}-")
    return short_lived_environment(name, {}) if name == LONGEST_SUFFIX else environment(name, {})


def test_every_method_requires_sigv4_and_an_api_key(stack: dict[str, Any]) -> None:
    methods = resources(stack, "aws_api_gateway_method")
    assert sorted(m["http_method"] for m in methods.values()) == ["GET", "GET", "GET", "POST"]
    for method in methods.values():
        assert method["authorization"] == "AWS_IAM"
        assert method["api_key_required"] is True


def get_methods(stack: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The GET methods by their resource's path part: readings, latest, rollups."""
    api_resources = resources(stack, "aws_api_gateway_resource")
    return {
        api_resources[reference_target(m["resource_id"]).split(".")[1]]["path_part"]: m
        for m in resources(stack, "aws_api_gateway_method", http_method="GET").values()
    }


# Each GET route's query string, all optional: the query function validates the values (a 400 naming them).
QUERY_STRINGS = {
    "readings": {"from", "to", "limit", "next_token"},
    "latest": set(),
    "rollups": {"from", "to", "resolution", "limit", "next_token"},
}


def test_post_validates_the_body_of_every_content_type_against_the_readings_model_and_get_its_parameters(
    stack: dict[str, Any],
) -> None:
    post = one(stack, "aws_api_gateway_method", http_method="POST")
    validators = resources(stack, "aws_api_gateway_request_validator")
    body_validator = validators[reference_target(post["request_validator_id"]).split(".")[1]]
    assert body_validator.get("validate_request_body") is True
    ((model_name, model),) = resources(stack, "aws_api_gateway_model").items()
    assert post["request_models"] == {"$default": f"${{aws_api_gateway_model.{model_name}.name}}"}
    assert json.loads(model["schema"]) == readings_request_schema(READING_SCHEMA)
    gets = get_methods(stack)
    assert set(gets) == set(QUERY_STRINGS)
    for path_part, get in gets.items():
        parameter_validator = validators[reference_target(get["request_validator_id"]).split(".")[1]]
        assert parameter_validator.get("validate_request_parameters") is True
        assert get["request_parameters"] == {
            "method.request.path.device_id": True,
            **{f"method.request.querystring.{name}": False for name in QUERY_STRINGS[path_part]},
        }


def test_every_route_is_a_lambda_proxy_invocable_only_from_this_api(stack: dict[str, Any]) -> None:
    integrations = resources(stack, "aws_api_gateway_integration")
    assert len(integrations) == 4
    assert all(i["type"] == "AWS_PROXY" for i in integrations.values())
    functions = {
        f"${{aws_lambda_function.{n}.invoke_arn}}": f["function_name"].split("-")[2]
        for n, f in resources(stack, "aws_lambda_function").items()
    }
    methods = resources(stack, "aws_api_gateway_method")
    api_resources = resources(stack, "aws_api_gateway_resource")

    def route(integration: dict[str, Any]) -> str:
        method = methods[reference_target(integration["http_method"]).split(".")[1]]
        path_part = api_resources[reference_target(method["resource_id"]).split(".")[1]]["path_part"]
        return f"{method['http_method']} {path_part}"

    assert sorted((route(i), functions[i["uri"]]) for i in integrations.values()) == [
        ("GET latest", "query"),
        ("GET readings", "query"),
        ("GET rollups", "query"),
        ("POST readings", "ingest"),
    ]
    permissions = [
        p
        for p in resources(stack, "aws_lambda_permission").values()
        if p["principal"] == "apigateway.amazonaws.com"
    ]
    assert sorted(p["source_arn"].split("}/*/", 1)[1] for p in permissions) == [
        "GET/v1/devices/*/latest",
        "GET/v1/devices/*/readings",
        "GET/v1/devices/*/rollups",
        "POST/v1/readings",
    ]
    assert all(p["source_arn"].startswith("${aws_api_gateway_rest_api.") for p in permissions)


def test_throttling_follows_the_environment(stack: dict[str, Any], stack_name: str) -> None:
    api = config_of(stack_name).ingestion.api
    settings = one(stack, "aws_api_gateway_method_settings")["settings"]
    assert (settings["throttling_rate_limit"], settings["throttling_burst_limit"]) == (
        api.throttle_rate,
        api.throttle_burst,
    )
    assert settings["metrics_enabled"] is True
    assert settings["data_trace_enabled"] is False
    assert settings["logging_level"] == api.logging_level
    plan = one(stack, "aws_api_gateway_usage_plan")
    assert plan["throttle_settings"] == {"burst_limit": api.client_burst, "rate_limit": api.client_rate}
    assert plan["quota_settings"] == {"limit": api.client_quota_per_day, "period": "DAY"}
    assert one(stack, "aws_api_gateway_usage_plan_key")["key_type"] == "API_KEY"


def test_prod_allows_1000_requests_a_second_and_200_per_client() -> None:
    api = environment("prod", {}).ingestion.api
    assert (api.throttle_rate, api.throttle_burst, api.client_rate, api.client_burst) == (
        1000,
        2000,
        200,
        400,
    )


def test_the_stage_logs_json_to_an_encrypted_group_and_traces(stack: dict[str, Any]) -> None:
    stage = one(stack, "aws_api_gateway_stage")
    assert stage["xray_tracing_enabled"] is True
    assert set(json.loads(stage["access_log_settings"]["format"])) >= {"requestId", "status", "latencyMs"}
    log_group = reference_target(stage["access_log_settings"]["destination_arn"]).split(".")[1]
    assert stack["resource"]["aws_cloudwatch_log_group"][log_group]["kms_key_id"].startswith("${aws_kms_key.")


def test_a_new_deployment_replaces_the_old_one_whenever_the_definition_changes(stack: dict[str, Any]) -> None:
    deployment = one(stack, "aws_api_gateway_deployment")
    assert deployment["lifecycle"] == {"create_before_destroy": True}
    trigger = deployment["triggers"]["redeployment"]
    assert trigger.startswith("${sha1(jsonencode(")
    for type_ in ("aws_api_gateway_method", "aws_api_gateway_integration"):
        for name in resources(stack, type_):
            assert f"{type_}.{name}.id" in trigger


def test_the_api_key_value_never_leaves_aws(stack: dict[str, Any]) -> None:
    key = one(stack, "aws_api_gateway_api_key")
    assert "value" not in key
    assert "api_key_id" in stack["output"]
    assert not any(".value" in str(output["value"]) for output in stack["output"].values())


@pytest.mark.parametrize(
    ("name", "waf"), [("dev", False), ("staging", True), ("prod", True), ("local", False)]
)
def test_staging_and_prod_put_a_web_acl_with_managed_rules_and_a_rate_limit_on_the_stage(
    synth: Synth, name: str, waf: bool
) -> None:
    stack = synth.stacks[f"{PROJECT}-{name}"]
    acls = resources(stack, "aws_wafv2_web_acl")
    assert len(acls) == int(waf)
    if waf:
        (acl,) = acls.values()
        groups = [
            r["statement"]["managed_rule_group_statement"]["name"]
            for r in acl["rule"]
            if "override_action" in r
        ]
        assert "AWSManagedRulesKnownBadInputsRuleSet" in groups
        (rate,) = [r for r in acl["rule"] if "rate_based_statement" in r["statement"]]
        # One client at its usage plan rate, for the 5 minutes the rule counts over, is never blocked.
        client_rate = environment(name, {}).ingestion.api.client_rate
        assert rate["statement"]["rate_based_statement"]["limit"] == client_rate * 300
        assert rate["action"] == {"block": {}}
        association = one(stack, "aws_wafv2_web_acl_association")
        assert reference_target(association["resource_arn"]).startswith("aws_api_gateway_stage.")


def test_one_stack_per_account_owns_api_gateways_logging_role(stack: dict[str, Any], stack_name: str) -> None:
    accounts = resources(stack, "aws_api_gateway_account")
    assert len(accounts) == int(config_of(stack_name).ingestion.api.manage_account_logging_role)


def test_a_custom_domain_serves_the_api_with_tls_1_2_and_turns_the_default_endpoint_off(synth: Synth) -> None:
    """No environment configures a domain (it needs a certificate); the custom-domain variant
    (tests/conftest.py) does, and tests/test_terraform.py validates it."""
    stack = synth.variant("custom-domain")
    domain_name, certificate_arn = CUSTOM_DOMAIN

    assert one(stack, "aws_api_gateway_rest_api")["disable_execute_api_endpoint"] is True
    name = one(stack, "aws_api_gateway_domain_name")
    assert (name["domain_name"], name["security_policy"]) == (domain_name, "TLS_1_2")
    assert name["regional_certificate_arn"] == certificate_arn
    assert name["endpoint_configuration"] == {"types": ["REGIONAL"]}
    mapping = one(stack, "aws_api_gateway_base_path_mapping")
    assert (
        reference_target(mapping["domain_name"])
        == f"aws_api_gateway_domain_name.{next(iter(resources(stack, 'aws_api_gateway_domain_name')))}"
    )
    assert stack["output"]["api_invoke_url"]["value"] == f"https://{domain_name}/v1"
    assert "api_domain_target" in stack["output"]
