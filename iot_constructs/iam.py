"""Roles and grants, always built from policy documents (never hand-written JSON).

The permission model follows aws-cdk's: anything that can receive grants is `Grantable`; the resource that
is protected owns its `grant_*` methods, which return the `Grant` they attached; an encrypted resource's
grant includes the permission on its key, which the key itself states (kms.py).
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from cdktf_cdktf_provider_aws.data_aws_iam_policy_document import (
    DataAwsIamPolicyDocument,
    DataAwsIamPolicyDocumentStatement,
    DataAwsIamPolicyDocumentStatementCondition,
    DataAwsIamPolicyDocumentStatementPrincipals,
)
from cdktf_cdktf_provider_aws.iam_role import IamRole
from cdktf_cdktf_provider_aws.iam_role_policy import IamRolePolicy
from constructs import Construct

from iot_constructs.account import Account


@dataclass(frozen=True)
class Condition:
    test: str
    variable: str
    values: tuple[str, ...]

    def statement_condition(self) -> DataAwsIamPolicyDocumentStatementCondition:
        return DataAwsIamPolicyDocumentStatementCondition(
            test=self.test, variable=self.variable, values=list(self.values)
        )


@dataclass(frozen=True)
class Permission:
    """`actions` allowed on `resources`, under every one of `conditions`."""

    actions: tuple[str, ...]
    resources: tuple[str, ...]
    conditions: tuple[Condition, ...] = ()

    def statement(self) -> DataAwsIamPolicyDocumentStatement:
        return DataAwsIamPolicyDocumentStatement(
            actions=list(self.actions),
            resources=list(self.resources),
            condition=[condition.statement_condition() for condition in self.conditions] or None,
        )


def allow(actions: Sequence[str], resources: Sequence[str], *conditions: Condition) -> Permission:
    return Permission(tuple(actions), tuple(resources), conditions)


class Grantable(Protocol):
    """Anything that can receive grants: a function, the worker's task, a service role."""

    @property
    def grant_principal(self) -> IamRole: ...


@dataclass(frozen=True)
class Grant:
    """What a `grant_*` method attached: the grantee's inline policy `policy_name` with `permissions`."""

    grantee: Grantable
    policy_name: str
    permissions: tuple[Permission, ...]

    @property
    def actions(self) -> frozenset[str]:
        return frozenset(action for permission in self.permissions for action in permission.actions)


def grant(scope: Construct, grantee: Grantable, name: str, *permissions: Permission) -> Grant:
    """Attach `permissions` to `grantee`'s role as its inline policy `name` (unique per role)."""
    role = grantee.grant_principal
    id = f"{name}-{role.friendly_unique_id}"
    document = DataAwsIamPolicyDocument(
        scope, f"{id}-document", statement=[permission.statement() for permission in permissions]
    )
    IamRolePolicy(scope, id, role=role.id, name=name, policy=document.json)
    return Grant(grantee, name, permissions)


@dataclass(frozen=True)
class ServiceRole:
    """A role that one AWS service assumes for this account; grantable like the constructs that own one."""

    role: IamRole

    @property
    def grant_principal(self) -> IamRole:
        return self.role

    @property
    def arn(self) -> str:
        arn: str = self.role.arn
        return arn

    @property
    def name(self) -> str:
        name: str = self.role.name
        return name


def service_role(
    scope: Construct, id: str, *, name: str, service: str, account: Account, source_account: bool = True
) -> ServiceRole:
    """A role that only `service` (for example "lambda.amazonaws.com") assumes, and only for `account`.

    `source_account=False` leaves out the aws:SourceAccount condition, for a service that does not send it
    when it assumes the role: the condition would refuse the service itself."""
    # Guards against the confused deputy: the service acts for this account only.
    guard = [
        DataAwsIamPolicyDocumentStatementCondition(
            test="StringEquals", variable="aws:SourceAccount", values=[account.id]
        )
    ]
    trust = DataAwsIamPolicyDocument(
        scope,
        f"{id}-trust",
        statement=[
            DataAwsIamPolicyDocumentStatement(
                actions=["sts:AssumeRole"],
                principals=[
                    DataAwsIamPolicyDocumentStatementPrincipals(type="Service", identifiers=[service])
                ],
                condition=guard if source_account else None,
            )
        ],
    )
    return ServiceRole(IamRole(scope, id, name=name, assume_role_policy=trust.json))


def deny_insecure_transport(resource: str) -> DataAwsIamPolicyDocumentStatement:
    """The resource-policy statement that refuses every request not made over TLS."""
    return DataAwsIamPolicyDocumentStatement(
        sid="DenyInsecureTransport",
        effect="Deny",
        actions=["*"],
        resources=[resource],
        principals=[DataAwsIamPolicyDocumentStatementPrincipals(type="*", identifiers=["*"])],
        condition=[
            DataAwsIamPolicyDocumentStatementCondition(
                test="Bool", variable="aws:SecureTransport", values=["false"]
            )
        ],
    )
