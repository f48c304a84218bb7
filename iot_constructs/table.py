"""DynamoDB tables."""

from cdktf_cdktf_provider_aws.dynamodb_table import (
    DynamodbTable,
    DynamodbTableAttribute,
    DynamodbTablePointInTimeRecovery,
    DynamodbTableServerSideEncryption,
    DynamodbTableTtl,
)
from constructs import Construct

from iot_constructs.context import Metric
from iot_constructs.iam import Grant, Grantable, allow, grant
from iot_constructs.kms import EncryptionKey


class Table(Construct):
    """An on-demand DynamoDB table keyed by two strings, encrypted with `key`, with point-in-time recovery.

    Items expire at the epoch second their `ttl_attribute` holds; items without it never expire.
    `deletion_protection` refuses to delete the table (in Terraform and in AWS) until it is turned off.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        name: str,
        partition_key: str,
        sort_key: str,
        ttl_attribute: str,
        key: EncryptionKey,
        deletion_protection: bool,
    ) -> None:
        super().__init__(scope, id)
        table = DynamodbTable(
            self,
            "table",
            name=name,
            billing_mode="PAY_PER_REQUEST",
            hash_key=partition_key,
            range_key=sort_key,
            attribute=[
                DynamodbTableAttribute(name=partition_key, type="S"),
                DynamodbTableAttribute(name=sort_key, type="S"),
            ],
            point_in_time_recovery=DynamodbTablePointInTimeRecovery(enabled=True),
            server_side_encryption=DynamodbTableServerSideEncryption(enabled=True, kms_key_arn=key.key_arn),
            ttl=DynamodbTableTtl(attribute_name=ttl_attribute, enabled=True),
            deletion_protection_enabled=deletion_protection,
        )
        self.table_name: str = table.name
        self.table_arn: str = table.arn
        self._key = key

    def grant(self, grantee: Grantable, name: str, *actions: str) -> Grant:
        """Let `grantee` call `actions` on the table (inline policy `name`), decrypting with its key."""
        return grant(self, grantee, name, allow(actions, [self.table_arn]), self._key.grant_decrypt())

    def metric_throttle_events(self) -> dict[str, Metric]:
        """Throttled reads and writes, by kind."""
        dimensions = {"TableName": self.table_name}
        return {
            "reads": Metric("AWS/DynamoDB", "ReadThrottleEvents", dimensions),
            "writes": Metric("AWS/DynamoDB", "WriteThrottleEvents", dimensions),
        }
