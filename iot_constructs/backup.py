"""AWS Backup: a daily plan for the data stores, into a vault encrypted with the platform's key."""

from collections.abc import Sequence
from dataclasses import dataclass

from cdktf_cdktf_provider_aws.backup_plan import BackupPlan, BackupPlanRule, BackupPlanRuleLifecycle
from cdktf_cdktf_provider_aws.backup_selection import BackupSelection
from cdktf_cdktf_provider_aws.backup_vault import BackupVault
from cdktf_cdktf_provider_aws.iam_role_policy_attachment import IamRolePolicyAttachment
from constructs import Construct

from iot_constructs.context import Context
from iot_constructs.iam import service_role
from iot_constructs.kms import EncryptionKey

# Every day at 03:00 UTC, within an hour, done within eight.
SCHEDULE = "cron(0 3 * * ? *)"
START_WINDOW_MINUTES = 60
COMPLETION_WINDOW_MINUTES = 480


@dataclass(frozen=True)
class BackupSettings:
    retention_days: int
    """How long AWS Backup keeps each daily recovery point."""

    def __post_init__(self) -> None:
        if self.retention_days < 1:
            raise ValueError(f"retention_days must be at least 1, got {self.retention_days}")


class Backup(Construct):
    """Daily recovery points of `resources` (ARNs of tables, databases, file systems), kept
    `retention_days`, in a vault encrypted with `key`. A protected vault refuses deletion while it holds
    recovery points; a destroyable environment's vault is emptied when the environment is destroyed."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        settings: BackupSettings,
        *,
        context: Context,
        key: EncryptionKey,
        resources: Sequence[str],
        protected: bool,
    ) -> None:
        super().__init__(scope, id)
        name = context.naming.name("backups")
        vault = BackupVault(self, "vault", name=name, kms_key_arn=key.key_arn, force_destroy=not protected)
        plan = BackupPlan(
            self,
            "plan",
            name=name,
            rule=[
                BackupPlanRule(
                    rule_name="daily",
                    target_vault_name=vault.name,
                    schedule=SCHEDULE,
                    start_window=START_WINDOW_MINUTES,
                    completion_window=COMPLETION_WINDOW_MINUTES,
                    lifecycle=BackupPlanRuleLifecycle(delete_after=settings.retention_days),
                )
            ],
        )
        # AWS Backup's documented service role trusts the service alone: it documents no aws:SourceAccount
        # when it assumes the role, and a condition it does not send would stop every backup.
        role = service_role(
            self,
            "role",
            name=name,
            service="backup.amazonaws.com",
            account=context.account,
            source_account=False,
        )
        IamRolePolicyAttachment(
            self,
            "role-policy",
            role=role.name,
            policy_arn=f"arn:{context.account.partition}:iam::aws:policy/service-role/AWSBackupServiceRolePolicyForBackup",
        )
        BackupSelection(
            self, "selection", name=name, plan_id=plan.id, iam_role_arn=role.arn, resources=list(resources)
        )
