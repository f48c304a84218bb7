"""EFS for the worker's files."""

from cdktf_cdktf_provider_aws.data_aws_iam_policy_document import DataAwsIamPolicyDocument
from cdktf_cdktf_provider_aws.efs_access_point import (
    EfsAccessPoint,
    EfsAccessPointPosixUser,
    EfsAccessPointRootDirectory,
    EfsAccessPointRootDirectoryCreationInfo,
)
from cdktf_cdktf_provider_aws.efs_file_system import EfsFileSystem, EfsFileSystemLifecyclePolicy
from cdktf_cdktf_provider_aws.efs_file_system_policy import EfsFileSystemPolicy
from cdktf_cdktf_provider_aws.efs_mount_target import EfsMountTarget
from cdktf_cdktf_provider_aws.security_group import SecurityGroup
from constructs import Construct

from iot_constructs.context import Context, export
from iot_constructs.iam import Condition, Grant, Grantable, allow, deny_insecure_transport, grant
from iot_constructs.kms import EncryptionKey
from iot_constructs.network import Client, Network, connect

NFS_PORT = 2049
# The POSIX identity every client of the access point acts as, and the only directory it sees.
POSIX_ID = 1000
ROOT = "/iot-platform"
MOUNT_ACTIONS = ("elasticfilesystem:ClientMount", "elasticfilesystem:ClientWrite")


class FileSystem(Construct):
    """An EFS file system encrypted with `key`, reachable over TLS only through its access point, with a
    mount target in each isolated subnet, beside the other data stores."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        context: Context,
        network: Network,
        key: EncryptionKey,
    ) -> None:
        super().__init__(scope, id)
        name = context.naming.name("artefacts")
        file_system = EfsFileSystem(
            self,
            "file-system",
            creation_token=name,
            encrypted=True,
            kms_key_id=key.key_arn,
            lifecycle_policy=[EfsFileSystemLifecyclePolicy(transition_to_ia="AFTER_30_DAYS")],
            tags={"Name": name},
        )
        self.file_system_id: str = file_system.id
        self.file_system_arn: str = file_system.arn
        tls_only = DataAwsIamPolicyDocument(
            self, "policy", statement=[deny_insecure_transport(file_system.arn)]
        )
        EfsFileSystemPolicy(self, "file-system-policy", file_system_id=file_system.id, policy=tls_only.json)

        self.security_group = SecurityGroup(
            self,
            "security-group",
            name=name,
            description=f"{name}: NFS from the platform's compute only",
            vpc_id=network.vpc_id,
        )
        for index, subnet_id in enumerate(network.isolated_subnet_ids):
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
            posix_user=EfsAccessPointPosixUser(uid=POSIX_ID, gid=POSIX_ID),
            root_directory=EfsAccessPointRootDirectory(
                path=ROOT,
                creation_info=EfsAccessPointRootDirectoryCreationInfo(
                    owner_uid=POSIX_ID, owner_gid=POSIX_ID, permissions="750"
                ),
            ),
            tags={"Name": name},
        )
        self.access_point_id: str = access_point.id
        self.access_point_arn: str = access_point.arn
        export(scope, "file_system_id", self.file_system_id, "EFS file system for shared artefacts")
        export(
            scope, "file_system_access_point_id", self.access_point_id, "The only way into the file system"
        )

    def allow_connections_from(self, client: Client, name: str) -> None:
        """Let `client` open NFS connections to this store, and only those."""
        connect(client, name, self, self.security_group.id, NFS_PORT, "NFS")

    def grant_mount(self, grantee: Grantable) -> Grant:
        """Let `grantee` mount and write the file system, through its access point only."""
        through_access_point = Condition(
            "StringEquals", "elasticfilesystem:AccessPointArn", (self.access_point_arn,)
        )
        return grant(
            self,
            grantee,
            "mount-artefacts",
            allow(MOUNT_ACTIONS, [self.file_system_arn], through_access_point),
        )
