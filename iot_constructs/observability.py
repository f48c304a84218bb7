"""Alarms that page before users notice, and one dashboard per environment, for an on-call reader.

Every alarm notifies the alert topic when it fires and when it recovers. What a missing datapoint means
is chosen per alarm: silence from a stream consumer or from a service that should be running is itself a
failure ("breaching"); silence from an error counter means no errors ("notBreaching"); resource gauges
that pause with their resource keep their state ("missing").
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from cdktf import Fn
from cdktf_cdktf_provider_aws.cloudwatch_dashboard import CloudwatchDashboard
from cdktf_cdktf_provider_aws.cloudwatch_metric_alarm import (
    CloudwatchMetricAlarm,
    CloudwatchMetricAlarmMetricQuery,
    CloudwatchMetricAlarmMetricQueryMetric,
)
from constructs import Construct

from iot_constructs.account import Account
from iot_constructs.alarm_thresholds import AlarmThresholds
from iot_constructs.api import Api
from iot_constructs.compute import Function, WorkerService
from iot_constructs.datastores import Cache, Database, Table
from iot_constructs.naming import Naming
from iot_constructs.stream import Stream

PERIOD_SECONDS = 60
Missing = Literal["breaching", "notBreaching", "missing"]


@dataclass(frozen=True)
class ObservabilityProps:
    naming: Naming
    account: Account
    alert_topic_arn: str
    thresholds: AlarmThresholds
    api: Api
    functions: Sequence[Function]
    stream: Stream
    tables: Sequence[Table]
    database: Database
    worker: WorkerService
    cache: Cache | None = None
    """Redis, where the environment has one."""


@dataclass(frozen=True)
class Signal:
    """One alarm: a metric (or metric math over several) compared with a threshold."""

    name: str
    description: str
    comparison: str
    threshold: float
    missing: Missing
    namespace: str = ""
    metric: str = ""
    dimensions: Mapping[str, str] | None = None
    statistic: str = "Sum"
    expression: str = ""
    """Metric math over `inputs`; replaces namespace/metric/statistic when set."""
    inputs: Mapping[str, tuple[str, str, Mapping[str, str], str]] | None = None
    """id -> (namespace, metric, dimensions, statistic), for `expression`."""
    evaluation_periods: int = 5
    datapoints_to_alarm: int = 3
    period: int = PERIOD_SECONDS


class Observability(Construct):
    def __init__(self, scope: Construct, id: str, props: ObservabilityProps) -> None:
        super().__init__(scope, id)
        self.alarm_names: list[str] = []
        for signal in self._signals(props):
            self._alarm(props, signal)
        self._dashboard(props)

    def _signals(self, props: ObservabilityProps) -> list[Signal]:
        t = props.thresholds
        api = {"ApiName": props.api.api_name, "Stage": props.api.stage_name}
        stream = {"StreamName": props.stream.stream_name}
        signals = [
            Signal(
                "api-5xx-rate",
                f"More than {t.api_5xx_percent}% of API requests fail with 5xx",
                "GreaterThanThreshold",
                t.api_5xx_percent,
                "notBreaching",
                expression="IF(requests > 0, 100 * errors / requests, 0)",
                inputs={
                    "errors": ("AWS/ApiGateway", "5XXError", api, "Sum"),
                    "requests": ("AWS/ApiGateway", "Count", api, "Sum"),
                },
            ),
            Signal(
                "api-p99-latency",
                f"API p99 latency above {t.api_p99_latency_ms} ms",
                "GreaterThanThreshold",
                t.api_p99_latency_ms,
                "notBreaching",
                namespace="AWS/ApiGateway",
                metric="Latency",
                dimensions=api,
                statistic="p99",
            ),
            Signal(
                "stream-iterator-age",
                f"The processor lags more than {t.iterator_age_ms} ms behind the stream, or reads nothing",
                "GreaterThanThreshold",
                t.iterator_age_ms,
                "breaching",
                namespace="AWS/Kinesis",
                metric="GetRecords.IteratorAgeMilliseconds",
                dimensions=stream,
                statistic="Maximum",
            ),
            Signal(
                "stream-write-throttled",
                "Writes to the stream exceed its throughput",
                "GreaterThanThreshold",
                0,
                "notBreaching",
                namespace="AWS/Kinesis",
                metric="WriteProvisionedThroughputExceeded",
                dimensions=stream,
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
                    namespace="AWS/Kinesis",
                    metric="IncomingRecords",
                    dimensions=stream,
                    evaluation_periods=t.silent_stream_minutes,
                    datapoints_to_alarm=t.silent_stream_minutes,
                )
            )
        queues = [props.stream.processing_dead_letters.queue_name] + [
            f.dead_letter_queue_name for f in props.functions
        ]
        for index, queue in enumerate(queues):
            signals.append(
                Signal(
                    f"dead-letters-{index}",
                    "Messages wait in a dead-letter queue: something could not be processed",
                    "GreaterThanThreshold",
                    0,
                    "notBreaching",
                    namespace="AWS/SQS",
                    metric="ApproximateNumberOfMessagesVisible",
                    dimensions={"QueueName": queue},
                    statistic="Maximum",
                    evaluation_periods=1,
                    datapoints_to_alarm=1,
                )
            )
        for function in props.functions:
            dimensions = {"FunctionName": function.function_name}
            component = function.node.id
            signals += [
                Signal(
                    f"{component}-errors",
                    f"{component} fails",
                    "GreaterThanThreshold",
                    0,
                    "notBreaching",
                    namespace="AWS/Lambda",
                    metric="Errors",
                    dimensions=dimensions,
                ),
                Signal(
                    f"{component}-throttles",
                    f"{component} is throttled at its reserved concurrency",
                    "GreaterThanThreshold",
                    0,
                    "notBreaching",
                    namespace="AWS/Lambda",
                    metric="Throttles",
                    dimensions=dimensions,
                ),
                Signal(
                    f"{component}-duration",
                    f"{component} runs close to its timeout",
                    "GreaterThanThreshold",
                    function.timeout_seconds * 1000 * t.function_duration_percent_of_timeout / 100,
                    "notBreaching",
                    namespace="AWS/Lambda",
                    metric="Duration",
                    dimensions=dimensions,
                    statistic="Maximum",
                ),
            ]
        for table in props.tables:
            dimensions = {"TableName": table.table_name}
            signals.append(
                Signal(
                    f"{table.node.id}-throttled",
                    "DynamoDB throttles requests to a table",
                    "GreaterThanThreshold",
                    0,
                    "notBreaching",
                    expression="reads + writes",
                    inputs={
                        "reads": ("AWS/DynamoDB", "ReadThrottleEvents", dimensions, "Sum"),
                        "writes": ("AWS/DynamoDB", "WriteThrottleEvents", dimensions, "Sum"),
                    },
                )
            )
        signals += self._database_signals(props.database, t)
        if props.cache:
            signals += self._cache_signals(props.cache, t)
        signals += self._worker_signals(props.worker, t)
        return signals

    @staticmethod
    def _database_signals(database: Database, t: AlarmThresholds) -> list[Signal]:
        aurora = database.engine == "aurora-serverless"
        dimensions = {("DBClusterIdentifier" if aurora else "DBInstanceIdentifier"): database.identifier}
        rds: dict[str, Any] = {"namespace": "AWS/RDS", "dimensions": dimensions}
        return [
            Signal(
                "database-cpu",
                f"PostgreSQL CPU above {t.database_cpu_percent}%",
                "GreaterThanThreshold",
                t.database_cpu_percent,
                "missing",
                metric="CPUUtilization",
                statistic="Average",
                **rds,
            ),
            Signal(
                "database-free-storage",
                f"PostgreSQL has less than {t.database_free_storage_gb} GB of storage left",
                "LessThanThreshold",
                t.database_free_storage_gb * 1024**3,
                "missing",
                # Aurora's storage grows by itself; what can run out is an instance's local storage.
                metric="FreeLocalStorage" if aurora else "FreeStorageSpace",
                statistic="Minimum",
                **rds,
            ),
            Signal(
                "database-connections",
                f"More than {t.database_connections} PostgreSQL connections",
                "GreaterThanThreshold",
                t.database_connections,
                "missing",
                metric="DatabaseConnections",
                statistic="Maximum",
                **rds,
            ),
        ]

    @staticmethod
    def _cache_signals(cache: Cache, t: AlarmThresholds) -> list[Signal]:
        def busiest_node(metric: str) -> dict[str, Any]:
            nodes = {f"node{i}": node for i, node in enumerate(cache.node_ids)}
            return {
                "expression": f"MAX([{', '.join(nodes)}])",
                "inputs": {
                    id: ("AWS/ElastiCache", metric, {"CacheClusterId": node}, "Maximum")
                    for id, node in nodes.items()
                },
            }

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

    @staticmethod
    def _worker_signals(worker: WorkerService, t: AlarmThresholds) -> list[Signal]:
        service = {"ClusterName": worker.cluster_name, "ServiceName": worker.service_name}
        return [
            Signal(
                "worker-cpu",
                f"Worker CPU above {t.ecs_cpu_percent}%",
                "GreaterThanThreshold",
                t.ecs_cpu_percent,
                "missing",
                namespace="AWS/ECS",
                metric="CPUUtilization",
                dimensions=service,
                statistic="Average",
            ),
            Signal(
                "worker-memory",
                f"Worker memory above {t.ecs_memory_percent}%",
                "GreaterThanThreshold",
                t.ecs_memory_percent,
                "missing",
                namespace="AWS/ECS",
                metric="MemoryUtilization",
                dimensions=service,
                statistic="Average",
            ),
            Signal(
                "worker-tasks-below-minimum",
                f"Fewer than {worker.min_tasks} worker tasks run",
                "LessThanThreshold",
                worker.min_tasks,
                "breaching",
                namespace="ECS/ContainerInsights",
                metric="RunningTaskCount",
                dimensions=service,
                statistic="Minimum",
            ),
        ]

    def _alarm(self, props: ObservabilityProps, signal: Signal) -> None:
        name = f"{props.naming.name('alarm')}-{signal.name}"
        common: dict[str, Any] = {
            "alarm_name": name,
            "alarm_description": signal.description,
            "comparison_operator": signal.comparison,
            "threshold": signal.threshold,
            "evaluation_periods": signal.evaluation_periods,
            "datapoints_to_alarm": signal.datapoints_to_alarm,
            "treat_missing_data": signal.missing,
            "alarm_actions": [props.alert_topic_arn],
            "ok_actions": [props.alert_topic_arn],
        }
        if signal.expression:
            assert signal.inputs is not None
            queries = [
                CloudwatchMetricAlarmMetricQuery(id="result", expression=signal.expression, return_data=True),
                *(
                    CloudwatchMetricAlarmMetricQuery(
                        id=id,
                        metric=CloudwatchMetricAlarmMetricQueryMetric(
                            namespace=namespace,
                            metric_name=metric,
                            dimensions=dict(dimensions),
                            stat=statistic,
                            period=signal.period,
                        ),
                    )
                    for id, (namespace, metric, dimensions, statistic) in signal.inputs.items()
                ),
            ]
            CloudwatchMetricAlarm(self, signal.name, metric_query=queries, **common)
        else:
            percentile = signal.statistic.startswith("p")
            CloudwatchMetricAlarm(
                self,
                signal.name,
                namespace=signal.namespace,
                metric_name=signal.metric,
                dimensions=dict(signal.dimensions or {}),
                period=signal.period,
                statistic=None if percentile else signal.statistic,
                extended_statistic=signal.statistic if percentile else None,
                **common,
            )
        self.alarm_names.append(name)

    def _dashboard(self, props: ObservabilityProps) -> None:
        """Top to bottom as on-call reads it: is the API healthy, is data flowing, what is saturated."""
        region = props.account.region
        api = ["ApiName", props.api.api_name, "Stage", props.api.stage_name]
        stream = ["StreamName", props.stream.stream_name]

        def graph(title: str, metrics: list[list[Any]], stat: str = "Sum") -> dict[str, Any]:
            return {
                "type": "metric",
                "width": 8,
                "height": 6,
                "properties": {
                    "title": title,
                    "region": region,
                    "stat": stat,
                    "period": 60,
                    "metrics": metrics,
                },
            }

        functions = [f.function_name for f in props.functions]
        widgets = [
            graph(
                "API requests and 5xx",
                [["AWS/ApiGateway", "Count", *api], ["AWS/ApiGateway", "5XXError", *api]],
            ),
            graph("API p99 latency (ms)", [["AWS/ApiGateway", "Latency", *api]], stat="p99"),
            graph("Alarms firing", [["AWS/ApiGateway", "4XXError", *api]]),
            graph("Readings in (records)", [["AWS/Kinesis", "IncomingRecords", *stream]]),
            graph(
                "Stream lag (ms)",
                [["AWS/Kinesis", "GetRecords.IteratorAgeMilliseconds", *stream]],
                stat="Maximum",
            ),
            graph(
                "Dead letters waiting",
                [
                    ["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", queue]
                    for queue in [props.stream.processing_dead_letters.queue_name]
                    + [f.dead_letter_queue_name for f in props.functions]
                ],
                stat="Maximum",
            ),
            graph("Function errors", [["AWS/Lambda", "Errors", "FunctionName", name] for name in functions]),
            graph(
                "Function throttles",
                [["AWS/Lambda", "Throttles", "FunctionName", name] for name in functions],
            ),
            graph(
                "Function duration (ms, max)",
                [["AWS/Lambda", "Duration", "FunctionName", name] for name in functions],
                stat="Maximum",
            ),
            graph(
                "Table throttles",
                [
                    ["AWS/DynamoDB", metric, "TableName", table.table_name]
                    for table in props.tables
                    for metric in ("ReadThrottleEvents", "WriteThrottleEvents")
                ],
            ),
            graph(
                "Worker CPU and memory (%)",
                [
                    [
                        "AWS/ECS",
                        metric,
                        "ClusterName",
                        props.worker.cluster_name,
                        "ServiceName",
                        props.worker.service_name,
                    ]
                    for metric in ("CPUUtilization", "MemoryUtilization")
                ],
                stat="Average",
            ),
            graph(
                "PostgreSQL CPU (%) and connections",
                [
                    [
                        "AWS/RDS",
                        metric,
                        "DBClusterIdentifier"
                        if props.database.engine == "aurora-serverless"
                        else "DBInstanceIdentifier",
                        props.database.identifier,
                    ]
                    for metric in ("CPUUtilization", "DatabaseConnections")
                ],
                stat="Maximum",
            ),
        ]
        if props.cache:
            widgets.append(
                graph(
                    "Redis engine CPU (%) per node",
                    [
                        ["AWS/ElastiCache", "EngineCPUUtilization", "CacheClusterId", n]
                        for n in props.cache.node_ids
                    ],
                    stat="Maximum",
                )
            )
        CloudwatchDashboard(
            self,
            "dashboard",
            dashboard_name=props.naming.name("on-call"),
            dashboard_body=Fn.jsonencode({"widgets": widgets}),
        )
