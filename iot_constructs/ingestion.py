"""The way in and out: the API, the functions behind it, and the stream ingest writes to."""

from dataclasses import dataclass, field

from constructs import Construct

from iot_constructs.api import Api, ApiSettings
from iot_constructs.context import Context, export
from iot_constructs.data import Data
from iot_constructs.database import READER_USER
from iot_constructs.function import Function, FunctionSettings
from iot_constructs.kms import Keys
from iot_constructs.network import Network
from iot_constructs.stream import Stream, StreamSettings


@dataclass(frozen=True)
class ReadingLimits:
    """What the ingest function accepts."""

    max_batch_size: int = 500  # one PutRecords call
    max_body_bytes: int = 262_144
    max_clock_skew_seconds: int = 300
    max_reading_age_seconds: int = 86_400
    put_records_max_attempts: int = 5


@dataclass(frozen=True)
class IngestionSettings:
    stream: StreamSettings
    ingest: FunctionSettings
    query: FunctionSettings
    api: ApiSettings
    limits: ReadingLimits = field(default_factory=ReadingLimits)


class Ingestion:
    """POST /v1/readings through the ingest function onto the stream; the devices' readings through the query
    function: GET /v1/devices/{device_id}/readings from the raw `readings` table, .../latest from Redis and
    .../rollups from PostgreSQL (as READER_USER). Both refuse devices the caller does not own, by the owners
    map the worker publishes from the device registry into Redis.

    A grouping, not a construct: its parts are built in `scope`, so that their Terraform addresses stay
    where deployed stacks have them.
    """

    def __init__(
        self,
        scope: Construct,
        settings: IngestionSettings,
        *,
        context: Context,
        network: Network,
        keys: Keys,
        data: Data,
    ) -> None:
        self.stream = Stream(scope, "stream", settings.stream, context=context, key=keys.stream)
        limits = settings.limits
        cache, database = data.cache, data.database
        # Where there is no Redis (the emulator), the functions get none of its settings.
        redis = (
            {**cache.environment, "REDIS_AUTH_TOKEN_SECRET_ARN": cache.auth_token.secret_arn} if cache else {}
        )
        self.ingest = Function(
            scope,
            "ingest",
            settings.ingest,
            context=context,
            key=keys.data,
            network=network,
            environment={
                "STREAM_NAME": self.stream.stream_name,
                "MAX_BATCH_SIZE": str(limits.max_batch_size),
                "MAX_BODY_BYTES": str(limits.max_body_bytes),
                "MAX_CLOCK_SKEW_SECONDS": str(limits.max_clock_skew_seconds),
                "MAX_READING_AGE_SECONDS": str(limits.max_reading_age_seconds),
                "PUT_RECORDS_MAX_ATTEMPTS": str(limits.put_records_max_attempts),
                **redis,
            },
        )
        self.stream.grant_write(self.ingest)
        self.query = Function(
            scope,
            "query",
            settings.query,
            context=context,
            key=keys.data,
            network=network,
            environment={
                "RAW_TABLE_NAME": data.readings.table_name,
                **database.environment,
                "DATABASE_USER": READER_USER,
                **redis,
            },
        )
        data.readings.grant(self.query, "read-readings-table", "dynamodb:Query")
        database.grant_connect(self.query, READER_USER)
        database.allow_connections_from(self.query, "query")
        if cache:
            for function in (self.ingest, self.query):
                cache.grant_read_auth_token(function)
                cache.allow_connections_from(function, function.node.id)
        self.api = Api(scope, "api", settings.api, context=context, ingest=self.ingest, query=self.query)
        export(scope, "ingest_function_name", self.ingest.function_name, "Handles POST /v1/readings")
        export(
            scope,
            "query_function_name",
            self.query.function_name,
            "Handles GET /v1/devices/{device_id}/readings, .../latest and .../rollups",
        )
