"""The reading stream, the dead-letter queues of what could not be processed, and the alert topic."""

from dataclasses import dataclass
from typing import Literal, get_args

from cdktf_cdktf_provider_aws.data_aws_iam_policy_document import (
    DataAwsIamPolicyDocument,
    DataAwsIamPolicyDocumentStatement,
    DataAwsIamPolicyDocumentStatementCondition,
    DataAwsIamPolicyDocumentStatementPrincipals,
)
from cdktf_cdktf_provider_aws.iam_role import IamRole
from cdktf_cdktf_provider_aws.kinesis_stream import KinesisStream, KinesisStreamStreamModeDetails
from cdktf_cdktf_provider_aws.sns_topic import SnsTopic
from cdktf_cdktf_provider_aws.sns_topic_policy import SnsTopicPolicy
from cdktf_cdktf_provider_aws.sqs_queue import SqsQueue
from cdktf_cdktf_provider_aws.sqs_queue_policy import SqsQueuePolicy
from constructs import Construct

from iot_constructs.account import Account
from iot_constructs.iam import allow, grant
from iot_constructs.kms import EncryptionKey
from iot_constructs.naming import Naming

STREAM_READ_ACTIONS = (
    "kinesis:DescribeStream",
    "kinesis:DescribeStreamSummary",
    "kinesis:GetRecords",
    "kinesis:GetShardIterator",
    "kinesis:ListShards",
    "kinesis:SubscribeToShard",
)
STREAM_WRITE_ACTIONS = ("kinesis:ListShards", "kinesis:PutRecord", "kinesis:PutRecords")
# Kinesis, SQS and SNS encrypt with a data key from KMS on write and decrypt it on read.
KEY_ENCRYPT_ACTIONS = ("kms:GenerateDataKey", "kms:Decrypt")
KEY_DECRYPT_ACTIONS = ("kms:Decrypt",)
SHARD_LEVEL_METRICS = (
    "IncomingBytes",
    "IncomingRecords",
    "IteratorAgeMilliseconds",
    "OutgoingBytes",
    "OutgoingRecords",
    "ReadProvisionedThroughputExceeded",
    "WriteProvisionedThroughputExceeded",
)
DEAD_LETTER_RETENTION_SECONDS = 14 * 24 * 3600  # SQS's maximum: time to find and fix the cause

StreamMode = Literal["on-demand", "provisioned"]


def _deny_insecure_transport(resource: str) -> DataAwsIamPolicyDocumentStatement:
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


class DeadLetterQueue(Construct):
    """An encrypted SQS queue that keeps what could not be processed for 14 days, reachable over TLS only."""

    def __init__(self, scope: Construct, id: str, *, name: str, key: EncryptionKey) -> None:
        super().__init__(scope, id)
        queue = SqsQueue(
            self,
            "queue",
            name=name,
            kms_master_key_id=key.key_arn,
            message_retention_seconds=DEAD_LETTER_RETENTION_SECONDS,
        )
        tls_only = DataAwsIamPolicyDocument(self, "policy", statement=[_deny_insecure_transport(queue.arn)])
        SqsQueuePolicy(self, "queue-policy", queue_url=queue.url, policy=tls_only.json)
        self.queue_arn: str = queue.arn
        self.queue_url: str = queue.url
        self.queue_name: str = queue.name
        self._key = key

    def grant_send(self, role: IamRole) -> None:
        grant(
            self,
            role,
            f"send-{self.node.id}",  # one inline policy per queue: a role may send to several
            [allow(["sqs:SendMessage"], [self.queue_arn]), allow(KEY_ENCRYPT_ACTIONS, [self._key.key_arn])],
        )


@dataclass(frozen=True)
class StreamProps:
    naming: Naming
    account: Account
    mode: StreamMode
    """"on-demand" scales by itself; "provisioned" has `shard_count` shards."""
    retention_hours: int
    """How long records stay readable, 24 to 8760 hours."""
    stream_key: EncryptionKey
    """Encrypts the stream and the processing dead-letter queue."""
    alerts_key: EncryptionKey
    """Encrypts the alert topic; its policy must let CloudWatch alarms use it."""
    shard_count: int | None = None
    """Shards of a provisioned stream; not set for on-demand."""
    shard_level_metrics: bool = False
    """Publish per-shard metrics (they cost extra). Default: stream-level metrics only."""


class Stream(Construct):
    """The Kinesis stream every reading goes through, its processing dead-letter queue and the alert topic."""

    def __init__(self, scope: Construct, id: str, props: StreamProps) -> None:
        super().__init__(scope, id)
        if props.mode not in get_args(StreamMode):
            raise ValueError(f"mode must be one of {get_args(StreamMode)}, got {props.mode!r}")
        if (props.mode == "provisioned") != (props.shard_count is not None):
            raise ValueError(
                f"shard_count is set with mode 'provisioned' only; got mode {props.mode!r}, "
                f"shard_count {props.shard_count}"
            )
        if not 24 <= props.retention_hours <= 8760:
            raise ValueError(f"retention_hours must be between 24 and 8760, got {props.retention_hours}")
        naming = props.naming
        stream = KinesisStream(
            self,
            "stream",
            name=naming.name("readings"),
            retention_period=props.retention_hours,
            shard_count=props.shard_count,
            stream_mode_details=KinesisStreamStreamModeDetails(
                stream_mode=props.mode.replace("-", "_").upper()
            ),
            encryption_type="KMS",
            kms_key_id=props.stream_key.key_arn,
            shard_level_metrics=list(SHARD_LEVEL_METRICS) if props.shard_level_metrics else None,
        )
        self.stream_name: str = stream.name
        self.stream_arn: str = stream.arn
        self._key = props.stream_key

        self.processing_dead_letters = DeadLetterQueue(
            self, "processing-dead-letters", name=naming.name("processing-dlq"), key=props.stream_key
        )

        topic = SnsTopic(
            self, "alerts", name=naming.name("alerts"), kms_master_key_id=props.alerts_key.key_arn
        )
        topic_policy = DataAwsIamPolicyDocument(
            self,
            "alerts-policy",
            statement=[
                DataAwsIamPolicyDocumentStatement(
                    sid="CloudWatchAlarmsPublish",
                    actions=["sns:Publish"],
                    resources=[topic.arn],
                    principals=[
                        DataAwsIamPolicyDocumentStatementPrincipals(
                            type="Service", identifiers=["cloudwatch.amazonaws.com"]
                        )
                    ],
                    condition=[
                        DataAwsIamPolicyDocumentStatementCondition(
                            test="StringEquals", variable="aws:SourceAccount", values=[props.account.id]
                        )
                    ],
                ),
                _deny_insecure_transport(topic.arn),
            ],
        )
        SnsTopicPolicy(self, "alerts-topic-policy", arn=topic.arn, policy=topic_policy.json)
        self.alert_topic_arn: str = topic.arn
        self._alerts_key = props.alerts_key

    def grant_read(self, role: IamRole) -> None:
        """Let `role` read the stream, as a Lambda event source mapping or a consumer does."""
        grant(
            self,
            role,
            "read-readings-stream",
            [allow(STREAM_READ_ACTIONS, [self.stream_arn]), allow(KEY_DECRYPT_ACTIONS, [self._key.key_arn])],
        )

    def grant_write(self, role: IamRole) -> None:
        grant(
            self,
            role,
            "write-readings-stream",
            [allow(STREAM_WRITE_ACTIONS, [self.stream_arn]), allow(KEY_ENCRYPT_ACTIONS, [self._key.key_arn])],
        )

    def grant_publish_alerts(self, role: IamRole) -> None:
        grant(
            self,
            role,
            "publish-alerts",
            [
                allow(["sns:Publish"], [self.alert_topic_arn]),
                allow(KEY_ENCRYPT_ACTIONS, [self._alerts_key.key_arn]),
            ],
        )
