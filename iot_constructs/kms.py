from dataclasses import dataclass

from cdktf_cdktf_provider_aws.data_aws_iam_policy_document import (
    DataAwsIamPolicyDocument,
    DataAwsIamPolicyDocumentStatement,
    DataAwsIamPolicyDocumentStatementCondition,
    DataAwsIamPolicyDocumentStatementPrincipals,
)
from cdktf_cdktf_provider_aws.kms_alias import KmsAlias
from cdktf_cdktf_provider_aws.kms_key import KmsKey
from constructs import Construct

from iot_constructs.account import Account


@dataclass(frozen=True)
class EncryptionKeyProps:
    """A customer-managed KMS key with yearly automatic rotation and an alias."""

    account: Account
    alias: str
    """The alias, without the `alias/` prefix."""
    description: str
    deletion_window_days: int
    """Days between scheduling the key's deletion and its destruction (7 to 30)."""
    cloudwatch_logs: bool = False
    """Let CloudWatch Logs encrypt this account's and region's log groups with the key. Default: it cannot."""
    cloudwatch_alarms: bool = False
    """Let this account's CloudWatch alarms publish to topics encrypted with the key. Default: they cannot."""


class EncryptionKey(Construct):
    """A KMS key that only this account administers, and that only the named AWS services may use."""

    def __init__(self, scope: Construct, id: str, props: EncryptionKeyProps) -> None:
        super().__init__(scope, id)
        if not 7 <= props.deletion_window_days <= 30:
            raise ValueError(
                f"deletion_window_days must be between 7 and 30, got {props.deletion_window_days}"
            )
        account = props.account
        partition = account.partition
        statements = [
            # Key administration stays with the account; IAM policies grant use to principals.
            DataAwsIamPolicyDocumentStatement(
                sid="AccountAdministers",
                actions=["kms:*"],
                resources=["*"],  # in a key policy, "*" means this key
                principals=[
                    DataAwsIamPolicyDocumentStatementPrincipals(
                        type="AWS", identifiers=[f"arn:{partition}:iam::{account.id}:root"]
                    )
                ],
            )
        ]
        if props.cloudwatch_logs:
            region = account.region
            statements.append(
                DataAwsIamPolicyDocumentStatement(
                    sid="CloudWatchLogsEncrypts",
                    actions=[
                        "kms:Encrypt*",
                        "kms:Decrypt*",
                        "kms:ReEncrypt*",
                        "kms:GenerateDataKey*",
                        "kms:Describe*",
                    ],
                    resources=["*"],
                    principals=[
                        DataAwsIamPolicyDocumentStatementPrincipals(
                            type="Service", identifiers=[f"logs.{region}.amazonaws.com"]
                        )
                    ],
                    condition=[
                        DataAwsIamPolicyDocumentStatementCondition(
                            test="ArnLike",
                            variable="kms:EncryptionContext:aws:logs:arn",
                            values=[f"arn:{partition}:logs:{region}:{account.id}:log-group:*"],
                        )
                    ],
                )
            )
        if props.cloudwatch_alarms:
            statements.append(
                DataAwsIamPolicyDocumentStatement(
                    sid="CloudWatchAlarmsPublish",
                    actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                    resources=["*"],
                    principals=[
                        DataAwsIamPolicyDocumentStatementPrincipals(
                            type="Service", identifiers=["cloudwatch.amazonaws.com"]
                        )
                    ],
                    condition=[
                        DataAwsIamPolicyDocumentStatementCondition(
                            test="StringEquals", variable="aws:SourceAccount", values=[account.id]
                        )
                    ],
                )
            )
        policy = DataAwsIamPolicyDocument(self, "policy", statement=statements)
        key = KmsKey(
            self,
            "key",
            description=props.description,
            enable_key_rotation=True,
            deletion_window_in_days=props.deletion_window_days,
            policy=policy.json,
        )
        KmsAlias(self, "alias", name=f"alias/{props.alias}", target_key_id=key.key_id)
        self.key_arn: str = key.arn
