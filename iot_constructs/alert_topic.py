"""The SNS topic that threshold breaches and alarms notify, and who it notifies."""

import re
from dataclasses import dataclass
from typing import Literal, get_args

from cdktf_cdktf_provider_aws.data_aws_iam_policy_document import (
    DataAwsIamPolicyDocument,
    DataAwsIamPolicyDocumentStatement,
    DataAwsIamPolicyDocumentStatementCondition,
    DataAwsIamPolicyDocumentStatementPrincipals,
)
from cdktf_cdktf_provider_aws.sns_topic import SnsTopic
from cdktf_cdktf_provider_aws.sns_topic_policy import SnsTopicPolicy
from cdktf_cdktf_provider_aws.sns_topic_subscription import SnsTopicSubscription
from constructs import Construct

from iot_constructs.context import Context, export
from iot_constructs.iam import Grant, Grantable, allow, deny_insecure_transport, grant
from iot_constructs.kms import EncryptionKey

Protocol = Literal["email", "https", "sms"]
# What each protocol's endpoint looks like: an address, a TLS URL, a phone number in E.164 form.
ENDPOINTS: dict[str, re.Pattern[str]] = {
    "email": re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$"),
    "https": re.compile(r"^https://\S+$"),
    "sms": re.compile(r"^\+[1-9][0-9]{6,14}$"),
}


@dataclass(frozen=True)
class Subscription:
    """Someone, or something, that receives every alert."""

    protocol: Protocol
    endpoint: str

    def __post_init__(self) -> None:
        if self.protocol not in get_args(Protocol):
            raise ValueError(f"protocol must be one of {get_args(Protocol)}, got {self.protocol!r}")
        if not ENDPOINTS[self.protocol].match(self.endpoint):
            raise ValueError(
                f"{self.endpoint!r} is not an {self.protocol} endpoint ({ENDPOINTS[self.protocol].pattern})"
            )


@dataclass(frozen=True)
class AlertSettings:
    subscriptions: tuple[Subscription, ...] = ()
    """Who the alerts reach (email subscribers confirm from the message AWS sends). Default: nobody."""


class AlertTopic:
    """An encrypted topic that this account's CloudWatch alarms may publish to, over TLS only.

    Not a construct of its own: its resources are built in `scope` (the stream's, where they were first
    defined), so that their Terraform addresses stay where deployed stacks have them.
    """

    def __init__(
        self, scope: Construct, settings: AlertSettings, *, context: Context, key: EncryptionKey
    ) -> None:
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
        for index, subscription in enumerate(settings.subscriptions):
            SnsTopicSubscription(
                scope,
                f"alerts-subscription-{index}",
                topic_arn=topic.arn,
                protocol=subscription.protocol,
                endpoint=subscription.endpoint,
            )
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
