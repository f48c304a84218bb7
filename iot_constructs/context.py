"""What every construct of one stack shares, and how constructs export outputs and metrics."""

from collections.abc import Mapping
from dataclasses import dataclass, field

from cdktf import TerraformOutput
from cdktf_cdktf_provider_aws.cloudwatch_log_group import CloudwatchLogGroup
from constructs import Construct

from iot_constructs.account import Account
from iot_constructs.kms import EncryptionKey
from iot_constructs.naming import Naming


@dataclass(frozen=True)
class Context:
    """Names, the account, and where logs go: every construct's log groups use `logs_key` and keep their
    events for `log_retention_days`."""

    naming: Naming
    account: Account
    logs_key: EncryptionKey
    log_retention_days: int

    def log_group(self, scope: Construct, id: str, name: str) -> CloudwatchLogGroup:
        """A log group encrypted with the logs key, keeping events for the retention."""
        return CloudwatchLogGroup(
            scope, id, name=name, retention_in_days=self.log_retention_days, kms_key_id=self.logs_key.key_arn
        )


def export(scope: Construct, name: str, value: object, description: str) -> None:
    """A stack output called `name` wherever `scope` sits: outputs are the stack's interface, so their names
    do not follow construct paths."""
    TerraformOutput(scope, name, value=value, description=description).override_logical_id(name)


@dataclass(frozen=True)
class Metric:
    """A CloudWatch metric, with the statistic its alarms and graphs read by default."""

    namespace: str
    name: str
    dimensions: Mapping[str, str] = field(default_factory=dict)
    statistic: str = "Sum"

    def with_statistic(self, statistic: str) -> "Metric":
        return Metric(self.namespace, self.name, self.dimensions, statistic)
