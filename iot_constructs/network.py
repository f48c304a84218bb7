"""The VPC: three subnet tiers across availability zones, NAT, VPC endpoints and flow logs."""

from dataclasses import dataclass
from ipaddress import IPv4Network
from typing import Literal, Protocol, get_args

from cdktf_cdktf_provider_aws.default_security_group import DefaultSecurityGroup
from cdktf_cdktf_provider_aws.eip import Eip
from cdktf_cdktf_provider_aws.flow_log import FlowLog
from cdktf_cdktf_provider_aws.internet_gateway import InternetGateway
from cdktf_cdktf_provider_aws.nat_gateway import NatGateway
from cdktf_cdktf_provider_aws.route import Route
from cdktf_cdktf_provider_aws.route_table import RouteTable
from cdktf_cdktf_provider_aws.route_table_association import RouteTableAssociation
from cdktf_cdktf_provider_aws.security_group import SecurityGroup
from cdktf_cdktf_provider_aws.subnet import Subnet
from cdktf_cdktf_provider_aws.vpc import Vpc
from cdktf_cdktf_provider_aws.vpc_endpoint import VpcEndpoint
from cdktf_cdktf_provider_aws.vpc_security_group_egress_rule import VpcSecurityGroupEgressRule
from cdktf_cdktf_provider_aws.vpc_security_group_ingress_rule import VpcSecurityGroupIngressRule
from constructs import Construct, Node

from iot_constructs.context import Context, export
from iot_constructs.iam import allow, grant, service_role

# Subnet tiers in the order their CIDR blocks are carved from the VPC's.
TIERS = ("public", "private", "isolated")
MAX_AZ_COUNT = 4
GATEWAY_ENDPOINTS = ("s3", "dynamodb")


NatMode = Literal["none", "single", "per-az"]
"""How private subnets reach the internet: "none" (only through the VPC endpoints), "single" (one NAT
gateway in the first AZ for all: cheaper, but one AZ's outage cuts egress) or "per-az" (survives it)."""


@dataclass(frozen=True)
class NetworkSettings:
    cidr: str
    """The VPC's IPv4 block, a /16 to /24; each subnet gets a sixteenth of it."""
    availability_zones: tuple[str, ...]
    """The 2 to 4 availability zones the subnets span, named explicitly so that the set never changes
    under a plan when AWS opens a new zone."""
    nat_mode: NatMode = "single"
    interface_endpoints: tuple[str, ...] = ()
    """AWS services reached through interface endpoints in the private subnets, as in
    `com.amazonaws.<region>.<service>` (for example "kinesis-streams"). Default: none, through NAT."""

    def __post_init__(self) -> None:
        if not 16 <= IPv4Network(self.cidr).prefixlen <= 24:
            raise ValueError(f"cidr must be a /16 to /24 block, got {self.cidr}")
        if self.nat_mode not in get_args(NatMode):
            raise ValueError(f"nat_mode must be one of {get_args(NatMode)}, got {self.nat_mode!r}")
        if not 2 <= len(self.availability_zones) <= MAX_AZ_COUNT:
            raise ValueError(f"give 2 to {MAX_AZ_COUNT} availability_zones, got {self.availability_zones}")


class Network(Construct):
    """A VPC with public, private (NAT egress) and isolated subnets across the given availability zones.

    S3 and DynamoDB are reached through gateway endpoints from the private and isolated tiers; the
    default security group admits nothing; every flow is logged to an encrypted log group.
    """

    def __init__(self, scope: Construct, id: str, settings: NetworkSettings, *, context: Context) -> None:
        super().__init__(scope, id)
        self._naming = naming = context.naming
        vpc = Vpc(
            self,
            "vpc",
            cidr_block=settings.cidr,
            enable_dns_support=True,
            enable_dns_hostnames=True,  # interface endpoints resolve through private DNS
            tags={"Name": naming.name("vpc")},
        )
        self.vpc_id: str = vpc.id  # each read of a resource's attribute is a call into the jsii kernel
        DefaultSecurityGroup(
            self, "default-security-group", vpc_id=self.vpc_id
        )  # adopting it strips its rules
        self.vpc_cidr = settings.cidr
        self.availability_zones = settings.availability_zones
        self._region = context.account.region

        subnet_ids = self._subnets(settings)
        self.public_subnet_ids: list[str] = subnet_ids["public"]
        self.private_subnet_ids: list[str] = subnet_ids["private"]
        self.isolated_subnet_ids: list[str] = subnet_ids["isolated"]
        route_table_ids = [*self._private_routes(self._nat_gateways(settings)), self._isolated_routes()]
        for service in GATEWAY_ENDPOINTS:
            VpcEndpoint(
                self,
                f"{service}-endpoint",
                vpc_id=self.vpc_id,
                service_name=f"com.amazonaws.{self._region}.{service}",
                vpc_endpoint_type="Gateway",
                route_table_ids=route_table_ids,
                tags={"Name": naming.name(service)},
            )
        self.endpoint_security_group_id = (
            self._interface_endpoints(settings) if settings.interface_endpoints else None
        )
        self._flow_logs(context)

        export(scope, "vpc_id", self.vpc_id, "The platform's VPC")
        export(scope, "private_subnet_ids", self.private_subnet_ids, "Subnets with NAT egress, for compute")
        export(
            scope,
            "isolated_subnet_ids",
            self.isolated_subnet_ids,
            "Subnets without internet routes, for data stores",
        )

    def _subnets(self, settings: NetworkSettings) -> dict[str, list[str]]:
        blocks = list(IPv4Network(settings.cidr).subnets(prefixlen_diff=4))
        return {
            tier: [
                Subnet(
                    self,
                    f"{tier}-subnet-{az}",
                    vpc_id=self.vpc_id,
                    cidr_block=str(blocks[t * MAX_AZ_COUNT + az]),
                    availability_zone=zone,
                    map_public_ip_on_launch=False,  # nothing here gets a public IP implicitly
                    tags={"Name": self._naming.name(f"{tier}-{az}"), "tier": tier},
                ).id
                for az, zone in enumerate(settings.availability_zones)
            ]
            for t, tier in enumerate(TIERS)
        }

    def _nat_gateways(self, settings: NetworkSettings) -> list[NatGateway]:
        """The internet gateway, the public subnets' routes to it, and the NAT gateways the mode asks for."""
        naming = self._naming
        igw = InternetGateway(self, "internet-gateway", vpc_id=self.vpc_id, tags={"Name": naming.name("igw")})
        public_routes_id = RouteTable(
            self, "public-routes", vpc_id=self.vpc_id, tags={"Name": naming.name("public")}
        ).id
        Route(
            self,
            "public-default-route",
            route_table_id=public_routes_id,
            destination_cidr_block="0.0.0.0/0",
            gateway_id=igw.id,
        )
        for az, subnet_id in enumerate(self.public_subnet_ids):
            RouteTableAssociation(
                self, f"public-routes-{az}", subnet_id=subnet_id, route_table_id=public_routes_id
            )
        nat_count = {"none": 0, "single": 1, "per-az": len(settings.availability_zones)}[settings.nat_mode]
        return [
            NatGateway(
                self,
                f"nat-{az}",
                allocation_id=Eip(
                    self, f"nat-ip-{az}", domain="vpc", tags={"Name": naming.name(f"nat-{az}")}
                ).id,
                subnet_id=self.public_subnet_ids[az],
                tags={"Name": naming.name(f"nat-{az}")},
                depends_on=[igw],
            )
            for az in range(nat_count)
        ]

    def _private_routes(self, nat_gateways: list[NatGateway]) -> list[str]:
        """One private route table per AZ whatever the NAT mode, so changing the mode never replaces them."""
        table_ids = []
        for az, subnet_id in enumerate(self.private_subnet_ids):
            table_id = RouteTable(
                self,
                f"private-routes-{az}",
                vpc_id=self.vpc_id,
                tags={"Name": self._naming.name(f"private-{az}")},
            ).id
            RouteTableAssociation(
                self, f"private-routes-{az}-association", subnet_id=subnet_id, route_table_id=table_id
            )
            if nat_gateways:
                Route(
                    self,
                    f"private-default-route-{az}",
                    route_table_id=table_id,
                    destination_cidr_block="0.0.0.0/0",
                    nat_gateway_id=nat_gateways[az % len(nat_gateways)].id,
                )
            table_ids.append(table_id)
        return table_ids

    def _isolated_routes(self) -> str:
        """The isolated subnets' one route table: no route out of the VPC."""
        table_id: str = RouteTable(
            self, "isolated-routes", vpc_id=self.vpc_id, tags={"Name": self._naming.name("isolated")}
        ).id
        for az, subnet_id in enumerate(self.isolated_subnet_ids):
            RouteTableAssociation(self, f"isolated-routes-{az}", subnet_id=subnet_id, route_table_id=table_id)
        return table_id

    def _interface_endpoints(self, settings: NetworkSettings) -> str:
        """The interface endpoints in the private subnets and their security group, which it returns."""
        naming = self._naming
        security_group_id: str = SecurityGroup(
            self,
            "endpoint-security-group",
            name=naming.name("endpoints"),
            description="HTTPS from inside the VPC to its interface endpoints",
            vpc_id=self.vpc_id,
            tags={"Name": naming.name("endpoints")},
        ).id
        VpcSecurityGroupIngressRule(
            self,
            "endpoint-https-ingress",
            security_group_id=security_group_id,
            description="HTTPS from the VPC",
            ip_protocol="tcp",
            from_port=443,
            to_port=443,
            cidr_ipv4=settings.cidr,
        )
        for service in settings.interface_endpoints:
            VpcEndpoint(
                self,
                f"{service.replace('.', '-')}-endpoint",
                vpc_id=self.vpc_id,
                service_name=f"com.amazonaws.{self._region}.{service}",
                vpc_endpoint_type="Interface",
                private_dns_enabled=True,
                subnet_ids=self.private_subnet_ids,
                security_group_ids=[security_group_id],
                tags={"Name": naming.name(service.replace(".", "-"))},
            )
        return security_group_id

    def compute_security_group(self, scope: Construct, name: str, purpose: str) -> str:
        """A security group for compute in `scope`: no inbound, HTTPS out to AWS APIs (through the NAT
        gateways and VPC endpoints); data stores add their own flows (connect). Returns its id."""
        security_group = SecurityGroup(
            scope, "security-group", name=name, description=f"{name}: {purpose}", vpc_id=self.vpc_id
        )
        VpcSecurityGroupEgressRule(
            scope,
            "https-egress",
            security_group_id=security_group.id,
            description="HTTPS to AWS APIs, through the NAT gateways and VPC endpoints",
            ip_protocol="tcp",
            from_port=443,
            to_port=443,
            cidr_ipv4="0.0.0.0/0",
        )
        security_group_id: str = security_group.id
        return security_group_id

    def _flow_logs(self, context: Context) -> None:
        naming = context.naming
        log_group = context.log_group(
            self, "flow-log-group", f"/{naming.project}/{naming.suffix}/vpc-flow-logs"
        )
        role = service_role(
            self,
            "flow-log-role",
            name=naming.name("flow-logs"),
            service="vpc-flow-logs.amazonaws.com",
            account=context.account,
        )
        grant(
            self,
            role,
            "write-flow-logs",
            allow(
                ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
                [log_group.arn, f"{log_group.arn}:log-stream:*"],
            ),
        )
        FlowLog(
            self,
            "flow-log",
            vpc_id=self.vpc_id,
            traffic_type="ALL",
            log_destination_type="cloud-watch-logs",
            log_destination=log_group.arn,
            iam_role_arn=role.arn,
            max_aggregation_interval=60,
            tags={"Name": naming.name("flow-logs")},
        )


class Client(Protocol):
    """Compute with a security group of its own: a function or the worker."""

    @property
    def node(self) -> Node: ...

    @property
    def security_group_id(self) -> str: ...


def connect(
    client: Client, name: str, store: Construct, store_group_id: str, port: int, protocol: str
) -> None:
    """Let `client` (called `name` in rule names) reach `store` on `port`, and nothing else of it: the
    client's egress names the store's security group, the store's ingress names the client's. Data stores
    admit security groups only."""
    VpcSecurityGroupIngressRule(
        store,
        f"ingress-from-{name}",
        security_group_id=store_group_id,
        description=f"{protocol} from {name}",
        ip_protocol="tcp",
        from_port=port,
        to_port=port,
        referenced_security_group_id=client.security_group_id,
    )
    VpcSecurityGroupEgressRule(
        client,  # type: ignore[arg-type]  # every Client is a construct
        f"egress-to-{store.node.id}",
        security_group_id=client.security_group_id,
        description=f"{protocol} to {store.node.id}",
        ip_protocol="tcp",
        from_port=port,
        to_port=port,
        referenced_security_group_id=store_group_id,
    )
