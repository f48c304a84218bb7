"""The REST API devices and apps call: SigV4 (IAM) plus an API key on every method, throttled per client."""

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cdktf import Fn, TerraformResourceLifecycle
from cdktf_cdktf_provider_aws.api_gateway_account import ApiGatewayAccount
from cdktf_cdktf_provider_aws.api_gateway_api_key import ApiGatewayApiKey
from cdktf_cdktf_provider_aws.api_gateway_base_path_mapping import ApiGatewayBasePathMapping
from cdktf_cdktf_provider_aws.api_gateway_deployment import ApiGatewayDeployment
from cdktf_cdktf_provider_aws.api_gateway_domain_name import (
    ApiGatewayDomainName,
    ApiGatewayDomainNameEndpointConfiguration,
)
from cdktf_cdktf_provider_aws.api_gateway_gateway_response import ApiGatewayGatewayResponse
from cdktf_cdktf_provider_aws.api_gateway_integration import ApiGatewayIntegration
from cdktf_cdktf_provider_aws.api_gateway_method import ApiGatewayMethod
from cdktf_cdktf_provider_aws.api_gateway_method_settings import (
    ApiGatewayMethodSettings,
    ApiGatewayMethodSettingsSettings,
)
from cdktf_cdktf_provider_aws.api_gateway_model import ApiGatewayModel
from cdktf_cdktf_provider_aws.api_gateway_request_validator import ApiGatewayRequestValidator
from cdktf_cdktf_provider_aws.api_gateway_resource import ApiGatewayResource
from cdktf_cdktf_provider_aws.api_gateway_rest_api import (
    ApiGatewayRestApi,
    ApiGatewayRestApiEndpointConfiguration,
)
from cdktf_cdktf_provider_aws.api_gateway_stage import ApiGatewayStage, ApiGatewayStageAccessLogSettings
from cdktf_cdktf_provider_aws.api_gateway_usage_plan import (
    ApiGatewayUsagePlan,
    ApiGatewayUsagePlanApiStages,
    ApiGatewayUsagePlanQuotaSettings,
    ApiGatewayUsagePlanThrottleSettings,
)
from cdktf_cdktf_provider_aws.api_gateway_usage_plan_key import ApiGatewayUsagePlanKey
from cdktf_cdktf_provider_aws.iam_role_policy_attachment import IamRolePolicyAttachment
from cdktf_cdktf_provider_aws.lambda_permission import LambdaPermission
from cdktf_cdktf_provider_aws.wafv2_web_acl import (
    Wafv2WebAcl,
    Wafv2WebAclDefaultAction,
    Wafv2WebAclDefaultActionAllow,
    Wafv2WebAclRule,
    Wafv2WebAclRuleAction,
    Wafv2WebAclRuleActionBlock,
    Wafv2WebAclRuleOverrideAction,
    Wafv2WebAclRuleOverrideActionNone,
    Wafv2WebAclRuleVisibilityConfig,
    Wafv2WebAclVisibilityConfig,
)
from cdktf_cdktf_provider_aws.wafv2_web_acl_association import Wafv2WebAclAssociation
from cdktf_cdktf_provider_aws.wafv2_web_acl_logging_configuration import Wafv2WebAclLoggingConfiguration
from constructs import Construct

from iot_constructs.context import Context, Metric, export
from iot_constructs.function import Function
from iot_constructs.iam import service_role

STAGE = "v1"
# WAF rate-based rules count each IP's requests over 5 minutes.
WAF_RATE_WINDOW_SECONDS = 300
# What every access log line records, as JSON (CloudWatch Logs Insights parses it by field).
ACCESS_LOG_FORMAT = {
    "requestId": "$context.requestId",
    "ip": "$context.identity.sourceIp",
    "caller": "$context.identity.caller",
    "apiKeyId": "$context.identity.apiKeyId",
    "requestTime": "$context.requestTime",
    "httpMethod": "$context.httpMethod",
    "resourcePath": "$context.resourcePath",
    "status": "$context.status",
    "responseLength": "$context.responseLength",
    "latencyMs": "$context.responseLatency",
    "integrationLatencyMs": "$context.integrationLatency",
    "error": "$context.error.message",
    "validationError": "$context.error.validationErrorString",
}
# API Gateway's own errors (authentication, throttling, validation) answer in JSON like the functions do.
GATEWAY_ERROR_TEMPLATE = json.dumps(
    {"message": "$context.error.messageString", "detail": "$context.error.validationErrorString"}
)
# Each group with the rules whose action is overridden: the common rule set blocks bodies over 8 KB
# (SizeRestrictions_BODY), about 80 readings, while ingest accepts a body up to its own limit and refuses
# larger ones with a 400 that says so; that rule only counts.
AWS_MANAGED_RULE_GROUPS: dict[str, dict[str, Any]] = {
    "AWSManagedRulesCommonRuleSet": {
        "rule_action_override": [{"name": "SizeRestrictions_BODY", "action_to_use": {"count": {}}}]
    },
    "AWSManagedRulesKnownBadInputsRuleSet": {},
    "AWSManagedRulesAmazonIpReputationList": {},
}


def readings_request_schema(reading_schema: Path) -> dict[str, Any]:
    """The POST body: one reading or a non-empty batch, each valid against the ingest function's schema."""
    reading = json.loads(reading_schema.read_text())
    schema_version = reading.pop("$schema")
    return {
        "$schema": schema_version,
        "title": "Readings",
        "oneOf": [reading, {"type": "array", "minItems": 1, "items": reading}],
    }


@dataclass(frozen=True)
class CustomDomain:
    """A host name of your own for the API."""

    name: str
    """For example api.example.com; point its DNS at the stack output `api_domain_target`."""
    certificate_arn: str
    """An ACM certificate for `name`, in the stack's region."""


@dataclass(frozen=True)
class ApiSettings:
    """Throttling of the whole stage and per client (API key), execution logging, and the WAF."""

    reading_schema: Path
    """The JSON schema of one reading, which the gateway validates POST bodies against."""
    throttle_rate: int = 100
    throttle_burst: int = 200
    """Requests per second and burst for the whole stage."""
    client_rate: int = 50
    client_burst: int = 100
    client_quota_per_day: int = 100_000
    """Per API key (client), through the usage plan."""
    logging_level: str = "INFO"
    """Execution logging: "OFF", "ERROR" or "INFO"; request and response bodies are never logged."""
    manage_account_logging_role: bool = True
    """Create the account-wide role API Gateway logs with. One stack per account and region does."""
    custom_domain: CustomDomain | None = None
    """Serve the API on this domain with the TLS 1.2 security policy, and turn the default execute-api
    endpoint off: it accepts TLS 1.0, and its policy cannot be changed. Default: the execute-api endpoint."""
    firewall: bool = False
    """A WAF in front of the stage: AWS's managed rules, and a per-IP rate that admits one client at its
    usage plan rate (`client_rate`). Default: none."""


@dataclass(frozen=True)
class Route:
    """A method of the API, served by `function` through a Lambda proxy integration."""

    http_method: str
    resource: ApiGatewayResource
    path: str
    """The path as the invoke permission names it, with * for path parameters."""
    function: Function
    arguments: dict[str, Any]
    """The method's validation arguments."""


class Api(Construct):
    """The REST API devices and apps call: SigV4 (IAM) plus an API key on every method, throttled per client.

    `ingest` serves POST /v1/readings; `query` serves GET /v1/devices/{device_id}/readings (the raw window),
    .../latest (the device's latest reading) and .../rollups (hourly or daily history).
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        settings: ApiSettings,
        *,
        context: Context,
        ingest: Function,
        query: Function,
    ) -> None:
        super().__init__(scope, id)
        self._context = context
        naming = context.naming
        api = ApiGatewayRestApi(
            self,
            "api",
            name=naming.name("api"),
            description=f"Sensor readings API of {naming.project}-{naming.suffix}",
            endpoint_configuration=ApiGatewayRestApiEndpointConfiguration(types=["REGIONAL"]),
            disable_execute_api_endpoint=True if settings.custom_domain else None,
            lifecycle=TerraformResourceLifecycle(create_before_destroy=True),
        )
        self.rest_api_id: str = api.id
        request_schema = readings_request_schema(settings.reading_schema)
        definition: list[Any] = [request_schema]
        for route in self._routes(api, request_schema, ingest, query):
            definition += self._method(api, route)
        definition += self._gateway_responses()
        # A new deployment whenever the definition changes; the stage moves to it before the old one goes.
        static_definition = hashlib.sha256(json.dumps(definition[:1], sort_keys=True).encode()).hexdigest()
        deployment = ApiGatewayDeployment(
            self,
            "deployment",
            rest_api_id=self.rest_api_id,
            triggers={"redeployment": Fn.sha1(Fn.jsonencode([static_definition, *definition[1:]]))},
            lifecycle=TerraformResourceLifecycle(create_before_destroy=True),
        )
        if settings.manage_account_logging_role:
            self._account_logging_role()
        stage = self._stage(settings, deployment)
        key_id = self._usage_plan(settings, stage.stage_name)
        if settings.firewall:
            self._firewall(stage.arn, settings.client_rate * WAF_RATE_WINDOW_SECONDS)
        self.stage_name: str = stage.stage_name
        self.api_name: str = api.name
        invoke_url = (
            self._custom_domain(settings.custom_domain) if settings.custom_domain else stage.invoke_url
        )
        export(scope, "api_invoke_url", invoke_url, "Base URL of the readings API (SigV4 and an API key)")
        export(scope, "api_key_id", key_id, "Id of the default client's API key (the value stays in AWS)")

    def _custom_domain(self, domain: CustomDomain) -> str:
        """The domain, serving the stage with TLS 1.2 or later; returns the API's base URL on it."""
        name = ApiGatewayDomainName(
            self,
            "domain",
            domain_name=domain.name,
            regional_certificate_arn=domain.certificate_arn,
            endpoint_configuration=ApiGatewayDomainNameEndpointConfiguration(types=["REGIONAL"]),
            security_policy="TLS_1_2",
        )
        ApiGatewayBasePathMapping(
            self,
            "domain-mapping",
            api_id=self.rest_api_id,
            stage_name=self.stage_name,
            domain_name=name.domain_name,
            base_path=STAGE,
        )
        export(
            self,
            "api_domain_target",
            name.regional_domain_name,
            f"Point {domain.name} (a CNAME or alias record) at this",
        )
        return f"https://{domain.name}/{STAGE}"

    def _routes(
        self, api: ApiGatewayRestApi, request_schema: dict[str, Any], ingest: Function, query: Function
    ) -> list[Route]:
        api_id = self.rest_api_id
        readings_model = ApiGatewayModel(
            self,
            "readings-model",
            rest_api_id=api_id,
            name="Readings",
            content_type="application/json",
            schema=json.dumps(request_schema),
        )
        validate_body = ApiGatewayRequestValidator(
            self, "body-validator", rest_api_id=api_id, name="body", validate_request_body=True
        )
        validate_parameters = ApiGatewayRequestValidator(
            self,
            "parameters-validator",
            rest_api_id=api_id,
            name="parameters",
            validate_request_parameters=True,
        )

        def resource(id: str, parent_id: str, path_part: str) -> ApiGatewayResource:
            return ApiGatewayResource(self, id, rest_api_id=api_id, parent_id=parent_id, path_part=path_part)

        v1 = resource("v1", api.root_resource_id, "v1")
        device = resource("device", resource("devices", v1.id, "devices").id, "{device_id}")

        def device_route(path_part: str, query_parameters: tuple[str, ...]) -> Route:
            """GET /v1/devices/{device_id}/<path_part> by the query function; the gateway refuses requests
            without the device, and the function validates what the query string holds."""
            return Route(
                "GET",
                resource(f"device-{path_part}", device.id, path_part),
                f"v1/devices/*/{path_part}",
                query,
                {
                    "request_validator_id": validate_parameters.id,
                    "request_parameters": {
                        "method.request.path.device_id": True,
                        **{f"method.request.querystring.{name}": False for name in query_parameters},
                    },
                },
            )

        return [
            Route(
                "POST",
                resource("readings", v1.id, "readings"),
                "v1/readings",
                ingest,
                {
                    "request_validator_id": validate_body.id,
                    # Every content type, not only application/json, is validated against the model.
                    "request_models": {"$default": readings_model.name},
                },
            ),
            device_route("readings", ("from", "to", "limit", "next_token")),
            device_route("latest", ()),
            device_route("rollups", ("from", "to", "resolution", "limit", "next_token")),
        ]

    def _method(self, api: ApiGatewayRestApi, route: Route) -> list[Any]:
        """The method, its integration and the function's permission; returns what defines them."""
        id = f"{route.http_method.lower()}-{route.resource.node.id}"
        method = ApiGatewayMethod(
            self,
            id,
            rest_api_id=self.rest_api_id,
            resource_id=route.resource.id,
            http_method=route.http_method,
            authorization="AWS_IAM",
            api_key_required=True,
            **route.arguments,
        )
        integration = ApiGatewayIntegration(
            self,
            f"{id}-integration",
            rest_api_id=self.rest_api_id,
            resource_id=route.resource.id,
            http_method=method.http_method,
            type="AWS_PROXY",
            integration_http_method="POST",
            uri=route.function.invoke_arn,
        )
        LambdaPermission(
            self,
            f"{id}-permission",
            function_name=route.function.function_name,
            action="lambda:InvokeFunction",
            principal="apigateway.amazonaws.com",
            source_arn=f"{api.execution_arn}/*/{route.http_method}/{route.path}",
        )
        return [
            route.path,
            route.http_method,
            sorted(route.arguments),
            method.id,
            integration.id,
            integration.uri,
        ]

    def _gateway_responses(self) -> list[str]:
        """API Gateway's own errors (authentication, throttling, validation) in the functions' JSON form."""
        response_types = (("DEFAULT_4XX", None), ("DEFAULT_5XX", None), ("BAD_REQUEST_BODY", "400"))
        for response_type, status_code in response_types:
            ApiGatewayGatewayResponse(
                self,
                f"{response_type.lower().replace('_', '-')}-response",
                rest_api_id=self.rest_api_id,
                response_type=response_type,
                status_code=status_code,
                response_templates={"application/json": GATEWAY_ERROR_TEMPLATE},
            )
        return [response_type for response_type, _ in response_types]

    def _stage(self, settings: ApiSettings, deployment: ApiGatewayDeployment) -> ApiGatewayStage:
        naming = self._context.naming
        access_logs = self._context.log_group(
            self, "access-logs", f"/{naming.project}/{naming.suffix}/api-access"
        )
        stage = ApiGatewayStage(
            self,
            "stage",
            rest_api_id=self.rest_api_id,
            deployment_id=deployment.id,
            stage_name=STAGE,
            xray_tracing_enabled=True,
            access_log_settings=ApiGatewayStageAccessLogSettings(
                destination_arn=access_logs.arn, format=json.dumps(ACCESS_LOG_FORMAT)
            ),
        )
        ApiGatewayMethodSettings(
            self,
            "method-settings",
            rest_api_id=self.rest_api_id,
            stage_name=stage.stage_name,
            method_path="*/*",
            settings=ApiGatewayMethodSettingsSettings(
                metrics_enabled=True,
                logging_level=settings.logging_level,
                data_trace_enabled=False,
                throttling_rate_limit=settings.throttle_rate,
                throttling_burst_limit=settings.throttle_burst,
                caching_enabled=False,
            ),
        )
        return stage

    def _usage_plan(self, settings: ApiSettings, stage_name: str) -> str:
        """The clients' usage plan and the default client's key, whose id it returns."""
        naming = self._context.naming
        usage_plan = ApiGatewayUsagePlan(
            self,
            "usage-plan",
            name=naming.name("clients"),
            api_stages=[ApiGatewayUsagePlanApiStages(api_id=self.rest_api_id, stage=stage_name)],
            throttle_settings=ApiGatewayUsagePlanThrottleSettings(
                rate_limit=settings.client_rate, burst_limit=settings.client_burst
            ),
            quota_settings=ApiGatewayUsagePlanQuotaSettings(
                limit=settings.client_quota_per_day, period="DAY"
            ),
        )
        # API Gateway generates the key's value; only its id leaves the stack.
        key = ApiGatewayApiKey(self, "default-client-key", name=naming.name("default-client"))
        ApiGatewayUsagePlanKey(
            self, "default-client-plan", key_id=key.id, key_type="API_KEY", usage_plan_id=usage_plan.id
        )
        key_id: str = key.id
        return key_id

    def _account_logging_role(self) -> None:
        account = self._context.account
        role = service_role(
            self,
            "cloudwatch-role",
            name=self._context.naming.name("apigateway-logs"),
            service="apigateway.amazonaws.com",
            account=account,
        )
        IamRolePolicyAttachment(
            self,
            "cloudwatch-role-policy",
            role=role.name,
            policy_arn=f"arn:{account.partition}:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs",
        )
        ApiGatewayAccount(self, "account", cloudwatch_role_arn=role.arn)

    def _firewall(self, stage_arn: str, rate_limit: int) -> None:
        name = self._context.naming.name("api-waf")

        def visibility(metric: str) -> Wafv2WebAclRuleVisibilityConfig:
            return Wafv2WebAclRuleVisibilityConfig(
                cloudwatch_metrics_enabled=True, sampled_requests_enabled=True, metric_name=metric
            )

        # AWS's managed rule groups block by their own rules (KnownBadInputs covers Log4Shell); then one
        # IP may send `rate_limit` requests per 5 minutes. The bindings leave statements untyped: raw form.
        rules = [
            Wafv2WebAclRule(
                name=group,
                priority=priority,
                override_action=Wafv2WebAclRuleOverrideAction(none=Wafv2WebAclRuleOverrideActionNone()),
                statement={
                    "managed_rule_group_statement": {"vendor_name": "AWS", "name": group, **overrides}
                },
                visibility_config=visibility(group),
            )
            for priority, (group, overrides) in enumerate(AWS_MANAGED_RULE_GROUPS.items())
        ]
        rules.append(
            Wafv2WebAclRule(
                name="rate-per-ip",
                priority=len(rules),
                action=Wafv2WebAclRuleAction(block=Wafv2WebAclRuleActionBlock()),
                statement={"rate_based_statement": {"limit": rate_limit, "aggregate_key_type": "IP"}},
                visibility_config=visibility("rate-per-ip"),
            )
        )
        acl = Wafv2WebAcl(
            self,
            "firewall",
            name=name,
            scope="REGIONAL",
            default_action=Wafv2WebAclDefaultAction(allow=Wafv2WebAclDefaultActionAllow()),
            rule=rules,
            visibility_config=Wafv2WebAclVisibilityConfig(
                cloudwatch_metrics_enabled=True, sampled_requests_enabled=True, metric_name=name
            ),
        )
        Wafv2WebAclAssociation(self, "firewall-association", resource_arn=stage_arn, web_acl_arn=acl.arn)
        # WAF only logs to groups whose name starts with aws-waf-logs-.
        waf_logs = self._context.log_group(self, "firewall-logs", f"aws-waf-logs-{name}")
        Wafv2WebAclLoggingConfiguration(
            self, "firewall-logging", resource_arn=acl.arn, log_destination_configs=[waf_logs.arn]
        )

    def metric(self, name: str, statistic: str = "Sum") -> Metric:
        return Metric("AWS/ApiGateway", name, {"ApiName": self.api_name, "Stage": self.stage_name}, statistic)
