"""The platform's network flows, declared once, and what the security groups and routes make of them.

`FLOWS` is the matrix: who talks to whom on which port. Every flow needs the client's egress and the
server's ingress (by referenced security group, or a CIDR covering the other side's subnets); AWS APIs are
reached on 443 through a VPC endpoint (whose security group must admit the client) or a NAT gateway. Nothing
else may be open. A flow applies where the stack has its server: the local environment has no Redis, so no
Redis flows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Network, ip_network

from tests.contracts.stack_model import (
    Address,
    Body,
    Placement,
    Stack,
    body,
    compute_placement,
    default_routes,
    emulated,
    environment,
    referenced,
    refers_to,
    resources,
    route_table_of,
    route_target,
    subnet_cidr,
    vpc_cidrs,
)

AWS_APIS = "AWS APIs"


@dataclass(frozen=True)
class Flow:
    client: str
    """A Lambda function or ECS service: `<project>-<client>-<env>`."""
    server: str
    """A data store (see SERVERS) or AWS_APIS."""
    port: int
    why: str
    services: tuple[str, ...] = ()
    """For AWS_APIS: the services called, as VPC endpoints name them (com.amazonaws.<region>.<service>)."""


FLOWS: tuple[Flow, ...] = (
    Flow(
        "ingest",
        AWS_APIS,
        443,
        "PutRecords; the Redis token's secret",
        ("kinesis-streams", "secretsmanager"),
    ),
    Flow("ingest", "redis", 6379, "the owners map: which client owns each device"),
    Flow(
        "processor", AWS_APIS, 443, "raw and aggregate writes, alerts, thresholds", ("dynamodb", "sns", "ssm")
    ),
    Flow(
        "query",
        AWS_APIS,
        443,
        "raw readings; the Redis token's secret; the RDS CA bundle (HTTPS, through NAT)",
        ("dynamodb", "secretsmanager"),
    ),
    Flow("query", "redis", 6379, "the latest reading per device, the owners map"),
    Flow("query", "postgres", 5432, "hourly rollups, as iot_reader"),
    Flow(
        "redis-rotation",
        AWS_APIS,
        443,
        "the token secret, ModifyReplicationGroup",
        ("secretsmanager", "elasticache"),
    ),
    Flow("redis-rotation", "redis", 6379, "testSecret and finishSecret check the token on every node"),
    Flow(
        "worker",
        AWS_APIS,
        443,
        "the stream; image, logs and secrets at task start; the RDS CA bundle (HTTPS, through NAT)",
        ("kinesis-streams", "ecr.api", "ecr.dkr", "s3", "logs", "secretsmanager"),
    ),
    Flow("worker", "redis", 6379, "shard leases, checkpoints, latest reading per device, the owners map"),
    Flow("worker", "postgres", 5432, "migrations (admin), device registry and hourly rollups (iot_worker)"),
    Flow("worker", "artefacts", 2049, "NFS: the compressed raw archive on EFS"),
)
# Clients that exist only for one data store: the stack has them where it has the store (no Redis, no
# rotation function).
CLIENTS_OF_ONE_STORE = {"redis-rotation": "redis"}
GATEWAY_SERVICES = ("dynamodb", "s3")
INTERNET = ("0.0.0.0/0", "::/0")


# --- where the servers are ------------------------------------------------------------------------------


def _ids(values: list[str]) -> tuple[Address, ...]:
    return tuple(sorted({a for a in (referenced(v) for v in values) if a is not None}))


def _subnet_group(stack: Stack, type_: str, name_reference: str) -> tuple[Address, ...]:
    group = referenced(name_reference)
    if group is None:
        found = [b for b in resources(stack, type_).values() if b["name"] == name_reference]
        return _ids(found[0]["subnet_ids"]) if found else ()
    return _ids(body(stack, group)["subnet_ids"])


def server_placement(stack: Stack, server: str) -> Placement | None:
    """The data store a flow goes to, where it sits; None where the stack has none."""
    if server == "redis":
        for address, group in resources(stack, "aws_elasticache_replication_group").items():
            subnets = _subnet_group(stack, "aws_elasticache_subnet_group", group["subnet_group_name"])
            return Placement(server, address, _ids(group.get("security_group_ids", [])), subnets)
    if server == "postgres":
        candidates = {**resources(stack, "aws_rds_cluster"), **resources(stack, "aws_db_instance")}
        for address, database in candidates.items():
            aurora_member = address.type == "aws_db_instance" and "cluster_identifier" in database
            if "postgres" in database.get("engine", "") and not aurora_member:
                subnets = _subnet_group(stack, "aws_db_subnet_group", database["db_subnet_group_name"])
                return Placement(server, address, _ids(database.get("vpc_security_group_ids", [])), subnets)
    if server == "artefacts":
        for address in resources(stack, "aws_efs_file_system"):
            targets = [
                t
                for t in resources(stack, "aws_efs_mount_target").values()
                if refers_to(t["file_system_id"], address)
            ]
            groups = _ids([g for t in targets for g in t.get("security_groups", [])])
            return Placement(server, address, groups, _ids([t["subnet_id"] for t in targets]))
    return None


@dataclass(frozen=True)
class Endpoint:
    service: str
    kind: str  # Interface or Gateway
    security_groups: tuple[Address, ...]
    route_tables: tuple[Address, ...]


def endpoints(stack: Stack) -> dict[str, Endpoint]:
    found = {}
    for endpoint in resources(stack, "aws_vpc_endpoint").values():
        name = endpoint["service_name"]
        service = name.split("}.", 1)[1] if "}." in name else name.split(".", 3)[3]
        found[service] = Endpoint(
            service,
            endpoint.get("vpc_endpoint_type", "Gateway"),
            _ids(endpoint.get("security_group_ids", [])),
            _ids(endpoint.get("route_table_ids", [])),
        )
    return found


# --- security group rules ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    direction: str  # ingress or egress
    group: Address
    protocol: str  # tcp, udp, icmp or -1 (all)
    from_port: int
    to_port: int
    cidr: str | None
    peer: Address | None  # the referenced security group
    prefix_list: str | None
    description: str

    def covers(self, port: int) -> bool:
        return self.protocol in ("-1", "all") or (
            self.protocol in ("tcp", "6") and self.from_port <= port <= self.to_port
        )

    def summary(self, stack: Stack) -> str:
        """`tcp 6379 from <group>`: what the rule opens, from its own group's side."""
        ports = (
            "all ports"
            if self.protocol in ("-1", "all")
            else f"{self.protocol} {self.from_port}-{self.to_port}"
        )
        if self.from_port == self.to_port and self.protocol not in ("-1", "all"):
            ports = f"{self.protocol} {self.from_port}"
        other = group_name(stack, self.peer) if self.peer else (self.cidr or self.prefix_list or "?")
        return f"{ports} {'from' if self.direction == 'ingress' else 'to'} {other}"

    def describe(self, stack: Stack) -> str:
        return (
            f"{group_name(stack, self.group)} {self.direction} {self.summary(stack)} ({self.description!r})"
        )


def group_name(stack: Stack, group: Address) -> str:
    return str(body(stack, group).get("name", group.name))


def rules(stack: Stack) -> list[Rule]:
    """Every security group rule: the per-rule resources, aws_security_group_rule and inline blocks."""
    found = []
    for direction in ("ingress", "egress"):
        for rule in resources(stack, f"aws_vpc_security_group_{direction}_rule").values():
            group = referenced(rule["security_group_id"])
            assert group is not None, f"rule on an unknown group: {rule}"
            protocol = str(rule["ip_protocol"])
            found.append(
                Rule(
                    direction,
                    group,
                    protocol,
                    int(rule.get("from_port", 0)),
                    int(rule.get("to_port", 65535)),
                    rule.get("cidr_ipv4") or rule.get("cidr_ipv6"),
                    referenced(rule.get("referenced_security_group_id")),
                    rule.get("prefix_list_id"),
                    str(rule.get("description", "")),
                )
            )
    for rule in resources(stack, "aws_security_group_rule").values():
        group = referenced(rule["security_group_id"])
        assert group is not None
        found += _legacy_rules(rule["type"], group, rule)
    for group, security_group in resources(stack, "aws_security_group").items():
        for direction in ("ingress", "egress"):
            for rule in security_group.get(direction, []):
                found += _legacy_rules(direction, group, rule)
    return found


def _legacy_rules(direction: str, group: Address, rule: Body) -> list[Rule]:
    peers: list[tuple[str | None, Address | None]] = [
        (cidr, None) for cidr in rule.get("cidr_blocks", []) + rule.get("ipv6_cidr_blocks", [])
    ]
    peers += [(None, referenced(g)) for g in rule.get("security_groups", [])]
    if rule.get("source_security_group_id"):
        peers.append((None, referenced(rule["source_security_group_id"])))
    if rule.get("self"):
        peers.append((None, group))
    return [
        Rule(
            direction,
            group,
            str(rule["protocol"]),
            int(rule["from_port"]),
            int(rule["to_port"]),
            cidr,
            peer,
            None,
            str(rule.get("description", "")),
        )
        for cidr, peer in peers
    ]


def _cidr_covers(cidr: str | None, stack: Stack, subnets: tuple[Address, ...]) -> bool:
    if cidr is None or ":" in cidr or not subnets:
        return False
    network = IPv4Network(cidr)
    return all(subnet_cidr(stack, subnet).subnet_of(network) for subnet in subnets)


def _inside_vpc(stack: Stack, cidr: str | None) -> bool:
    if cidr is None:
        return False
    network = ip_network(cidr)
    return isinstance(network, IPv4Network) and any(network.subnet_of(vpc) for vpc in vpc_cidrs(stack))


def _reaches(rule: Rule, stack: Stack, other: Placement, port: int) -> bool:
    """Whether a rule admits `port` to or from `other`: by its security group or a CIDR over its subnets."""
    return rule.covers(port) and (
        (rule.peer is not None and rule.peer in other.security_groups)
        or _cidr_covers(rule.cidr, stack, other.subnets)
    )


# --- the checks -------------------------------------------------------------------------------------------


@dataclass
class FlowResult:
    flow: Flow
    applies: bool
    egress: list[str] = field(default_factory=list)
    """The client rules that allow the flow."""
    ingress: list[str] = field(default_factory=list)
    """The server rules that allow it; for AWS APIs, the path to each service."""
    problems: list[str] = field(default_factory=list)


def check_flows(stack: Stack) -> list[FlowResult]:
    """Each flow of the matrix: whether both sides allow it, and what allows it."""
    all_rules = rules(stack)
    results = []
    for flow in FLOWS:
        client = compute_placement(stack, flow.client)
        server = None if flow.server == AWS_APIS else server_placement(stack, flow.server)
        applies = server is not None if flow.server != AWS_APIS else client_expected(stack, flow.client)
        result = FlowResult(flow, applies)
        results.append(result)
        if not result.applies:
            continue
        if client is None:
            result.problems.append(
                f"the stack has {flow.server} but no {flow.client} (function or ECS service)"
            )
            continue
        if server is None:
            _check_aws_apis(stack, flow, client, all_rules, result)
            continue
        egress = [r for r in all_rules if r.direction == "egress" and r.group in client.security_groups]
        ingress = [r for r in all_rules if r.direction == "ingress" and r.group in server.security_groups]
        result.egress = [r.summary(stack) for r in egress if _reaches(r, stack, server, flow.port)]
        result.ingress = [r.summary(stack) for r in ingress if _reaches(r, stack, client, flow.port)]
        if not result.egress:
            result.problems.append(
                f"no egress rule of {flow.client} allows tcp {flow.port} to {flow.server}; "
                f"{flow.client}'s egress is: {[r.describe(stack) for r in egress] or 'none'}"
            )
        if not result.ingress:
            result.problems.append(
                f"no ingress rule of {flow.server} admits tcp {flow.port} from {flow.client}; "
                f"{flow.server}'s ingress is: {[r.describe(stack) for r in ingress] or 'none'}"
            )
    return results


def client_expected(stack: Stack, client: str) -> bool:
    """A client is part of the stack unless it exists for a data store the stack does not have."""
    store = CLIENTS_OF_ONE_STORE.get(client)
    return store is None or server_placement(stack, store) is not None


def _check_aws_apis(
    stack: Stack, flow: Flow, client: Placement, all_rules: list[Rule], result: FlowResult
) -> None:
    egress = [r for r in all_rules if r.direction == "egress" and r.group in client.security_groups]
    tables = {route_table_of(stack, subnet) for subnet in client.subnets}
    nat = bool(tables) and all(
        table is not None and any(route_target(r) == "nat_gateway" for r in default_routes(stack, table))
        for table in tables
    )
    internet_egress = [r for r in egress if r.covers(flow.port) and r.cidr == "0.0.0.0/0"]
    available = endpoints(stack)
    for service in flow.services:
        endpoint = available.get(service)
        if endpoint is not None and endpoint.kind == "Interface":
            admitting = [
                r.summary(stack)
                for r in all_rules
                if r.direction == "ingress"
                and r.group in endpoint.security_groups
                and _reaches(r, stack, client, flow.port)
            ]
            to_endpoint = [
                r
                for r in egress
                if r.covers(flow.port) and (r.cidr == "0.0.0.0/0" or r.peer in endpoint.security_groups)
            ]
            if admitting and to_endpoint:
                result.ingress.append(f"{service}: endpoint ({admitting[0]})")
            else:
                result.problems.append(
                    f"{service} has an interface endpoint (private DNS), but "
                    + (
                        "its security groups do not admit tcp 443 from the client"
                        if not admitting
                        else "the client has no egress to it"
                    )
                )
        elif endpoint is not None and all(t in endpoint.route_tables for t in tables if t is not None):
            if internet_egress or any(r.prefix_list and r.covers(flow.port) for r in egress):
                result.ingress.append(f"{service}: gateway endpoint")
            else:
                result.problems.append(
                    f"{service}: gateway endpoint, but no egress on 443 to its prefix list"
                )
        elif nat or emulated(stack):
            if internet_egress:
                result.ingress.append(f"{service}: {'the emulator' if emulated(stack) else 'NAT gateway'}")
            else:
                result.problems.append(f"{service}: reached through NAT, but no egress on 443 to 0.0.0.0/0")
        else:
            result.problems.append(
                f"{service}: no route: no NAT gateway for the client's subnets and no {service} endpoint"
            )
    result.egress = [r.summary(stack) for r in egress if r.covers(flow.port)]
    if not result.egress:
        result.problems.append(f"no egress rule of {flow.client} allows tcp {flow.port}")


def _known_groups(stack: Stack) -> tuple[dict[Address, list[Flow]], dict[Address, list[Flow]]]:
    """Security group -> the flows it is the client side of, and the flows it is the server side of."""
    as_client: dict[Address, list[Flow]] = {}
    as_server: dict[Address, list[Flow]] = {}
    available = endpoints(stack)
    for flow in FLOWS:
        client = compute_placement(stack, flow.client)
        for group in client.security_groups if client else ():
            as_client.setdefault(group, []).append(flow)
        if flow.server == AWS_APIS:
            servers = [g for s in flow.services if s in available for g in available[s].security_groups]
        else:
            server = server_placement(stack, flow.server)
            servers = list(server.security_groups) if server else []
        for group in servers:
            as_server.setdefault(group, []).append(flow)
    return as_client, as_server


def _listed(stack: Stack, rule: Rule, flows: list[Flow]) -> bool:
    """Whether a rule opens no more than one of `flows` needs: its one port, to or from its other side."""
    for flow in flows:
        if rule.protocol not in ("tcp", "6") or not (rule.from_port == rule.to_port == flow.port):
            continue
        if rule.direction == "egress":
            if flow.server == AWS_APIS:
                available = endpoints(stack)
                endpoint_groups = {
                    g for s in flow.services if s in available for g in available[s].security_groups
                }
                if rule.cidr == "0.0.0.0/0" or rule.peer in endpoint_groups or rule.prefix_list:
                    return True
                continue
            server = server_placement(stack, flow.server)
            if server and (
                rule.peer in server.security_groups
                or (_inside_vpc(stack, rule.cidr) and _cidr_covers(rule.cidr, stack, server.subnets))
            ):
                return True
        else:
            client = compute_placement(stack, flow.client)
            if client and (
                rule.peer in client.security_groups
                or (_inside_vpc(stack, rule.cidr) and _cidr_covers(rule.cidr, stack, client.subnets))
            ):
                return True
    return False


def unlisted_rules(stack: Stack) -> list[str]:
    """Every rule that opens more than the matrix lists: a port, a peer or a direction no flow needs."""
    as_client, as_server = _known_groups(stack)
    found = []
    for rule in rules(stack):
        flows = (as_client if rule.direction == "egress" else as_server).get(rule.group, [])
        if not _listed(stack, rule, flows):
            listed = sorted({f"{f.client} -> {f.server}:{f.port}" for f in flows}) or ["nothing"]
            found.append(
                f"{environment(stack)}: {rule.describe(stack)} is not in the flow matrix, which lists "
                f"{rule.direction} for this group only for {listed}"
            )
    return found


def internet_ingress(stack: Stack) -> list[str]:
    return [
        f"{environment(stack)}: {rule.describe(stack)} admits the internet; expected no ingress from "
        f"{INTERNET}"
        for rule in rules(stack)
        if rule.direction == "ingress" and rule.cidr in INTERNET
    ]


def compute_subnets(stack: Stack) -> dict[Address, str]:
    """Subnet -> a client of the matrix that runs in it."""
    found: dict[Address, str] = {}
    for flow in FLOWS:
        client = compute_placement(stack, flow.client)
        for subnet in client.subnets if client else ():
            found.setdefault(subnet, flow.client)
    return found


def data_subnets(stack: Stack) -> dict[Address, str]:
    found: dict[Address, str] = {}
    for server in sorted({flow.server for flow in FLOWS if flow.server != AWS_APIS}):
        placement = server_placement(stack, server)
        for subnet in placement.subnets if placement else ():
            found.setdefault(subnet, server)
    return found


def route_problems(stack: Stack) -> list[str]:
    """Compute subnets: an explicit route table whose default route, if any, is a NAT gateway (where the
    environment has NAT gateways: always)."""
    has_nat = bool(resources(stack, "aws_nat_gateway"))
    found = []
    for subnet, client in sorted(compute_subnets(stack).items()):
        name = body(stack, subnet).get("tags", {}).get("Name", subnet.name)
        table = route_table_of(stack, subnet)
        if table is None:
            found.append(f"{environment(stack)}: subnet {name} ({client}) has no route table association")
            continue
        targets = sorted({route_target(route) for route in default_routes(stack, table)})
        expected = ["nat_gateway"] if has_nat else []
        if targets != expected:
            found.append(
                f"{environment(stack)}: subnet {name} ({client}) routes 0.0.0.0/0 to {targets or 'nothing'}; "
                f"expected {expected or 'no default route'} (the stack has "
                f"{len(resources(stack, 'aws_nat_gateway'))} NAT gateways)"
            )
    return found


def data_route_problems(stack: Stack) -> list[str]:
    found = []
    for subnet, server in sorted(data_subnets(stack).items()):
        name = body(stack, subnet).get("tags", {}).get("Name", subnet.name)
        table = route_table_of(stack, subnet)
        targets = sorted({route_target(route) for route in default_routes(stack, table)}) if table else []
        if targets:
            found.append(
                f"{environment(stack)}: {server} sits in subnet {name}, which routes 0.0.0.0/0 to {targets}; "
                "expected data stores in isolated subnets with no route to the internet"
            )
    return found


def gateway_endpoint_problems(stack: Stack) -> list[str]:
    available = endpoints(stack)
    found = []
    for service in GATEWAY_SERVICES:
        endpoint = available.get(service)
        for subnet, client in sorted(compute_subnets(stack).items()):
            table = route_table_of(stack, subnet)
            if endpoint is None or endpoint.kind != "Gateway" or table not in endpoint.route_tables:
                name = body(stack, subnet).get("tags", {}).get("Name", subnet.name)
                found.append(
                    f"{environment(stack)}: the route table of {name} ({client}) is not attached to a "
                    f"{service} "
                    f"gateway endpoint; found endpoint {endpoint}"
                )
    return found
