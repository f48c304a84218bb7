"""Roles and grants, always built from policy documents (never hand-written JSON)."""

from collections.abc import Sequence

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


def allow(actions: Sequence[str], resources: Sequence[str]) -> DataAwsIamPolicyDocumentStatement:
    return DataAwsIamPolicyDocumentStatement(actions=list(actions), resources=list(resources))


def service_role(scope: Construct, id: str, *, name: str, service: str, account: Account) -> IamRole:
    """A role that only `service` (for example "lambda.amazonaws.com") assumes, and only for `account`."""
    trust = DataAwsIamPolicyDocument(
        scope,
        f"{id}-trust",
        statement=[
            DataAwsIamPolicyDocumentStatement(
                actions=["sts:AssumeRole"],
                principals=[
                    DataAwsIamPolicyDocumentStatementPrincipals(type="Service", identifiers=[service])
                ],
                # Guards against the confused deputy: the service acts for this account only.
                condition=[
                    DataAwsIamPolicyDocumentStatementCondition(
                        test="StringEquals", variable="aws:SourceAccount", values=[account.id]
                    )
                ],
            )
        ],
    )
    return IamRole(scope, id, name=name, assume_role_policy=trust.json)


def grant(
    scope: Construct, role: IamRole, name: str, statements: Sequence[DataAwsIamPolicyDocumentStatement]
) -> None:
    """Attach `statements` to `role` as its inline policy `name` (unique per role)."""
    id = f"{name}-{role.friendly_unique_id}"
    document = DataAwsIamPolicyDocument(scope, f"{id}-document", statement=list(statements))
    IamRolePolicy(scope, id, role=role.id, name=name, policy=document.json)
