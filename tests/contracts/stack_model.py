"""Reading a synthesized stack by what stays stable: names, tags and references, never logical ids.

A resource is found by its name (`<project>-<component>-<environment>`), by a tag, or by following a reference
(`${aws_dynamodb_table.<id>.arn}`) to whatever it names. ARNs are built from names, with placeholders for what
only exists once deployed (account, random suffixes), so that a policy's resources and the resources a call
touches compare as strings.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from ipaddress import IPv4Network
from typing import Any

Stack = dict[str, Any]
Body = dict[str, Any]

ACCOUNT = "123456789012"
PARTITION = "aws"
# Secrets Manager appends a hyphen and six random characters to a secret's name in its ARN.
SECRET_SUFFIX = "AbCdEf"

INTERPOLATION = re.compile(r"\$\{([^{}]*)\}")
FIELD = re.compile(r"\{(\w+)\}")
REFERENCE = re.compile(r"\$\{(aws_[a-z0-9_]+)\.([^.{}]+)\.([^{}]+)\}")


@dataclass(frozen=True, order=True)
class Address:
    type: str
    name: str

    def __str__(self) -> str:
        return f"{self.type}.{self.name}"


def resources(stack: Stack, type_: str) -> dict[Address, Body]:
    return {Address(type_, name): body for name, body in stack.get("resource", {}).get(type_, {}).items()}


def body(stack: Stack, address: Address) -> Body:
    found: Body = stack["resource"][address.type][address.name]
    return found


def referenced(value: object) -> Address | None:
    """The resource that a whole-string reference such as `${aws_sqs_queue.<id>.arn}` names."""
    if isinstance(value, str) and (match := REFERENCE.fullmatch(value)):
        return Address(match.group(1), match.group(2))
    return None


def refers_to(value: object, address: Address) -> bool:
    return referenced(value) == address


# --- the environment ---------------------------------------------------------------------------------


def _provider(stack: Stack) -> Body:
    provider: Body = stack["provider"]["aws"][0]
    return provider


def default_tags(stack: Stack) -> dict[str, str]:
    tags: dict[str, str] = _provider(stack)["default_tags"][0]["tags"]
    return tags


def environment(stack: Stack) -> str:
    return default_tags(stack)["environment"]


def component_name(stack: Stack, component: str) -> str:
    """`<project>-<component>-<environment>`, the name every resource of a component carries."""
    return f"{default_tags(stack)['project']}-{component}-{environment(stack)}"


def region(stack: Stack) -> str:
    value = _provider(stack).get("region", "us-east-1")
    return value if isinstance(value, str) and "${" not in value else "us-east-1"


def emulated(stack: Stack) -> bool:
    """The provider talks to a local AWS emulator (the local environment), not to AWS."""
    return bool(_provider(stack).get("endpoints"))


# --- attributes and ARNs ----------------------------------------------------------------------------

# How each resource type's ARN is built from its arguments.
ARN_FORMATS: dict[str, tuple[str, str]] = {
    "aws_dynamodb_table": ("dynamodb", "table/{name}"),
    "aws_kinesis_stream": ("kinesis", "stream/{name}"),
    "aws_sns_topic": ("sns", "{name}"),
    "aws_sqs_queue": ("sqs", "{name}"),
    "aws_ssm_parameter": ("ssm", "parameter/{parameter}"),
    "aws_secretsmanager_secret": ("secretsmanager", "secret:{name}-" + SECRET_SUFFIX),
    "aws_elasticache_replication_group": ("elasticache", "replicationgroup:{replication_group_id}"),
    "aws_kms_key": ("kms", "key/{key}"),
    "aws_cloudwatch_log_group": ("logs", "log-group:{name}"),
    "aws_ecr_repository": ("ecr", "repository/{name}"),
    "aws_efs_file_system": ("elasticfilesystem", "file-system/{creation_token}"),
    "aws_efs_access_point": ("elasticfilesystem", "access-point/{access_point}"),
    "aws_lambda_function": ("lambda", "function:{function_name}"),
    "aws_db_instance": ("rds", "db:{identifier}"),
    "aws_rds_cluster": ("rds", "cluster:{cluster_identifier}"),
}
# Databases whose master password RDS keeps in a secret: its ARN attribute, and how RDS names the secret.
MASTER_SECRET_ARN = "master_user_secret[0].secret_arn"
MASTER_SECRET_HOLDERS = {
    "aws_db_instance": ("db", "identifier"),
    "aws_rds_cluster": ("cluster", "cluster_identifier"),
}
# EC2 chooses these resources' ids: each stands as `<prefix>-<logical id>`.
EC2_ID_PREFIXES = {"aws_subnet": "subnet", "aws_security_group": "sg", "aws_vpc": "vpc"}
# The argument that names a resource of each kind the functions are told about.
IDENTITY = {
    "aws_dynamodb_table": "name",
    "aws_kinesis_stream": "name",
    "aws_sns_topic": "name",
    "aws_sqs_queue": "name",
    "aws_ssm_parameter": "name",
    "aws_secretsmanager_secret": "name",
    "aws_elasticache_replication_group": "replication_group_id",
}


def kms_key_label(stack: Stack, key: Address) -> str:
    """A key has no name: it is known by its alias (`alias/<project>-<purpose>-<env>`)."""
    for alias in resources(stack, "aws_kms_alias").values():
        if refers_to(alias.get("target_key_id"), key):
            return str(alias["name"]).removeprefix("alias/")
    return key.name


def _identity_field(stack: Stack, address: Address, field: str) -> str:
    resource = body(stack, address)
    if field == "key":
        return kms_key_label(stack, address)
    if field == "parameter":
        return interpolate(stack, resource["name"]).removeprefix("/")
    if field == "access_point":
        return str(resource.get("tags", {}).get("Name") or address.name)
    return interpolate(stack, resource[field])


def build_arn(stack: Stack, service: str, resource: str) -> str:
    return f"arn:{PARTITION}:{service}:{region(stack)}:{ACCOUNT}:{resource}"


def arn(stack: Stack, address: Address) -> str:
    if address.type not in ARN_FORMATS:
        raise ValueError(f"no ARN format for {address.type}: add one to ARN_FORMATS in {__name__}")
    service, resource = ARN_FORMATS[address.type]
    fields = {field: _identity_field(stack, address, field) for field in FIELD.findall(resource)}
    return build_arn(stack, service, resource.format(**fields))


def attribute(stack: Stack, address: Address, name: str) -> str:
    """The value of `${<address>.<name>}` once deployed, with placeholders where AWS chooses it."""
    resource = body(stack, address)
    if name == "arn" or (address.type == "aws_secretsmanager_secret" and name == "id"):
        return arn(stack, address)
    if address.type == "aws_kms_key" and name in ("id", "key_id"):
        return kms_key_label(stack, address)
    if address.type == "aws_db_instance" and name == "resource_id":
        return f"db-{resource['identifier']}"
    if address.type == "aws_rds_cluster" and name == "cluster_resource_id":
        return f"cluster-{resource['cluster_identifier']}"
    if address.type in MASTER_SECRET_HOLDERS and name == MASTER_SECRET_ARN:
        # RDS names the secret it manages rds!db-<uuid> or rds!cluster-<uuid>.
        kind, identifier = MASTER_SECRET_HOLDERS[address.type]
        return build_arn(stack, "secretsmanager", f"secret:rds!{kind}-{resource[identifier]}-{SECRET_SUFFIX}")
    if address.type in EC2_ID_PREFIXES and name == "id":
        return f"{EC2_ID_PREFIXES[address.type]}-{address.name}"
    if address.type == "aws_ecr_repository" and name == "repository_url":
        return f"{ACCOUNT}.dkr.ecr.{region(stack)}.amazonaws.com/{resource['name']}"
    if isinstance(resource.get(name), str):
        return interpolate(stack, resource[name])
    raise ValueError(f"cannot resolve {address}.{name}: teach {__name__}.attribute")


def evaluate(stack: Stack, expression: str) -> str:
    """One interpolation's value: `data.aws_region.<id>.name`, `aws_sns_topic.<id>.arn`, ..."""
    parts = expression.split(".")
    if parts[0] == "data":
        by_source = {"aws_region": region(stack), "aws_caller_identity": ACCOUNT, "aws_partition": PARTITION}
        if parts[1] in by_source:
            return by_source[parts[1]]
        raise ValueError(f"cannot resolve the data source in ${{{expression}}}")
    return attribute(stack, Address(parts[0], parts[1]), ".".join(parts[2:]))


def interpolate(stack: Stack, text: str) -> str:
    return INTERPOLATION.sub(lambda match: evaluate(stack, match.group(1)), text)


def resolve(stack: Stack, value: Any) -> Any:
    """`value` with every interpolation in its strings replaced, recursively."""
    if isinstance(value, str):
        return interpolate(stack, value)
    if isinstance(value, list):
        return [resolve(stack, item) for item in value]
    if isinstance(value, dict):
        return {key: resolve(stack, item) for key, item in value.items()}
    return value


def arn_of_value(stack: Stack, type_: str, value: str) -> tuple[str, Address | None]:
    """The ARN of the `type_` resource that `value` (a reference, a name or an ARN) stands for.

    A name or ARN of a resource outside the stack still gets its ARN, with no address.
    """
    address = referenced(value)
    if address is not None:
        if address.type != type_:
            raise ValueError(f"{value} names a {address.type}, not a {type_}")
        return arn(stack, address), address
    for candidate, resource in resources(stack, type_).items():
        if value in (resource.get(IDENTITY[type_]), arn(stack, candidate)):
            return arn(stack, candidate), candidate
    if value.startswith("arn:"):
        return value, None
    service, resource_format = ARN_FORMATS[type_]
    fields = {"name": value, "parameter": value.removeprefix("/"), "replication_group_id": value}
    return build_arn(stack, service, resource_format.format(**fields)), None


# --- compute, networks and routes -------------------------------------------------------------------


@dataclass(frozen=True)
class Placement:
    """Where a compute component or a data store sits in the VPC."""

    what: str
    address: Address
    security_groups: tuple[Address, ...]
    subnets: tuple[Address, ...]


def _addresses(values: list[str]) -> tuple[Address, ...]:
    found = [referenced(value) for value in values]
    if any(address is None for address in found):
        raise ValueError(f"expected references, found {values}")
    return tuple(sorted({address for address in found if address is not None}))


def lambda_function(stack: Stack, component: str) -> tuple[Address, Body] | None:
    name = component_name(stack, component)
    found = [(a, b) for a, b in resources(stack, "aws_lambda_function").items() if b["function_name"] == name]
    return found[0] if found else None


def ecs_service(stack: Stack, component: str) -> tuple[Address, Body] | None:
    name = component_name(stack, component)
    found = [(a, b) for a, b in resources(stack, "aws_ecs_service").items() if b["name"] == name]
    return found[0] if found else None


def task_definition(stack: Stack, service: Body) -> tuple[Address, Body]:
    address = referenced(service["task_definition"])
    assert address is not None, (
        f"the service's task definition is not a reference: {service['task_definition']}"
    )
    return address, body(stack, address)


def compute_placement(stack: Stack, component: str) -> Placement | None:
    """A Lambda function or ECS service named `<project>-<component>-<env>`, where it runs."""
    if function := lambda_function(stack, component):
        address, resource = function
        vpc = resource.get("vpc_config", {})
        return Placement(
            component,
            address,
            _addresses(vpc.get("security_group_ids", [])),
            _addresses(vpc.get("subnet_ids", [])),
        )
    if service := ecs_service(stack, component):
        address, resource = service
        network = resource.get("network_configuration", {})
        return Placement(
            component, address, _addresses(network.get("security_groups", [])), _addresses(network["subnets"])
        )
    return None


def subnet_cidr(stack: Stack, subnet: Address) -> IPv4Network:
    return IPv4Network(body(stack, subnet)["cidr_block"])


def vpc_cidrs(stack: Stack) -> list[IPv4Network]:
    return [IPv4Network(vpc["cidr_block"]) for vpc in resources(stack, "aws_vpc").values()]


def route_table_of(stack: Stack, subnet: Address) -> Address | None:
    for association in resources(stack, "aws_route_table_association").values():
        if refers_to(association.get("subnet_id"), subnet):
            return referenced(association["route_table_id"])
    return None


def routes(stack: Stack, table: Address) -> list[Body]:
    """The routes of a route table: its aws_route resources and any inline `route` blocks."""
    separate = [
        r for r in resources(stack, "aws_route").values() if refers_to(r.get("route_table_id"), table)
    ]
    inline: list[Body] = body(stack, table).get("route", [])
    return separate + inline


def default_routes(stack: Stack, table: Address) -> list[Body]:
    return [
        route
        for route in routes(stack, table)
        if route.get("destination_cidr_block") == "0.0.0.0/0"
        or route.get("destination_ipv6_cidr_block") == "::/0"
        or route.get("cidr_block") == "0.0.0.0/0"
        or route.get("ipv6_cidr_block") == "::/0"
    ]


def route_target(route: Body) -> str:
    """What a route sends its traffic to: `nat_gateway`, `internet_gateway`, ..."""
    for key in (
        "nat_gateway_id",
        "gateway_id",
        "egress_only_gateway_id",
        "transit_gateway_id",
        "vpc_endpoint_id",
    ):
        if key in route:
            target = referenced(route[key])
            return target.type.removeprefix("aws_") if target else key
    return "unknown"


# --- containers ---------------------------------------------------------------------------------------

_HCL_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|\s=\s|[A-Za-z_][\w-]*(?:\.[\w\-\[\]]+)+')


def _hcl_to_json(text: str) -> str:
    """The HCL object syntax of a `jsonencode(...)` argument as JSON; bare references become `${...}`."""

    def convert(match: re.Match[str]) -> str:
        token = match.group(0)
        if token.startswith('"'):
            return token
        if token.strip() == "=":
            return ": "
        return json.dumps("${" + token + "}")

    return _HCL_TOKEN.sub(convert, text)


def container_definitions(task: Body) -> list[dict[str, Any]]:
    text: str = task["container_definitions"]
    if text.startswith("${jsonencode(") and text.endswith(")}"):
        text = _hcl_to_json(text[len("${jsonencode(") : -len(")}")])
    definitions: list[dict[str, Any]] = json.loads(text)
    return definitions


def container_environment(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container.get("environment", [])}
