"""The SNS topic that threshold breaches and alarms notify."""

from cdktf_cdktf_provider_aws.data_aws_iam_policy_document import (
    DataAwsIamPolicyDocument,
    DataAwsIamPolicyDocumentStatement,
    DataAwsIamPolicyDocumentStatementCondition,
    DataAwsIamPolicyDocumentStatementPrincipals,
)
from cdktf_cdktf_provider_aws.sns_topic import SnsTopic
from cdktf_cdktf_provider_aws.sns_topic_policy import SnsTopicPolicy
from constructs import Construct

from iot_constructs.context import Context, export
from iot_constructs.iam import Grant, Grantable, allow, deny_insecure_transport, grant
from iot_constructs.kms import EncryptionKey


class AlertTopic:
    """An encrypted topic that this account's CloudWatch alarms may publish to, over TLS only.

    Not a construct of its own: its resources are built in `scope` (the stream's, where they were first
    defined), so that their Terraform addresses stay where deployed stacks have them.
    """

    def __init__(self, scope: Construct, *, context: Context, key: EncryptionKey) -> None:
        self._scope = scope
        topic = SnsTopic(scope, "alerts", name=context.naming.name("alerts"), kms_master_key_id=key.key_arn)
        policy = DataAwsIamPolicyDocument(
            scope,
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
                            test="StringEquals", variable="aws:SourceAccount", values=[context.account.id]
                        )
                    ],
                ),
                deny_insecure_transport(topic.arn),
            ],
        )
        SnsTopicPolicy(scope, "alerts-topic-policy", arn=topic.arn, policy=policy.json)
        self.topic_arn: str = topic.arn
        self._key = key
        export(scope, "alert_topic_arn", self.topic_arn, "SNS topic for threshold breaches and alarms")

    def grant_publish(self, grantee: Grantable) -> Grant:
        return grant(
            self._scope,
            grantee,
            "publish-alerts",
            allow(["sns:Publish"], [self.topic_arn]),
            self._key.grant_encrypt(),
        )
