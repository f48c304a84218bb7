"""Alarms that page before users notice, and one dashboard per environment, for an on-call reader.

Every alarm notifies the alert topic when it fires and when it recovers. What a missing datapoint means
is chosen per alarm: silence from a stream consumer or from a service that should be running is itself a
failure ("breaching"); silence from an error counter means no errors ("notBreaching"); resource gauges
that pause with their resource keep their state ("missing").
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from cdktf import Fn
from cdktf_cdktf_provider_aws.cloudwatch_dashboard import CloudwatchDashboard
from cdktf_cdktf_provider_aws.cloudwatch_metric_alarm import (
    CloudwatchMetricAlarm,
    CloudwatchMetricAlarmMetricQuery,
    CloudwatchMetricAlarmMetricQueryMetric,
)
from constructs import Construct

from iot_constructs.alert_topic import AlertTopic
from iot_constructs.api import Api
from iot_constructs.cache import Cache
from iot_constructs.context import Context, Metric, export
from iot_constructs.database import Database
from iot_constructs.function import Function
from iot_constructs.stream import Stream
from iot_constructs.table import Table
from iot_constructs.worker import WorkerService

PERIOD_SECONDS = 60
Missing = Literal["breaching", "notBreaching", "missing"]


@dataclass(frozen=True)
class AlarmThresholds:
    api_5xx_percent: float = 5
    api_p99_latency_ms: int = 3000
    function_duration_percent_of_timeout: int = 80
    iterator_age_ms: int = 60_000
    """The processor's and worker's lag; the seeds ask for under 2 s in prod."""
    database_cpu_percent: int = 90
    database_free_storage_gb: int = 2
    database_connections: int = 80
    redis_cpu_percent: int = 90
    redis_memory_percent: int = 90
    ecs_cpu_percent: int = 90
    ecs_memory_percent: int = 90
    silent_stream_minutes: int | None = None
    """Alarm when no reading arrives for this long. Default: no alarm, for where silence is normal (dev)."""


@dataclass(frozen=True)
class Signal:
    """One alarm: a metric, or metric math over several, compared with a threshold."""

    name: str
    description: str
    comparison: str
    threshold: float
    missing: Missing
    metric: Metric | None = None
    expression: str = ""
    """Metric math over `inputs`, in place of `metric`."""
    inputs: Mapping[str, Metric] = field(default_factory=dict)
    evaluation_periods: int = 5
    datapoints_to_alarm: int = 3


@dataclass(frozen=True)
class Watched:
    """What the alarms and the dashboard watch."""

    api: Api
    stream: Stream
    processor: Function
    functions: Sequence[Function]
    tables: Sequence[Table]
    database: Database
    worker: WorkerService
    cache: Cache | None
    """Redis, where the environment has one."""


class Observability(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        settings: AlarmThresholds,
        *,
        context: Context,
        alerts: AlertTopic,
        watched: Watched,
    ) -> None:
        super().__init__(scope, id)
        self._prefix = context.naming.name("alarm")
        self._topic_arn = alerts.topic_arn
        signals = [
            *_api_signals(watched.api, settings),
            *_stream_signals(watched, settings),
            *(signal for function in watched.functions for signal in _function_signals(function, settings)),
            *(_table_signal(table) for table in watched.tables),
            *_database_signals(watched.database, settings),
            *(_cache_signals(watched.cache, settings) if watched.cache else []),
            *_worker_signals(watched.worker, settings),
        ]
        alarms = [self._alarm(signal) for signal in signals]
        self.alarm_names = [signal_alarm_name for signal_alarm_name, _ in alarms]
        self._dashboard(context, watched, [arn for _, arn in alarms])
        export(scope, "alarm_names", self.alarm_names, "Every alarm, each notifying the alert topic")

    def _alarm(self, signal: Signal) -> tuple[str, str]:
        """The alarm for `signal`: its name and ARN."""
        name = f"{self._prefix}-{signal.name}"
        common: dict[str, Any] = {
            "alarm_name": name,
            "alarm_description": signal.description,
            "comparison_operator": signal.comparison,
            "threshold": signal.threshold,
            "evaluation_periods": signal.evaluation_periods,
            "datapoints_to_alarm": signal.datapoints_to_alarm,
            "treat_missing_data": signal.missing,
            "alarm_actions": [self._topic_arn],
            "ok_actions": [self._topic_arn],
        }
        if signal.metric is None:
            queries = [
                CloudwatchMetricAlarmMetricQuery(id="result", expression=signal.expression, return_data=True),
                *(
                    CloudwatchMetricAlarmMetricQuery(
                        id=id,
                        metric=CloudwatchMetricAlarmMetricQueryMetric(
                            namespace=metric.namespace,
                            metric_name=metric.name,
                            dimensions=dict(metric.dimensions),
                            stat=metric.statistic,
                            period=PERIOD_SECONDS,
                        ),
                    )
                    for id, metric in signal.inputs.items()
                ),
            ]
            alarm = CloudwatchMetricAlarm(self, signal.name, metric_query=queries, **common)
        else:
            metric = signal.metric
            percentile = metric.statistic.startswith("p")
            alarm = CloudwatchMetricAlarm(
                self,
                signal.name,
                namespace=metric.namespace,
                metric_name=metric.name,
                dimensions=dict(metric.dimensions),
                period=PERIOD_SECONDS,
                statistic=None if percentile else metric.statistic,
                extended_statistic=metric.statistic if percentile else None,
                **common,
            )
        arn: str = alarm.arn
        return name, arn

    def _dashboard(self, context: Context, watched: Watched, alarm_arns: list[str]) -> None:
        """Top to bottom as on-call reads it: is the API healthy, is data flowing, what is saturated."""
        region = context.account.region

        def graph(title: str, metrics: Sequence[Metric], stat: str = "Sum") -> dict[str, Any]:
            lines = [
                [
                    metric.namespace,
                    metric.name,
                    *(part for item in metric.dimensions.items() for part in item),
                ]
                for metric in metrics
            ]
            return {
                "type": "metric",
                "width": 8,
                "height": 6,
                "properties": {
                    "title": title,
                    "region": region,
                    "stat": stat,
                    "period": 60,
                    "metrics": lines,
                },
            }

        api, stream, worker, database = watched.api, watched.stream, watched.worker, watched.database
        functions = watched.functions
        widgets = [
            graph("API requests and 5xx", [api.metric("Count"), api.metric("5XXError")]),
            graph("API p99 latency (ms)", [api.metric("Latency")], stat="p99"),
            {
                "type": "alarm",
                "width": 8,
                "height": 6,
                "properties": {"title": "Alarms firing", "alarms": alarm_arns, "states": ["ALARM"]},
            },
            graph("Readings in (records)", [stream.metric_incoming_records()]),
            graph("Stream lag (ms)", [stream.metric_get_records_iterator_age_milliseconds()], stat="Maximum"),
            graph(
                "Dead letters waiting",
                [stream.processing_dead_letters.metric_messages_visible()],
                stat="Maximum",
            ),
            graph("Function errors", [f.metric("Errors") for f in functions]),
            graph("Function throttles", [f.metric("Throttles") for f in functions]),
            graph("Function duration (ms, max)", [f.metric("Duration") for f in functions], stat="Maximum"),
            graph(
                "Table throttles",
                [m for table in watched.tables for m in table.metric_throttle_events().values()],
            ),
            graph(
                "Worker CPU and memory (%)",
                [worker.metric("AWS/ECS", m, "Average") for m in ("CPUUtilization", "MemoryUtilization")],
                stat="Average",
            ),
            graph(
                "PostgreSQL CPU (%) and connections",
                [database.metric(m, "Maximum") for m in ("CPUUtilization", "DatabaseConnections")],
                stat="Maximum",
            ),
        ]
        if watched.cache:
            cpu = watched.cache.metric_busiest_node("EngineCPUUtilization").values()
            widgets.append(graph("Redis engine CPU (%) per node", list(cpu), stat="Maximum"))
        CloudwatchDashboard(
            self,
            "dashboard",
            dashboard_name=context.naming.name("on-call"),
            dashboard_body=Fn.jsonencode({"widgets": widgets}),
        )


def _api_signals(api: Api, t: AlarmThresholds) -> list[Signal]:
    return [
        Signal(
            "api-5xx-rate",
            f"More than {t.api_5xx_percent}% of API requests fail with 5xx",
            "GreaterThanThreshold",
            t.api_5xx_percent,
            "notBreaching",
            expression="IF(requests > 0, 100 * errors / requests, 0)",
            inputs={"errors": api.metric("5XXError"), "requests": api.metric("Count")},
        ),
        Signal(
            "api-p99-latency",
            f"API p99 latency above {t.api_p99_latency_ms} ms",
            "GreaterThanThreshold",
            t.api_p99_latency_ms,
            "notBreaching",
            api.metric("Latency", "p99"),
        ),
    ]


def _stream_signals(watched: Watched, t: AlarmThresholds) -> list[Signal]:
    stream = watched.stream
    signals = [
        Signal(
            "processor-unstored-readings",
            "AWS refused readings after the processor's retries: their records go to the dead-letter queue",
            "GreaterThanThreshold",
            0,
            "notBreaching",
            watched.processor.metric_published("UnstoredReadings"),
            evaluation_periods=1,
            datapoints_to_alarm=1,
        ),
        Signal(
            "stream-iterator-age",
            f"The processor lags more than {t.iterator_age_ms} ms behind the stream, or reads nothing",
            "GreaterThanThreshold",
            t.iterator_age_ms,
            "breaching",
            stream.metric_get_records_iterator_age_milliseconds(),
        ),
        Signal(
            "stream-write-throttled",
            "Writes to the stream exceed its throughput",
            "GreaterThanThreshold",
            0,
            "notBreaching",
            stream.metric_write_provisioned_throughput_exceeded(),
        ),
    ]
    if t.silent_stream_minutes is not None:
        signals.append(
            Signal(
                "stream-silent",
                f"No reading arrived for {t.silent_stream_minutes} minutes",
                "LessThanThreshold",
                1,
                "breaching",
                stream.metric_incoming_records(),
                evaluation_periods=t.silent_stream_minutes,
                datapoints_to_alarm=t.silent_stream_minutes,
            )
        )
    signals.append(
        Signal(
            "processing-dead-letters",
            "Records wait in the processing dead-letter queue: the processor gave up on them",
            "GreaterThanThreshold",
            0,
            "notBreaching",
            stream.processing_dead_letters.metric_messages_visible(),
            evaluation_periods=1,
            datapoints_to_alarm=1,
        )
    )
    return signals


def _function_signals(function: Function, t: AlarmThresholds) -> list[Signal]:
    component = function.node.id
    return [
        Signal(
            f"{component}-errors",
            f"{component} fails",
            "GreaterThanThreshold",
            0,
            "notBreaching",
            function.metric("Errors"),
        ),
        Signal(
            f"{component}-throttles",
            f"{component} is throttled at its reserved concurrency",
            "GreaterThanThreshold",
            0,
            "notBreaching",
            function.metric("Throttles"),
        ),
        Signal(
            f"{component}-duration",
            f"{component} runs close to its timeout",
            "GreaterThanThreshold",
            function.timeout_seconds * 1000 * t.function_duration_percent_of_timeout / 100,
            "notBreaching",
            function.metric("Duration", "Maximum"),
        ),
    ]


def _table_signal(table: Table) -> Signal:
    return Signal(
        f"{table.node.id}-throttled",
        "DynamoDB throttles requests to a table",
        "GreaterThanThreshold",
        0,
        "notBreaching",
        expression="reads + writes",
        inputs=table.metric_throttle_events(),
    )


def _database_signals(database: Database, t: AlarmThresholds) -> list[Signal]:
    # Aurora's storage grows by itself; what can run out is an instance's local storage.
    free_storage = "FreeLocalStorage" if database.engine == "aurora-serverless" else "FreeStorageSpace"
    return [
        Signal(
            "database-cpu",
            f"PostgreSQL CPU above {t.database_cpu_percent}%",
            "GreaterThanThreshold",
            t.database_cpu_percent,
            "missing",
            database.metric("CPUUtilization", "Average"),
        ),
        Signal(
            "database-free-storage",
            f"PostgreSQL has less than {t.database_free_storage_gb} GB of storage left",
            "LessThanThreshold",
            t.database_free_storage_gb * 1024**3,
            "missing",
            database.metric(free_storage, "Minimum"),
        ),
        Signal(
            "database-connections",
            f"More than {t.database_connections} PostgreSQL connections",
            "GreaterThanThreshold",
            t.database_connections,
            "missing",
            database.metric("DatabaseConnections", "Maximum"),
        ),
    ]


def _cache_signals(cache: Cache, t: AlarmThresholds) -> list[Signal]:
    def busiest_node(metric: str) -> dict[str, Any]:
        nodes = cache.metric_busiest_node(metric)
        return {"expression": f"MAX([{', '.join(nodes)}])", "inputs": nodes}

    return [
        Signal(
            "redis-cpu",
            f"A Redis node's engine CPU above {t.redis_cpu_percent}%",
            "GreaterThanThreshold",
            t.redis_cpu_percent,
            "missing",
            **busiest_node("EngineCPUUtilization"),
        ),
        Signal(
            "redis-memory",
            f"A Redis node uses more than {t.redis_memory_percent}% of its memory",
            "GreaterThanThreshold",
            t.redis_memory_percent,
            "missing",
            **busiest_node("DatabaseMemoryUsagePercentage"),
        ),
        Signal(
            "redis-evictions",
            "Redis evicts keys: latest readings are being lost from the cache",
            "GreaterThanThreshold",
            0,
            "notBreaching",
            **busiest_node("Evictions"),
        ),
    ]


def _worker_signals(worker: WorkerService, t: AlarmThresholds) -> list[Signal]:
    return [
        Signal(
            "worker-cpu",
            f"Worker CPU above {t.ecs_cpu_percent}%",
            "GreaterThanThreshold",
            t.ecs_cpu_percent,
            "missing",
            worker.metric("AWS/ECS", "CPUUtilization", "Average"),
        ),
        Signal(
            "worker-memory",
            f"Worker memory above {t.ecs_memory_percent}%",
            "GreaterThanThreshold",
            t.ecs_memory_percent,
            "missing",
            worker.metric("AWS/ECS", "MemoryUtilization", "Average"),
        ),
        Signal(
            "worker-tasks-below-minimum",
            f"Fewer than {worker.min_tasks} worker tasks run",
            "LessThanThreshold",
            worker.min_tasks,
            "breaching",
            worker.metric("ECS/ContainerInsights", "RunningTaskCount", "Minimum"),
        ),
    ]
