"""Finding things in a synthesized stack, with failures that say what was there instead."""

from typing import Any

Resource = dict[str, Any]


def resources(stack: dict[str, Any], type_: str, **where: Any) -> dict[str, Resource]:
    """The resources of `type_` whose arguments include every `where` item, by logical name."""
    return {
        name: body
        for name, body in stack.get("resource", {}).get(type_, {}).items()
        if all(body.get(key) == value for key, value in where.items())
    }


def one(stack: dict[str, Any], type_: str, **where: Any) -> Resource:
    """The single resource of `type_` matching `where`; fails listing what does exist."""
    found = resources(stack, type_, **where)
    assert len(found) == 1, (
        f"expected one {type_} with {where}, found {len(found)}; "
        f"all {type_}: {sorted(stack.get('resource', {}).get(type_, {}))}"
    )
    return next(iter(found.values()))


def data(stack: dict[str, Any], type_: str, name_prefix: str) -> Resource:
    """The data source of `type_` whose logical name starts with `name_prefix`."""
    found: list[Resource] = [
        body for name, body in stack.get("data", {}).get(type_, {}).items() if name.startswith(name_prefix)
    ]
    assert len(found) == 1, f"expected one data.{type_}.{name_prefix}*, found {len(found)}"
    return found[0]


def reference_target(reference: str) -> str:
    """`${aws_kms_key.logs-key_key_1234.arn}` -> `aws_kms_key.logs-key_key_1234`;
    `${data.aws_region.region_1234.name}` -> `data.aws_region.region_1234`."""
    assert reference.startswith("${") and reference.endswith("}"), f"not a reference: {reference!r}"
    parts = reference[2:-1].split(".")
    return ".".join(parts[:3] if parts[0] == "data" else parts[:2])


def policy_statements(stack: dict[str, Any], reference: str) -> list[dict[str, Any]]:
    """The statements of the policy document that `${data.aws_iam_policy_document.<name>.json}` names."""
    _, type_, name = reference_target(reference).split(".")
    statements: list[dict[str, Any]] = stack["data"][type_][name]["statement"]
    return statements
