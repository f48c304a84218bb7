"""Where the platform keeps data: the readings tables, PostgreSQL, Redis and EFS, and their backups."""

from dataclasses import dataclass, field

from constructs import Construct

from iot_constructs.backup import Backup, BackupSettings
from iot_constructs.cache import Cache, CacheSettings
from iot_constructs.context import Context, export
from iot_constructs.database import Database, DatabaseSettings
from iot_constructs.file_system import FileSystem
from iot_constructs.function import Function, FunctionSettings
from iot_constructs.kms import EncryptionKey
from iot_constructs.network import Network
from iot_constructs.table import Table


@dataclass(frozen=True)
class DataSettings:
    database: DatabaseSettings
    token_rotator: FunctionSettings
    """The function that rotates Redis's AUTH token."""
    backup: BackupSettings | None
    """AWS Backup's daily plan for the tables, PostgreSQL and EFS; None where it cannot run (the emulator)."""
    cache: CacheSettings | None = field(default_factory=CacheSettings)
    """None where Redis cannot run (the emulator)."""


class Data:
    """The data stores, encrypted with `key`; `protected` stores refuse deletion.

    A grouping, not a construct: its stores are built in `scope`, so that their Terraform addresses stay
    where deployed stacks have them.
    """

    def __init__(
        self,
        scope: Construct,
        settings: DataSettings,
        *,
        context: Context,
        network: Network,
        key: EncryptionKey,
        protected: bool,
    ) -> None:
        def table(id: str, sort_key: str) -> Table:
            return Table(
                scope,
                f"{id}-table",
                name=context.naming.name(id),
                partition_key="device_id",
                sort_key=sort_key,
                ttl_attribute="expires_at",
                key=key,
                deletion_protection=protected,
            )

        self.readings = table("readings", sort_key="timestamp")
        self.aggregates = table("aggregates", sort_key="minute")
        export(scope, "raw_table_name", self.readings.table_name, "Raw readings by device_id and timestamp")
        export(
            scope,
            "aggregates_table_name",
            self.aggregates.table_name,
            "Per-minute aggregates by device_id and minute",
        )
        self.database = Database(
            scope,
            "postgres",
            settings.database,
            context=context,
            network=network,
            key=key,
            protected=protected,
        )
        self.file_system = FileSystem(scope, "artefacts", context=context, network=network, key=key)
        if settings.backup:
            Backup(
                scope,
                "backup",
                settings.backup,
                context=context,
                key=key,
                resources=[
                    self.readings.table_arn,
                    self.aggregates.table_arn,
                    self.database.arn,
                    self.file_system.file_system_arn,
                ],
                protected=protected,
            )
        self.cache: Cache | None = None
        if settings.cache:
            rotator = Function(
                scope,
                "redis-rotation",
                settings.token_rotator,
                context=context,
                key=key,
                network=network,
                environment={"REPLICATION_GROUP_ID": context.naming.name("redis")},
            )
            self.cache = Cache(
                scope,
                "redis",
                settings.cache,
                context=context,
                network=network,
                key=key,
                token_rotator=rotator,
                protected=protected,
            )
