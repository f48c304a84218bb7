from ipaddress import IPv4Network
from typing import Any

import pytest

from stacks.config import PROJECT, environment
from tests.conftest import Synth
from tests.synth_json import data, one, reference_target, resources

# (environment, AZs, NAT gateways, interface endpoints required at least)
EXPECTED = {
    "dev": (2, 1, set()),
    "staging": (2, 1, {"kinesis-streams", "secretsmanager", "logs", "sts", "ecr.api", "ecr.dkr"}),
    "prod": (3, 3, {"kinesis-streams", "secretsmanager", "logs", "sts", "ecr.api", "ecr.dkr"}),
    "local": (2, 0, set()),
}


def standing(name: str) -> str:
    return f"{PROJECT}-{name}"


def subnets_by_tier(stack: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    tiers: dict[str, list[dict[str, Any]]] = {}
    for subnet in resources(stack, "aws_subnet").values():
        tiers.setdefault(subnet["tags"]["tier"], []).append(subnet)
    return tiers


@pytest.mark.parametrize("stack_name", [standing(name) for name in EXPECTED])
def test_three_tiers_span_the_configured_zones_with_cidrs_carved_from_the_vpc(
    stack: dict[str, Any], stack_name: str
) -> None:
    az_count, _, _ = EXPECTED[stack_name.removeprefix(f"{PROJECT}-")]
    vpc = one(stack, "aws_vpc")
    vpc_cidr = IPv4Network(vpc["cidr_block"])
    tiers = subnets_by_tier(stack)
    assert sorted(tiers) == ["isolated", "private", "public"]
    blocks = []
    for subnets in tiers.values():
        assert len({s["availability_zone"] for s in subnets}) == az_count == len(subnets)
        blocks += [IPv4Network(s["cidr_block"]) for s in subnets]
    assert all(block.subnet_of(vpc_cidr) for block in blocks)
    assert not any(a.overlaps(b) for i, a in enumerate(blocks) for b in blocks[i + 1 :])
    assert all(s["map_public_ip_on_launch"] is False for s in tiers["public"])


@pytest.mark.parametrize("stack_name", [standing(name) for name in EXPECTED])
def test_private_subnets_egress_through_the_configured_nat_gateways(
    stack: dict[str, Any], stack_name: str
) -> None:
    az_count, nat_count, _ = EXPECTED[stack_name.removeprefix(f"{PROJECT}-")]
    nats = resources(stack, "aws_nat_gateway")
    assert len(nats) == nat_count
    nat_routes = [r for r in resources(stack, "aws_route").values() if "nat_gateway_id" in r]
    assert len(nat_routes) == (az_count if nat_count else 0)
    assert {reference_target(r["nat_gateway_id"]) for r in nat_routes} == {
        f"aws_nat_gateway.{name}" for name in nats
    }
    internet_routes = [r for r in resources(stack, "aws_route").values() if "gateway_id" in r]
    assert len(internet_routes) == 1, "only the public route table reaches the internet gateway"


def test_isolated_subnets_have_no_route_out(stack: dict[str, Any]) -> None:
    isolated_tables = [
        n
        for n, t in resources(stack, "aws_route_table").items()
        if t["tags"]["Name"].startswith(f"{PROJECT}-isolated-")
    ]
    assert len(isolated_tables) == 1
    routed_tables = {reference_target(r["route_table_id"]) for r in resources(stack, "aws_route").values()}
    assert f"aws_route_table.{isolated_tables[0]}" not in routed_tables


def test_s3_and_dynamodb_are_reached_through_gateway_endpoints_from_private_and_isolated_tiers(
    stack: dict[str, Any],
) -> None:
    gateways = resources(stack, "aws_vpc_endpoint", vpc_endpoint_type="Gateway")
    assert sorted(e["service_name"].rsplit(".", 1)[1] for e in gateways.values()) == ["dynamodb", "s3"]
    private_and_isolated = len(subnets_by_tier(stack)["private"]) + 1
    assert all(len(e["route_table_ids"]) == private_and_isolated for e in gateways.values())


@pytest.mark.parametrize("stack_name", [standing(name) for name in EXPECTED])
def test_interface_endpoints_sit_in_private_subnets_behind_https_from_the_vpc_only(
    stack: dict[str, Any], stack_name: str
) -> None:
    env = stack_name.removeprefix(f"{PROJECT}-")
    _, _, required = EXPECTED[env]
    interfaces = resources(stack, "aws_vpc_endpoint", vpc_endpoint_type="Interface")
    services = {e["service_name"].split("}.", 1)[1] for e in interfaces.values()}
    assert services >= required
    if not required:
        assert not interfaces
        assert not resources(stack, "aws_security_group", name=f"{PROJECT}-endpoints-{env}")
        return
    (endpoint_group,) = resources(stack, "aws_security_group", name=f"{PROJECT}-endpoints-{env}")
    (rule,) = [
        r
        for r in resources(stack, "aws_vpc_security_group_ingress_rule").values()
        if r["security_group_id"] == f"${{aws_security_group.{endpoint_group}.id}}"
    ]
    assert (rule["ip_protocol"], rule["from_port"], rule["to_port"]) == ("tcp", 443, 443)
    assert rule["cidr_ipv4"] == one(stack, "aws_vpc")["cidr_block"]
    private_subnets = len(subnets_by_tier(stack)["private"])
    for endpoint in interfaces.values():
        assert endpoint["private_dns_enabled"] is True
        assert len(endpoint["subnet_ids"]) == private_subnets


def test_the_default_security_group_admits_nothing(stack: dict[str, Any]) -> None:
    default = one(stack, "aws_default_security_group")
    assert "ingress" not in default and "egress" not in default


@pytest.mark.parametrize("name", ["dev", "staging", "prod", "local"])
def test_every_flow_is_logged_to_an_encrypted_log_group_kept_as_configured(synth: Synth, name: str) -> None:
    stack = synth.stacks[standing(name)]
    flow_log = one(stack, "aws_flow_log")
    assert flow_log["traffic_type"] == "ALL"
    log_group_name = reference_target(flow_log["log_destination"]).split(".")[1]
    log_group = stack["resource"]["aws_cloudwatch_log_group"][log_group_name]
    assert log_group["retention_in_days"] == environment(name, {}).log_retention_days
    key = stack["resource"]["aws_kms_key"][reference_target(log_group["kms_key_id"]).split(".")[1]]
    assert key["enable_key_rotation"] is True
    assert key["deletion_window_in_days"] == environment(name, {}).keys.deletion_window_days


def test_the_flow_log_role_is_assumable_by_this_accounts_flow_logs_and_writes_only_its_log_group(
    stack: dict[str, Any],
) -> None:
    trust = data(stack, "aws_iam_policy_document", "network_flow-log-role-trust")["statement"][0]
    assert trust["principals"] == [{"identifiers": ["vpc-flow-logs.amazonaws.com"], "type": "Service"}]
    assert trust["condition"][0]["variable"] == "aws:SourceAccount"
    writes = data(stack, "aws_iam_policy_document", "network_write-flow-logs-")["statement"]
    assert len(writes) == 1
    assert not any(action == "*" or action.endswith(":*") for action in writes[0]["actions"])
    assert all(resource.startswith("${aws_cloudwatch_log_group.") for resource in writes[0]["resources"])


def test_every_flow_to_a_data_store_is_allowed_on_both_sides_and_nothing_else_leaves_compute(
    stack: dict[str, Any],
) -> None:
    """A store's ingress from a client's group is matched by the client's egress to the store's group on
    the same port, and the other way round; compute's only other egress is HTTPS to AWS APIs."""
    ingress = {
        (rule["referenced_security_group_id"], rule["security_group_id"], rule["from_port"], rule["to_port"])
        for rule in resources(stack, "aws_vpc_security_group_ingress_rule").values()
        if "referenced_security_group_id" in rule
    }
    egress_rules = resources(stack, "aws_vpc_security_group_egress_rule").values()
    egress = {
        (rule["security_group_id"], rule["referenced_security_group_id"], rule["from_port"], rule["to_port"])
        for rule in egress_rules
        if "referenced_security_group_id" in rule
    }
    assert ingress == egress
    assert all(
        rule.get("cidr_ipv4") == "0.0.0.0/0" and (rule["from_port"], rule["to_port"]) == (443, 443)
        for rule in egress_rules
        if "referenced_security_group_id" not in rule
    )
    environment = stack["provider"]["aws"][0]["default_tags"][0]["tags"]["environment"]
    components = {
        f"${{aws_security_group.{n}.id}}": g["name"]
        .removeprefix(f"{PROJECT}-")
        .removesuffix(f"-{environment}")
        for n, g in resources(stack, "aws_security_group").items()
    }
    flows = {(components[client], components[server], port) for client, server, port, _ in egress}
    expected = {("worker", "postgres", 5432), ("worker", "artefacts", 2049), ("query", "postgres", 5432)}
    if resources(stack, "aws_elasticache_replication_group"):
        expected |= {
            ("worker", "redis", 6379),
            ("redis-rotation", "redis", 6379),
            ("ingest", "redis", 6379),
            ("query", "redis", 6379),
        }
    assert flows == expected
