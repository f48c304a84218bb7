"""PostgreSQL: one RDS instance or an Aurora Serverless v2 cluster."""

from dataclasses import dataclass
from typing import Any, Literal, get_args

from cdktf_cdktf_provider_aws.db_instance import DbInstance
from cdktf_cdktf_provider_aws.db_parameter_group import DbParameterGroup, DbParameterGroupParameter
from cdktf_cdktf_provider_aws.db_subnet_group import DbSubnetGroup
from cdktf_cdktf_provider_aws.iam_role_policy_attachment import IamRolePolicyAttachment
from cdktf_cdktf_provider_aws.rds_cluster import RdsCluster, RdsClusterServerlessv2ScalingConfiguration
from cdktf_cdktf_provider_aws.rds_cluster_instance import RdsClusterInstance
from cdktf_cdktf_provider_aws.rds_cluster_parameter_group import (
    RdsClusterParameterGroup,
    RdsClusterParameterGroupParameter,
)
from cdktf_cdktf_provider_aws.secretsmanager_secret_rotation import (
    SecretsmanagerSecretRotation,
    SecretsmanagerSecretRotationRotationRules,
)
from cdktf_cdktf_provider_aws.security_group import SecurityGroup
from constructs import Construct

from iot_constructs.context import Context, Metric, export
from iot_constructs.iam import Grant, Grantable, allow, grant, service_role
from iot_constructs.kms import EncryptionKey
from iot_constructs.network import Client, Network, connect
from iot_constructs.worker import SecretValue

POSTGRES_PORT = 5432
# The major version only: AWS applies minor upgrades automatically (auto_minor_version_upgrade), and the
# provider reads a newer 16.x as this, so plans never try to downgrade it. AWS picks 16's default minor,
# which lets Aurora Serverless v2 scale to zero (16.3 and later).
POSTGRES_VERSION = "16"
DATABASE_NAME = "iot"
DATABASE_ADMIN = "iot_admin"
# The application's users, created by the first migration (functions/stream_worker/migrations/0001_*.sql)
# and logging in with IAM authentication tokens: the worker writes the registry and the rollups, the query
# function reads the rollups.
WRITER_USER = "iot_worker"
READER_USER = "iot_reader"
# rds.force_ssl refuses unencrypted connections; the rest logs what an operator needs after an incident
# (schema changes, slow statements, connections, lock waits), but never the data itself.
POSTGRES_PARAMETERS = {
    "rds.force_ssl": "1",
    "log_statement": "ddl",
    "log_connections": "1",
    "log_disconnections": "1",
    "log_lock_waits": "1",
    "log_min_duration_statement": "1000",
}
PERFORMANCE_INSIGHTS_RETENTION_DAYS = 7  # the free tier
MONITORING_INTERVAL_SECONDS = 60

DatabaseEngine = Literal["rds", "aurora-serverless"]


@dataclass(frozen=True)
class DatabaseSettings:
    engine: DatabaseEngine
    """"rds": one PostgreSQL instance (Multi-AZ when `multi_az`); "aurora-serverless": an Aurora
    PostgreSQL Serverless v2 cluster scaling between `min_capacity` and `max_capacity`."""
    backup_retention_days: int
    password_rotation_days: int = 30
    instance_class: str = "db.t4g.medium"
    """RDS only."""
    allocated_storage_gb: int = 20
    """RDS only; storage grows by itself up to five times this."""
    multi_az: bool = False
    """RDS only: a synchronous standby in another AZ."""
    min_capacity: float = 0.5
    """Aurora only, in ACUs; 0 lets the cluster pause when idle."""
    max_capacity: float = 4
    """Aurora only, in ACUs."""
    reader: bool = False
    """Aurora only: a reader instance in another AZ, which also takes over if the writer fails."""

    def __post_init__(self) -> None:
        if self.engine not in get_args(DatabaseEngine):
            raise ValueError(f"engine must be one of {get_args(DatabaseEngine)}, got {self.engine!r}")


class Database(Construct):
    """PostgreSQL in the isolated subnets: TLS only, IAM authentication, encrypted with `key`, its master
    password managed by RDS in Secrets Manager and rotated on schedule, never in code or state.

    `protected`: deletion protection and a final snapshot on destroy; off for destroyable environments.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        settings: DatabaseSettings,
        *,
        context: Context,
        network: Network,
        key: EncryptionKey,
        protected: bool,
    ) -> None:
        super().__init__(scope, id)
        self.identifier = identifier = context.naming.name("postgres")
        self.engine = settings.engine
        self.port = POSTGRES_PORT
        self._account = context.account
        self._key = key
        aurora = settings.engine == "aurora-serverless"
        self.security_group = SecurityGroup(
            self,
            "security-group",
            name=identifier,
            description=f"{identifier}: PostgreSQL from the platform's compute only",
            vpc_id=network.vpc_id,
        )
        subnet_group = DbSubnetGroup(
            self, "subnet-group", name=identifier, subnet_ids=network.isolated_subnet_ids
        )
        log_group_prefix = f"/aws/rds/{'cluster' if aurora else 'instance'}/{identifier}"
        # Created before the database, so RDS exports its logs into encrypted groups with a retention.
        log_groups = [
            context.log_group(self, f"{log}-log-group", f"{log_group_prefix}/{log}")
            for log in ("postgresql", "upgrade")
        ]
        common: dict[str, Any] = {
            "engine_version": POSTGRES_VERSION,
            "kms_key_id": key.key_arn,
            "storage_encrypted": True,
            "iam_database_authentication_enabled": True,
            "manage_master_user_password": True,
            "master_user_secret_kms_key_id": key.key_arn,
            "backup_retention_period": settings.backup_retention_days,
            "copy_tags_to_snapshot": True,
            "deletion_protection": protected,
            "skip_final_snapshot": not protected,
            "final_snapshot_identifier": f"{identifier}-final" if protected else None,
            "db_subnet_group_name": subnet_group.name,
            "vpc_security_group_ids": [self.security_group.id],
            "enabled_cloudwatch_logs_exports": ["postgresql", "upgrade"],
            "depends_on": log_groups,
        }
        monitoring = self._instance_monitoring(context, key)
        if aurora:
            self._aurora(settings, network, common, monitoring)
        else:
            self._instance(settings, common, monitoring)
        SecretsmanagerSecretRotation(
            self,
            "master-password-rotation",
            secret_id=self.master_secret_arn,
            rotation_rules=SecretsmanagerSecretRotationRotationRules(
                automatically_after_days=settings.password_rotation_days
            ),
        )
        # Where clients connect; each adds the DATABASE_USER it is granted (grant_connect).
        self.environment = {
            "DATABASE_HOST": self.endpoint,
            "DATABASE_PORT": str(POSTGRES_PORT),
            "DATABASE_NAME": DATABASE_NAME,
        }
        # The master user from the secret RDS manages, for the admin commands (migrations, registering
        # devices): the only password login, injected only into the admin container.
        self.admin_credentials = {
            "DATABASE_ADMIN_USER": SecretValue(self.master_secret_arn, "username", key),
            "DATABASE_ADMIN_PASSWORD": SecretValue(self.master_secret_arn, "password", key),
        }
        export(scope, "database_endpoint", self.endpoint, "PostgreSQL writer endpoint (TLS, port 5432)")
        export(
            scope,
            "database_secret_arn",
            self.master_secret_arn,
            "Master credentials, managed and rotated by RDS",
        )

    def _instance_monitoring(self, context: Context, key: EncryptionKey) -> dict[str, Any]:
        """Performance Insights and Enhanced Monitoring, for every instance of either engine."""
        monitoring_role = service_role(
            self,
            "monitoring-role",
            name=context.naming.name("postgres-monitoring"),
            service="monitoring.rds.amazonaws.com",
            account=context.account,
        )
        IamRolePolicyAttachment(
            self,
            "monitoring-policy",
            role=monitoring_role.name,
            policy_arn=f"arn:{context.account.partition}:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole",
        )
        return {
            "performance_insights_enabled": True,
            "performance_insights_kms_key_id": key.key_arn,
            "performance_insights_retention_period": PERFORMANCE_INSIGHTS_RETENTION_DAYS,
            "monitoring_interval": MONITORING_INTERVAL_SECONDS,
            "monitoring_role_arn": monitoring_role.arn,
            "auto_minor_version_upgrade": True,
        }

    def _aurora(
        self, settings: DatabaseSettings, network: Network, common: dict[str, Any], monitoring: dict[str, Any]
    ) -> None:
        parameter_group = RdsClusterParameterGroup(
            self,
            "parameters",
            name=self.identifier,
            family="aurora-postgresql16",
            parameter=[
                RdsClusterParameterGroupParameter(name=k, value=v) for k, v in POSTGRES_PARAMETERS.items()
            ],
        )
        cluster = RdsCluster(
            self,
            "cluster",
            cluster_identifier=self.identifier,
            engine="aurora-postgresql",
            engine_mode="provisioned",
            database_name=DATABASE_NAME,
            master_username=DATABASE_ADMIN,
            db_cluster_parameter_group_name=parameter_group.name,
            serverlessv2_scaling_configuration=RdsClusterServerlessv2ScalingConfiguration(
                min_capacity=settings.min_capacity, max_capacity=settings.max_capacity
            ),
            **common,
        )
        for index, role in enumerate(["writer", "reader"] if settings.reader else ["writer"]):
            RdsClusterInstance(
                self,
                role,
                identifier=f"{self.identifier}-{index + 1}",
                cluster_identifier=cluster.id,
                engine="aurora-postgresql",
                engine_version=POSTGRES_VERSION,
                instance_class="db.serverless",
                availability_zone=network.availability_zones[index],
                db_subnet_group_name=common["db_subnet_group_name"],
                **monitoring,
            )
        self.endpoint: str = cluster.endpoint
        self.arn: str = cluster.arn
        self.master_secret_arn: str = cluster.master_user_secret.get(0).secret_arn
        self._resource_id: str = cluster.cluster_resource_id  # cluster-..., what IAM authentication names

    def _instance(
        self, settings: DatabaseSettings, common: dict[str, Any], monitoring: dict[str, Any]
    ) -> None:
        parameter_group = DbParameterGroup(
            self,
            "parameters",
            name=self.identifier,
            family="postgres16",
            parameter=[DbParameterGroupParameter(name=k, value=v) for k, v in POSTGRES_PARAMETERS.items()],
        )
        instance = DbInstance(
            self,
            "instance",
            identifier=self.identifier,
            engine="postgres",
            instance_class=settings.instance_class,
            allocated_storage=settings.allocated_storage_gb,
            max_allocated_storage=settings.allocated_storage_gb * 5,
            storage_type="gp3",
            multi_az=settings.multi_az,
            db_name=DATABASE_NAME,
            username=DATABASE_ADMIN,
            parameter_group_name=parameter_group.name,
            **common,
            **monitoring,
        )
        self.endpoint = instance.address
        self.arn = instance.arn
        self.master_secret_arn = instance.master_user_secret.get(0).secret_arn
        self._resource_id = instance.resource_id  # db-..., what IAM authentication names

    def allow_connections_from(self, client: Client, name: str) -> None:
        """Let `client` open PostgreSQL connections to this store, and only those."""
        connect(client, name, self, self.security_group.id, POSTGRES_PORT, "PostgreSQL")

    def grant_connect(self, grantee: Grantable, user: str) -> Grant:
        """Let `grantee` log in as the database user `user` with IAM authentication tokens, and as no other.

        Tokens are signed locally: rds-db:connect is checked when PostgreSQL receives one, never called."""
        user_arn = self._account.arn("rds-db", f"dbuser:{self._resource_id}/{user}")
        return grant(self, grantee, f"connect-postgres-as-{user}", allow(["rds-db:connect"], [user_arn]))

    def metric(self, name: str, statistic: str) -> Metric:
        dimension = "DBClusterIdentifier" if self.engine == "aurora-serverless" else "DBInstanceIdentifier"
        return Metric("AWS/RDS", name, {dimension: self.identifier}, statistic)
