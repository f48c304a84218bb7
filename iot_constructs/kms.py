"""Customer-managed KMS keys, the permissions to use them, and the platform's four keys."""

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
from iot_constructs.iam import Permission, allow
from iot_constructs.naming import Naming

# Kinesis, SQS, SNS and Secrets Manager encrypt with a data key from KMS on write and decrypt it on read.
ENCRYPT_ACTIONS = ("kms:GenerateDataKey", "kms:Decrypt")
DECRYPT_ACTIONS = ("kms:Decrypt",)
# A Kinesis producer only asks for data keys; it never reads what it wrote.
GENERATE_DATA_KEY_ACTIONS = ("kms:GenerateDataKey",)
# What CloudWatch Logs does with a log group's key.
LOGS_ACTIONS = ("kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*")


class EncryptionKey(Construct):
    """A KMS key with yearly automatic rotation and an alias, that only this account administers and that
    only the named AWS services may use on its own; principals get it through the grants below."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        account: Account,
        alias: str,
        description: str,
        deletion_window_days: int,
        cloudwatch_logs: bool = False,
        cloudwatch_alarms: bool = False,
    ) -> None:
        """`alias` without the `alias/` prefix; `deletion_window_days` (7 to 30) between scheduling the
        key's deletion and its destruction. `cloudwatch_logs`: let CloudWatch Logs encrypt this account's
        and region's log groups with it; `cloudwatch_alarms`: let this account's alarms publish to topics
        encrypted with it. By default neither service can use the key."""
        super().__init__(scope, id)
        if not 7 <= deletion_window_days <= 30:
            raise ValueError(f"deletion_window_days must be between 7 and 30, got {deletion_window_days}")
        statements = [
            # Key administration stays with the account; IAM policies grant use to principals.
            DataAwsIamPolicyDocumentStatement(
                sid="AccountAdministers",
                actions=["kms:*"],
                resources=["*"],  # in a key policy, "*" means this key
                principals=[
                    DataAwsIamPolicyDocumentStatementPrincipals(
                        type="AWS", identifiers=[f"arn:{account.partition}:iam::{account.id}:root"]
                    )
                ],
            )
        ]
        if cloudwatch_logs:
            statements.append(_cloudwatch_logs_statement(account))
        if cloudwatch_alarms:
            statements.append(
                _service_statement("CloudWatchAlarmsPublish", "cloudwatch.amazonaws.com", account)
            )
        policy = DataAwsIamPolicyDocument(self, "policy", statement=statements)
        key = KmsKey(
            self,
            "key",
            description=description,
            enable_key_rotation=True,
            deletion_window_in_days=deletion_window_days,
            policy=policy.json,
        )
        KmsAlias(self, "alias", name=f"alias/{alias}", target_key_id=key.key_id)
        self.key_arn: str = key.arn

    def grant_encrypt(self) -> Permission:
        """What writing to a resource encrypted with this key needs (the service asks for a data key)."""
        return allow(ENCRYPT_ACTIONS, [self.key_arn])

    def grant_decrypt(self) -> Permission:
        """What reading a resource encrypted with this key needs; for a DynamoDB table, also writing it
        (DynamoDB decrypts the table key on the caller's behalf for either)."""
        return allow(DECRYPT_ACTIONS, [self.key_arn])

    def grant_generate_data_key(self) -> Permission:
        """What putting records on a Kinesis stream encrypted with this key needs."""
        return allow(GENERATE_DATA_KEY_ACTIONS, [self.key_arn])


def _cloudwatch_logs_statement(account: Account) -> DataAwsIamPolicyDocumentStatement:
    region = account.region
    return DataAwsIamPolicyDocumentStatement(
        sid="CloudWatchLogsEncrypts",
        actions=list(LOGS_ACTIONS),
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
                values=[account.arn("logs", "log-group:*")],
            )
        ],
    )


def _service_statement(sid: str, service: str, account: Account) -> DataAwsIamPolicyDocumentStatement:
    return DataAwsIamPolicyDocumentStatement(
        sid=sid,
        actions=["kms:Decrypt", "kms:GenerateDataKey*"],
        resources=["*"],
        principals=[DataAwsIamPolicyDocumentStatementPrincipals(type="Service", identifiers=[service])],
        condition=[
            DataAwsIamPolicyDocumentStatementCondition(
                test="StringEquals", variable="aws:SourceAccount", values=[account.id]
            )
        ],
    )


@dataclass(frozen=True)
class KeySettings:
    deletion_window_days: int = 30
    """Days between scheduling a key's deletion and its destruction (7 to 30)."""


class Keys:
    """The platform's four keys, one per kind of data, so that a grant on one never opens another:
    log groups, the reading stream (and its dead letters), the alert topic, and the data stores."""

    def __init__(self, scope: Construct, settings: KeySettings, *, naming: Naming, account: Account) -> None:
        def key(id: str, purpose: str, **service_access: bool) -> EncryptionKey:
            return EncryptionKey(
                scope,
                f"{id}-key",
                account=account,
                alias=naming.name(id),
                description=f"Encrypts {purpose} of {naming.project}-{naming.suffix}",
                deletion_window_days=settings.deletion_window_days,
                **service_access,
            )

        self.logs = key("logs", "the log groups", cloudwatch_logs=True)
        self.stream = key("stream", "the reading stream and its dead-letter queue")
        self.alerts = key("alerts", "the alert topic", cloudwatch_alarms=True)
        self.data = key("data", "the data stores, their secrets, function settings, dead letters and images")
