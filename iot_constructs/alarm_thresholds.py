"""Alarm thresholds, apart from the observability construct so that configuration can name them without
loading the provider bindings."""

from dataclasses import dataclass


@dataclass(frozen=True)
class AlarmThresholds:
    api_5xx_percent: float
    api_p99_latency_ms: int
    function_duration_percent_of_timeout: int
    iterator_age_ms: int
    """The processor's and worker's lag; the seeds ask for under 2 s in prod."""
    database_cpu_percent: int
    database_free_storage_gb: int
    database_connections: int
    redis_cpu_percent: int
    redis_memory_percent: int
    ecs_cpu_percent: int
    ecs_memory_percent: int
    silent_stream_minutes: int | None
    """Alarm when no reading arrives for this long; None where silence is normal (dev)."""
