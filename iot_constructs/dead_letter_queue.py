"""Encrypted SQS queues that keep what could not be processed."""

from cdktf_cdktf_provider_aws.data_aws_iam_policy_document import DataAwsIamPolicyDocument
from cdktf_cdktf_provider_aws.sqs_queue import SqsQueue
from cdktf_cdktf_provider_aws.sqs_queue_policy import SqsQueuePolicy
from constructs import Construct

from iot_constructs.context import Metric
from iot_constructs.iam import Grant, Grantable, allow, deny_insecure_transport, grant
from iot_constructs.kms import EncryptionKey

RETENTION_SECONDS = 14 * 24 * 3600  # SQS's maximum: time to find and fix the cause


class DeadLetterQueue(Construct):
    """An encrypted SQS queue that keeps what could not be processed for 14 days, reachable over TLS only."""

    def __init__(self, scope: Construct, id: str, *, name: str, key: EncryptionKey) -> None:
        super().__init__(scope, id)
        queue = SqsQueue(
            self,
            "queue",
            name=name,
            kms_master_key_id=key.key_arn,
            message_retention_seconds=RETENTION_SECONDS,
        )
        tls_only = DataAwsIamPolicyDocument(self, "policy", statement=[deny_insecure_transport(queue.arn)])
        SqsQueuePolicy(self, "queue-policy", queue_url=queue.url, policy=tls_only.json)
        self.queue_arn: str = queue.arn
        self.queue_url: str = queue.url
        self.queue_name: str = queue.name
        self._key = key

    def grant_send(self, grantee: Grantable) -> Grant:
        return grant(
            self,
            grantee,
            f"send-{self.node.id}",  # one inline policy per queue: a role may send to several
            allow(["sqs:SendMessage"], [self.queue_arn]),
            self._key.grant_encrypt(),
        )

    def metric_messages_visible(self) -> Metric:
        """Messages waiting in the queue: the maximum over the period."""
        return Metric(
            "AWS/SQS", "ApproximateNumberOfMessagesVisible", {"QueueName": self.queue_name}, "Maximum"
        )
