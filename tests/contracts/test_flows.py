"""The flow matrix (flows.py) against each stack's security groups and routes."""

import copy
from typing import Any

from tests.contracts.flows import (
    AWS_APIS,
    FLOWS,
    check_flows,
    data_route_problems,
    gateway_endpoint_problems,
    internet_ingress,
    route_problems,
    server_placement,
    unlisted_rules,
)
from tests.contracts.stack_model import component_name, environment, resources


def test_every_flow_of_the_matrix_is_allowed_by_the_clients_egress_and_the_servers_ingress(
    stack: dict[str, Any],
) -> None:
    problems = [
        f"{environment(stack)}: {r.flow.client} -> {r.flow.server}:{r.flow.port} ({r.flow.why}): {problem}"
        for r in check_flows(stack)
        if r.applies
        for problem in r.problems
    ]
    assert not problems, "\n".join(problems)


def test_no_security_group_admits_the_internet(stack: dict[str, Any]) -> None:
    found = internet_ingress(stack)
    assert not found, "\n".join(found)


def test_no_security_group_rule_opens_more_than_the_matrix_lists(stack: dict[str, Any]) -> None:
    found = unlisted_rules(stack)
    assert not found, "\n".join(found)


def test_compute_subnets_leave_the_vpc_only_through_nat_gateways(stack: dict[str, Any]) -> None:
    found = route_problems(stack)
    assert not found, "\n".join(found)


def test_data_stores_sit_in_subnets_without_a_route_to_the_internet(stack: dict[str, Any]) -> None:
    found = data_route_problems(stack)
    assert not found, "\n".join(found)


def test_s3_and_dynamodb_gateway_endpoints_serve_every_compute_subnet(stack: dict[str, Any]) -> None:
    found = gateway_endpoint_problems(stack)
    assert not found, "\n".join(found)


def test_the_matrix_names_every_function_service_and_data_store_of_the_stack(stack: dict[str, Any]) -> None:
    clients = {flow.client for flow in FLOWS}
    running = {
        body[key]
        for type_, key in (("aws_lambda_function", "function_name"), ("aws_ecs_service", "name"))
        for body in resources(stack, type_).values()
    }
    unknown = sorted(running - {component_name(stack, client) for client in clients})
    servers = {flow.server for flow in FLOWS if flow.server != AWS_APIS}
    stores = {
        "aws_elasticache_replication_group": "redis",
        "aws_db_instance": "postgres",
        "aws_rds_cluster": "postgres",
        "aws_efs_file_system": "artefacts",
    }
    unplaced = sorted(
        f"{type_} ({server})"
        for type_, server in stores.items()
        if resources(stack, type_) and (server not in servers or server_placement(stack, server) is None)
    )
    assert not unknown and not unplaced, (
        f"{environment(stack)}: the flow matrix does not know the compute {unknown} or the data stores "
        f"{unplaced}; expected every Lambda function and ECS service to be a client of FLOWS, every data "
        f"store a server"
    )


def test_the_check_reports_a_flow_whose_client_egress_is_gone(stack: dict[str, Any]) -> None:
    """The query function's egress to PostgreSQL removed: its flow is no longer allowed."""
    mutated = copy.deepcopy(stack)
    query = component_name(mutated, "query")
    groups = {
        f"${{{address}.id}}"
        for address, g in resources(mutated, "aws_security_group").items()
        if g["name"] == query
    }
    rules = mutated["resource"]["aws_vpc_security_group_egress_rule"]
    removed = [n for n, r in rules.items() if r["security_group_id"] in groups and r.get("from_port") == 5432]
    assert len(removed) == 1, f"{environment(stack)}: expected one egress rule of {query} on 5432"
    del rules[removed[0]]
    problems = [
        problem
        for result in check_flows(mutated)
        if (result.flow.client, result.flow.server) == ("query", "postgres")
        for problem in result.problems
    ]
    assert any("no egress rule of query allows tcp 5432 to postgres" in p for p in problems), problems
