"""Where the platform keeps data: DynamoDB tables, PostgreSQL, Redis and EFS."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, get_args

from cdktf import Fn, TerraformResourceLifecycle
from cdktf_cdktf_provider_aws.cloudwatch_log_group import CloudwatchLogGroup
from cdktf_cdktf_provider_aws.data_aws_iam_policy_document import (
    DataAwsIamPolicyDocument,
    DataAwsIamPolicyDocumentStatement,
    DataAwsIamPolicyDocumentStatementCondition,
    DataAwsIamPolicyDocumentStatementPrincipals,
)
from cdktf_cdktf_provider_aws.data_aws_secretsmanager_random_password import (
    DataAwsSecretsmanagerRandomPassword,
)
from cdktf_cdktf_provider_aws.db_instance import DbInstance
from cdktf_cdktf_provider_aws.db_parameter_group import DbParameterGroup, DbParameterGroupParameter
from cdktf_cdktf_provider_aws.db_subnet_group import DbSubnetGroup
from cdktf_cdktf_provider_aws.dynamodb_table import (
    DynamodbTable,
    DynamodbTableAttribute,
    DynamodbTablePointInTimeRecovery,
    DynamodbTableServerSideEncryption,
    DynamodbTableTtl,
)
from cdktf_cdktf_provider_aws.efs_access_point import (
    EfsAccessPoint,
    EfsAccessPointPosixUser,
    EfsAccessPointRootDirectory,
    EfsAccessPointRootDirectoryCreationInfo,
)
from cdktf_cdktf_provider_aws.efs_backup_policy import EfsBackupPolicy, EfsBackupPolicyBackupPolicy
from cdktf_cdktf_provider_aws.efs_file_system import EfsFileSystem, EfsFileSystemLifecyclePolicy
from cdktf_cdktf_provider_aws.efs_file_system_policy import EfsFileSystemPolicy
from cdktf_cdktf_provider_aws.efs_mount_target import EfsMountTarget
from cdktf_cdktf_provider_aws.elasticache_replication_group import (
    ElasticacheReplicationGroup,
    ElasticacheReplicationGroupLogDeliveryConfiguration,
)
from cdktf_cdktf_provider_aws.elasticache_subnet_group import ElasticacheSubnetGroup
from cdktf_cdktf_provider_aws.iam_role import IamRole
from cdktf_cdktf_provider_aws.iam_role_policy_attachment import IamRolePolicyAttachment
from cdktf_cdktf_provider_aws.lambda_permission import LambdaPermission
from cdktf_cdktf_provider_aws.rds_cluster import RdsCluster, RdsClusterServerlessv2ScalingConfiguration
from cdktf_cdktf_provider_aws.rds_cluster_instance import RdsClusterInstance
from cdktf_cdktf_provider_aws.rds_cluster_parameter_group import (
    RdsClusterParameterGroup,
    RdsClusterParameterGroupParameter,
)
from cdktf_cdktf_provider_aws.secretsmanager_secret import SecretsmanagerSecret
from cdktf_cdktf_provider_aws.secretsmanager_secret_rotation import (
    SecretsmanagerSecretRotation,
    SecretsmanagerSecretRotationRotationRules,
)
from cdktf_cdktf_provider_aws.secretsmanager_secret_version import SecretsmanagerSecretVersion
from cdktf_cdktf_provider_aws.security_group import SecurityGroup
from cdktf_cdktf_provider_aws.vpc_security_group_ingress_rule import VpcSecurityGroupIngressRule
from constructs import Construct

from iot_constructs.account import Account
from iot_constructs.iam import allow, grant, service_role
from iot_constructs.kms import EncryptionKey
from iot_constructs.naming import Naming
from iot_constructs.network import Network

if TYPE_CHECKING:  # compute mounts the file system defined here
    from iot_constructs.compute import Function

TABLE_READ_ACTIONS = (
    "dynamodb:BatchGetItem",
    "dynamodb:ConditionCheckItem",
    "dynamodb:DescribeTable",
    "dynamodb:GetItem",
    "dynamodb:Query",
)
TABLE_WRITE_ACTIONS = (
    "dynamodb:BatchWriteItem",
    "dynamodb:ConditionCheckItem",
    "dynamodb:DeleteItem",
    "dynamodb:DescribeTable",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
)
# DynamoDB uses the table's key on the caller's behalf.
KEY_READ_ACTIONS = ("kms:Decrypt",)
KEY_WRITE_ACTIONS = ("kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey*", "kms:ReEncrypt*")


@dataclass(frozen=True)
class TableProps:
    name: str
    partition_key: str
    sort_key: str
    """Both keys are strings."""
    ttl_attribute: str
    """Items expire at the epoch second this attribute holds; items without it never expire."""
    key: EncryptionKey
    deletion_protection: bool
    """Refuse to delete the table (in Terraform and in AWS) until this is turned off."""


class Table(Construct):
    """An on-demand DynamoDB table, encrypted with a customer-managed key, with point-in-time recovery."""

    def __init__(self, scope: Construct, id: str, props: TableProps) -> None:
        super().__init__(scope, id)
        table = DynamodbTable(
            self,
            "table",
            name=props.name,
            billing_mode="PAY_PER_REQUEST",
            hash_key=props.partition_key,
            range_key=props.sort_key,
            attribute=[
                DynamodbTableAttribute(name=props.partition_key, type="S"),
                DynamodbTableAttribute(name=props.sort_key, type="S"),
            ],
            point_in_time_recovery=DynamodbTablePointInTimeRecovery(enabled=True),
            server_side_encryption=DynamodbTableServerSideEncryption(
                enabled=True, kms_key_arn=props.key.key_arn
            ),
            ttl=DynamodbTableTtl(attribute_name=props.ttl_attribute, enabled=True),
            deletion_protection_enabled=props.deletion_protection,
        )
        self.table_name: str = table.name
        self.table_arn: str = table.arn
        self._key = props.key

    def grant_read_data(self, role: IamRole) -> None:
        grant(
            self,
            role,
            f"read-{self.node.id}",
            [allow(TABLE_READ_ACTIONS, [self.table_arn]), allow(KEY_READ_ACTIONS, [self._key.key_arn])],
        )

    def grant_read_write_data(self, role: IamRole) -> None:
        grant(
            self,
            role,
            f"read-write-{self.node.id}",
            [
                allow(sorted({*TABLE_READ_ACTIONS, *TABLE_WRITE_ACTIONS}), [self.table_arn]),
                allow(KEY_WRITE_ACTIONS, [self._key.key_arn]),
            ],
        )


def _admit(
    store: Construct, store_group: SecurityGroup, client: str, client_group_id: str, port: int, protocol: str
) -> None:
    """Let members of `client_group_id` reach `store` on `port`: data stores admit security groups only."""
    VpcSecurityGroupIngressRule(
        store,
        f"ingress-from-{client}",
        security_group_id=store_group.id,
        description=f"{protocol} from {client}",
        ip_protocol="tcp",
        from_port=port,
        to_port=port,
        referenced_security_group_id=client_group_id,
    )


def _grant_read_secret(
    store: Construct, role: IamRole, name: str, secret_arn: str, key: EncryptionKey
) -> None:
    """Let `role` read a data store's secret, and decrypt it with the store's key."""
    grant(
        store, role, name, [allow(SECRET_READ_ACTIONS, [secret_arn]), allow(KEY_READ_ACTIONS, [key.key_arn])]
    )


POSTGRES_PORT = 5432
# An engine version both RDS and Aurora PostgreSQL offer, and that lets Aurora Serverless v2 scale to zero.
POSTGRES_VERSION = "16.4"
DATABASE_NAME = "iot"
DATABASE_ADMIN = "iot_admin"
# The database user compute connects as, through IAM authentication; created by the schema migration.
IAM_DATABASE_USER = "iot_app"
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
SECRET_READ_ACTIONS = ("secretsmanager:DescribeSecret", "secretsmanager:GetSecretValue")
PERFORMANCE_INSIGHTS_RETENTION_DAYS = 7  # the free tier
MONITORING_INTERVAL_SECONDS = 60

DatabaseEngine = Literal["rds", "aurora-serverless"]


@dataclass(frozen=True)
class DatabaseProps:
    naming: Naming
    account: Account
    engine: DatabaseEngine
    """"rds": one PostgreSQL instance (Multi-AZ when `multi_az`); "aurora-serverless": an Aurora
    PostgreSQL Serverless v2 cluster scaling between `min_capacity` and `max_capacity`."""
    network: Network
    """The database sits in its isolated subnets."""
    key: EncryptionKey
    """Encrypts storage, Performance Insights and the managed master password's secret."""
    logs_key: EncryptionKey
    log_retention_days: int
    backup_retention_days: int
    protected: bool
    """Deletion protection and a final snapshot on destroy; off for destroyable environments."""
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


class Database(Construct):
    """PostgreSQL in the isolated subnets: TLS only, IAM authentication, encrypted with a customer key, its
    master password managed by RDS in Secrets Manager and rotated on schedule, never in code or state."""

    def __init__(self, scope: Construct, id: str, props: DatabaseProps) -> None:
        super().__init__(scope, id)
        if props.engine not in get_args(DatabaseEngine):
            raise ValueError(f"engine must be one of {get_args(DatabaseEngine)}, got {props.engine!r}")
        naming = props.naming
        identifier = naming.name("postgres")
        aurora = props.engine == "aurora-serverless"
        self.engine = props.engine
        self.identifier = identifier
        self._key = props.key
        self.port = POSTGRES_PORT

        self.security_group = SecurityGroup(
            self,
            "security-group",
            name=identifier,
            description=f"{identifier}: PostgreSQL from the platform's compute only",
            vpc_id=props.network.vpc_id,
        )
        subnet_group = DbSubnetGroup(
            self, "subnet-group", name=identifier, subnet_ids=props.network.isolated_subnet_ids
        )
        monitoring_role = service_role(
            self,
            "monitoring-role",
            name=naming.name("postgres-monitoring"),
            service="monitoring.rds.amazonaws.com",
            account=props.account,
        )
        IamRolePolicyAttachment(
            self,
            "monitoring-policy",
            role=monitoring_role.name,
            policy_arn=f"arn:{props.account.partition}:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole",
        )
        log_group_prefix = f"/aws/rds/{'cluster' if aurora else 'instance'}/{identifier}"
        # Created before the database, so RDS exports its logs into encrypted groups with a retention.
        log_groups = [
            CloudwatchLogGroup(
                self,
                f"{log}-log-group",
                name=f"{log_group_prefix}/{log}",
                retention_in_days=props.log_retention_days,
                kms_key_id=props.logs_key.key_arn,
            )
            for log in ("postgresql", "upgrade")
        ]
        common: dict[str, Any] = {
            "engine_version": POSTGRES_VERSION,
            "kms_key_id": props.key.key_arn,
            "storage_encrypted": True,
            "iam_database_authentication_enabled": True,
            "manage_master_user_password": True,
            "master_user_secret_kms_key_id": props.key.key_arn,
            "backup_retention_period": props.backup_retention_days,
            "copy_tags_to_snapshot": True,
            "deletion_protection": props.protected,
            "skip_final_snapshot": not props.protected,
            "final_snapshot_identifier": f"{identifier}-final" if props.protected else None,
            "db_subnet_group_name": subnet_group.name,
            "vpc_security_group_ids": [self.security_group.id],
            "enabled_cloudwatch_logs_exports": ["postgresql", "upgrade"],
            "depends_on": log_groups,
        }
        instance_monitoring: dict[str, Any] = {
            "performance_insights_enabled": True,
            "performance_insights_kms_key_id": props.key.key_arn,
            "performance_insights_retention_period": PERFORMANCE_INSIGHTS_RETENTION_DAYS,
            "monitoring_interval": MONITORING_INTERVAL_SECONDS,
            "monitoring_role_arn": monitoring_role.arn,
            "auto_minor_version_upgrade": True,
        }
        if aurora:
            parameter_group = RdsClusterParameterGroup(
                self,
                "parameters",
                name=identifier,
                family="aurora-postgresql16",
                parameter=[
                    RdsClusterParameterGroupParameter(name=k, value=v) for k, v in POSTGRES_PARAMETERS.items()
                ],
            )
            cluster = RdsCluster(
                self,
                "cluster",
                cluster_identifier=identifier,
                engine="aurora-postgresql",
                engine_mode="provisioned",
                database_name=DATABASE_NAME,
                master_username=DATABASE_ADMIN,
                db_cluster_parameter_group_name=parameter_group.name,
                serverlessv2_scaling_configuration=RdsClusterServerlessv2ScalingConfiguration(
                    min_capacity=props.min_capacity, max_capacity=props.max_capacity
                ),
                **common,
            )
            azs = props.network.availability_zones
            for index, role in enumerate(["writer", "reader"] if props.reader else ["writer"]):
                RdsClusterInstance(
                    self,
                    role,
                    identifier=f"{identifier}-{index + 1}",
                    cluster_identifier=cluster.id,
                    engine="aurora-postgresql",
                    engine_version=POSTGRES_VERSION,
                    instance_class="db.serverless",
                    availability_zone=azs[index],
                    db_subnet_group_name=subnet_group.name,
                    **instance_monitoring,
                )
            self.endpoint: str = cluster.endpoint
            self.master_secret_arn: str = cluster.master_user_secret.get(0).secret_arn
            self._resource_id = cluster.cluster_resource_id
        else:
            parameter_group_instance = DbParameterGroup(
                self,
                "parameters",
                name=identifier,
                family="postgres16",
                parameter=[
                    DbParameterGroupParameter(name=k, value=v) for k, v in POSTGRES_PARAMETERS.items()
                ],
            )
            instance = DbInstance(
                self,
                "instance",
                identifier=identifier,
                engine="postgres",
                instance_class=props.instance_class,
                allocated_storage=props.allocated_storage_gb,
                max_allocated_storage=props.allocated_storage_gb * 5,
                storage_type="gp3",
                multi_az=props.multi_az,
                db_name=DATABASE_NAME,
                username=DATABASE_ADMIN,
                parameter_group_name=parameter_group_instance.name,
                **common,
                **instance_monitoring,
            )
            self.endpoint = instance.address
            self.master_secret_arn = instance.master_user_secret.get(0).secret_arn
            self._resource_id = instance.resource_id

        SecretsmanagerSecretRotation(
            self,
            "master-password-rotation",
            secret_id=self.master_secret_arn,
            rotation_rules=SecretsmanagerSecretRotationRotationRules(
                automatically_after_days=props.password_rotation_days
            ),
        )
        self._account = props.account

    def allow_connections_from(self, id: str, security_group_id: str) -> None:
        """Admit PostgreSQL connections from the members of `security_group_id`."""
        _admit(self, self.security_group, id, security_group_id, POSTGRES_PORT, "PostgreSQL")

    def grant_connect(self, role: IamRole) -> None:
        """Let `role` sign in as the IAM-authenticated application user."""
        account = self._account
        user = (
            f"arn:{account.partition}:rds-db:{account.region}:{account.id}:dbuser:"
            f"{self._resource_id}/{IAM_DATABASE_USER}"
        )
        grant(self, role, "connect-postgres", [allow(["rds-db:connect"], [user])])

    def grant_read_secret(self, role: IamRole) -> None:
        """Let `role` read the master credentials (for schema migrations)."""
        _grant_read_secret(self, role, "read-postgres-secret", self.master_secret_arn, self._key)


REDIS_PORT = 6379
REDIS_VERSION = "7.1"
# Rotation reads the current token, stores the next one (generated by the function) and moves the stages.
SECRET_ROTATION_ACTIONS = (
    "secretsmanager:DescribeSecret",
    "secretsmanager:GetSecretValue",
    "secretsmanager:PutSecretValue",
    "secretsmanager:UpdateSecretVersionStage",
)


@dataclass(frozen=True)
class CacheProps:
    naming: Naming
    network: Network
    """The cache sits in its isolated subnets."""
    key: EncryptionKey
    """Encrypts the cache at rest and its AUTH token's secret."""
    logs_key: EncryptionKey
    log_retention_days: int
    node_type: str
    shards: int
    replicas_per_shard: int
    """Replicas of each shard's primary; with at least one, a shard fails over to another AZ."""
    snapshot_retention_days: int
    token_rotator: Function
    """The function that rotates the AUTH token (functions/redis-rotation)."""
    token_rotation_days: int = 30


class Cache(Construct):
    """Redis in cluster mode: encrypted at rest and in transit, AUTH token in Secrets Manager, rotated."""

    def __init__(self, scope: Construct, id: str, props: CacheProps) -> None:
        super().__init__(scope, id)
        naming = props.naming
        group_id = naming.name("redis")
        self._key = props.key
        self.port = REDIS_PORT

        self.security_group = SecurityGroup(
            self,
            "security-group",
            name=group_id,
            description=f"{group_id}: Redis from the platform's compute only",
            vpc_id=props.network.vpc_id,
        )
        subnet_group = ElasticacheSubnetGroup(
            self, "subnet-group", name=group_id, subnet_ids=props.network.isolated_subnet_ids
        )
        log_groups = {
            log: CloudwatchLogGroup(
                self,
                f"{log}-log-group",
                name=f"/aws/elasticache/{group_id}/{log}",
                retention_in_days=props.log_retention_days,
                kms_key_id=props.logs_key.key_arn,
            )
            for log in ("slow-log", "engine-log")
        }

        # The first token is generated by Secrets Manager at apply time: it reaches the state, never the
        # synthesized JSON. From then on the rotation function owns it, so Terraform ignores later values.
        first_token = DataAwsSecretsmanagerRandomPassword(
            self, "first-token", password_length=64, exclude_punctuation=True
        )
        secret = SecretsmanagerSecret(
            self,
            "auth-token",
            name=f"{naming.project}/{naming.suffix}/redis-auth-token",
            description=f"AUTH token of {group_id}",
            kms_key_id=props.key.key_arn,
        )
        SecretsmanagerSecretVersion(
            self,
            "first-auth-token",
            secret_id=secret.id,
            secret_string=Fn.jsonencode({"auth_token": first_token.random_password}),
            lifecycle=TerraformResourceLifecycle(ignore_changes=["secret_string"]),
        )
        group = ElasticacheReplicationGroup(
            self,
            "replication-group",
            replication_group_id=group_id,
            description=f"Latest readings per device for {naming.project}-{naming.suffix}",
            engine="redis",
            engine_version=REDIS_VERSION,
            parameter_group_name="default.redis7.cluster.on",
            node_type=props.node_type,
            port=REDIS_PORT,
            num_node_groups=props.shards,
            replicas_per_node_group=props.replicas_per_shard,
            automatic_failover_enabled=True,  # cluster mode requires it
            multi_az_enabled=props.replicas_per_shard > 0,
            at_rest_encryption_enabled="true",  # a string in this provider version
            kms_key_id=props.key.key_arn,
            transit_encryption_enabled=True,
            auth_token=first_token.random_password,
            snapshot_retention_limit=props.snapshot_retention_days,
            subnet_group_name=subnet_group.name,
            security_group_ids=[self.security_group.id],
            auto_minor_version_upgrade="true",
            log_delivery_configuration=[
                ElasticacheReplicationGroupLogDeliveryConfiguration(
                    destination=group.name,
                    destination_type="cloudwatch-logs",
                    log_format="json",
                    log_type=log,
                )
                for log, group in log_groups.items()
            ],
            lifecycle=TerraformResourceLifecycle(ignore_changes=["auth_token", "auth_token_update_strategy"]),
        )
        self.configuration_endpoint: str = group.configuration_endpoint_address
        # ElastiCache reports metrics per node: <group>-<shard, 4 digits>-<member, 3 digits>.
        self.node_ids = [
            f"{group_id}-{shard:04d}-{member:03d}"
            for shard in range(1, props.shards + 1)
            for member in range(1, props.replicas_per_shard + 2)
        ]
        self.replication_group_id: str = group.id
        self.auth_token_secret_arn: str = secret.arn

        rotator = props.token_rotator
        self.token_rotator = rotator
        grant(
            self,
            rotator.role,
            "rotate-redis-auth-token",
            [
                allow(SECRET_ROTATION_ACTIONS, [secret.arn]),
                allow(["kms:Decrypt", "kms:GenerateDataKey"], [props.key.key_arn]),
                allow(
                    ["elasticache:DescribeReplicationGroups", "elasticache:ModifyReplicationGroup"],
                    [group.arn],
                ),
            ],
        )
        self.allow_connections_from("token-rotator", rotator.security_group_id)
        permission = LambdaPermission(
            self,
            "rotator-invocation",
            function_name=rotator.function_name,
            action="lambda:InvokeFunction",
            principal="secretsmanager.amazonaws.com",
            source_arn=secret.arn,
        )
        SecretsmanagerSecretRotation(
            self,
            "auth-token-rotation",
            secret_id=secret.id,
            rotation_lambda_arn=rotator.function_arn,
            rotation_rules=SecretsmanagerSecretRotationRotationRules(
                automatically_after_days=props.token_rotation_days
            ),
            depends_on=[permission],
        )

    def allow_connections_from(self, id: str, security_group_id: str) -> None:
        """Admit Redis connections from the members of `security_group_id`."""
        _admit(self, self.security_group, id, security_group_id, REDIS_PORT, "Redis")

    def grant_read_secret(self, role: IamRole) -> None:
        """Let `role` read the AUTH token."""
        _grant_read_secret(self, role, "read-redis-auth-token", self.auth_token_secret_arn, self._key)


NFS_PORT = 2049
# The POSIX identity every client of the access point acts as, and the only directory it sees.
EFS_POSIX_ID = 1000
EFS_ROOT = "/iot-platform"
EFS_MOUNT_ACTIONS = ("elasticfilesystem:ClientMount", "elasticfilesystem:ClientWrite")


@dataclass(frozen=True)
class FileSystemProps:
    naming: Naming
    network: Network
    """A mount target in each of its private subnets, where compute runs."""
    key: EncryptionKey
    automatic_backups: bool = True
    """AWS Backup's daily backups of the file system. Default: on."""


class FileSystem(Construct):
    """An encrypted EFS file system for shared artefacts, reachable over TLS only through its access point."""

    def __init__(self, scope: Construct, id: str, props: FileSystemProps) -> None:
        super().__init__(scope, id)
        name = props.naming.name("artefacts")
        file_system = EfsFileSystem(
            self,
            "file-system",
            creation_token=name,
            encrypted=True,
            kms_key_id=props.key.key_arn,
            lifecycle_policy=[EfsFileSystemLifecyclePolicy(transition_to_ia="AFTER_30_DAYS")],
            tags={"Name": name},
        )
        self.file_system_id: str = file_system.id
        self.file_system_arn: str = file_system.arn
        if props.automatic_backups:
            EfsBackupPolicy(
                self,
                "backups",
                file_system_id=file_system.id,
                backup_policy=EfsBackupPolicyBackupPolicy(status="ENABLED"),
            )
        deny_insecure_transport = DataAwsIamPolicyDocument(
            self,
            "policy",
            statement=[
                DataAwsIamPolicyDocumentStatement(
                    sid="DenyInsecureTransport",
                    effect="Deny",
                    actions=["*"],
                    resources=[file_system.arn],
                    principals=[DataAwsIamPolicyDocumentStatementPrincipals(type="*", identifiers=["*"])],
                    condition=[
                        DataAwsIamPolicyDocumentStatementCondition(
                            test="Bool", variable="aws:SecureTransport", values=["false"]
                        )
                    ],
                )
            ],
        )
        EfsFileSystemPolicy(
            self, "file-system-policy", file_system_id=file_system.id, policy=deny_insecure_transport.json
        )

        self.security_group = SecurityGroup(
            self,
            "security-group",
            name=name,
            description=f"{name}: NFS from the platform's compute only",
            vpc_id=props.network.vpc_id,
        )
        for index, subnet_id in enumerate(props.network.private_subnet_ids):
            EfsMountTarget(
                self,
                f"mount-target-{index}",
                file_system_id=file_system.id,
                subnet_id=subnet_id,
                security_groups=[self.security_group.id],
            )
        access_point = EfsAccessPoint(
            self,
            "access-point",
            file_system_id=file_system.id,
            posix_user=EfsAccessPointPosixUser(uid=EFS_POSIX_ID, gid=EFS_POSIX_ID),
            root_directory=EfsAccessPointRootDirectory(
                path=EFS_ROOT,
                creation_info=EfsAccessPointRootDirectoryCreationInfo(
                    owner_uid=EFS_POSIX_ID, owner_gid=EFS_POSIX_ID, permissions="750"
                ),
            ),
            tags={"Name": name},
        )
        self.access_point_id: str = access_point.id
        self.access_point_arn: str = access_point.arn

    def allow_connections_from(self, id: str, security_group_id: str) -> None:
        """Admit NFS connections from the members of `security_group_id`."""
        _admit(self, self.security_group, id, security_group_id, NFS_PORT, "NFS")

    def grant_mount(self, role: IamRole) -> None:
        """Let `role` mount and write the file system, through its access point only."""
        grant(
            self,
            role,
            "mount-artefacts",
            [
                DataAwsIamPolicyDocumentStatement(
                    actions=list(EFS_MOUNT_ACTIONS),
                    resources=[self.file_system_arn],
                    condition=[
                        DataAwsIamPolicyDocumentStatementCondition(
                            test="StringEquals",
                            variable="elasticfilesystem:AccessPointArn",
                            values=[self.access_point_arn],
                        )
                    ],
                )
            ],
        )
