"""How a function consumes the stream: the Lambda event source mapping."""

from dataclasses import dataclass

from cdktf_cdktf_provider_aws.lambda_event_source_mapping import (
    LambdaEventSourceMapping,
    LambdaEventSourceMappingDestinationConfig,
    LambdaEventSourceMappingDestinationConfigOnFailure,
)
from constructs import Construct

from iot_constructs.function import Function
from iot_constructs.stream import Stream


@dataclass(frozen=True)
class EventSourceSettings:
    batch_size: int = 10
    """Records per invocation; a packed record holds about 200 readings (functions/readings)."""
    batching_window_seconds: int = 1
    parallelization_factor: int = 1
    """Concurrent batches per shard (1 to 10); readings of one device stay in order either way."""
    max_retry_attempts: int = 3
    max_record_age_seconds: int = 3600


class StreamEventSource(Construct):
    """Feeds the stream to a function that reports partial batch failures.

    A failing batch is split in two until the failing records are isolated; a record that still fails
    after `max_retry_attempts`, or grows older than `max_record_age_seconds`, goes to the stream's
    processing dead-letter queue. Reading starts at the oldest record, so nothing written before the
    mapping existed is skipped.
    """

    def __init__(
        self, scope: Construct, id: str, settings: EventSourceSettings, *, function: Function, stream: Stream
    ) -> None:
        super().__init__(scope, id)
        stream.grant_read_as_event_source(function)
        stream.processing_dead_letters.grant_send(function)
        self.mapping = LambdaEventSourceMapping(
            self,
            "mapping",
            function_name=function.function_arn,
            event_source_arn=stream.stream_arn,
            starting_position="TRIM_HORIZON",
            batch_size=settings.batch_size,
            maximum_batching_window_in_seconds=settings.batching_window_seconds,
            parallelization_factor=settings.parallelization_factor,
            function_response_types=["ReportBatchItemFailures"],
            bisect_batch_on_function_error=True,
            maximum_retry_attempts=settings.max_retry_attempts,
            maximum_record_age_in_seconds=settings.max_record_age_seconds,
            destination_config=LambdaEventSourceMappingDestinationConfig(
                on_failure=LambdaEventSourceMappingDestinationConfigOnFailure(
                    destination_arn=stream.processing_dead_letters.queue_arn
                )
            ),
        )
