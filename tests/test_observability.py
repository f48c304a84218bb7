"""Alarms and the dashboard as synthesized."""

from typing import Any

import pytest

from stacks.config import FUNCTIONS_DIR, PROJECT, environment
from tests.conftest import Synth
from tests.synth_json import one, reference_target, resources

FUNCTIONS = ("ingest", "processor", "query")


def by_signal(stack: dict[str, Any], env: str) -> dict[str, dict[str, Any]]:
    prefix = f"{PROJECT}-alarm-{env}-"
    return {
        a["alarm_name"].removeprefix(prefix): a
        for a in resources(stack, "aws_cloudwatch_metric_alarm").values()
    }


def metric_names(alarm: dict[str, Any]) -> set[str]:
    if "metric_name" in alarm:
        return {alarm["metric_name"]}
    return {q["metric"]["metric_name"] for q in alarm["metric_query"] if "metric" in q}


def test_every_alarm_notifies_the_alert_topic_when_it_fires_and_when_it_recovers(
    stack: dict[str, Any],
) -> None:
    topic = next(iter(resources(stack, "aws_sns_topic")))
    for alarm in resources(stack, "aws_cloudwatch_metric_alarm").values():
        assert [reference_target(a) for a in alarm["alarm_actions"]] == [f"aws_sns_topic.{topic}"]
        assert alarm["ok_actions"] == alarm["alarm_actions"]
        assert alarm["treat_missing_data"] in {"breaching", "notBreaching", "missing"}


@pytest.mark.parametrize("name", ["dev", "staging", "prod", "local"])
def test_each_signal_has_its_alarm_with_the_configured_threshold(synth: Synth, name: str) -> None:
    stack = synth.stacks[f"{PROJECT}-{name}"]
    config = environment(name, {})
    t = config.alarms
    found = by_signal(stack, name)
    expected = {
        "api-5xx-rate": ({"5XXError", "Count"}, t.api_5xx_percent),
        "api-p99-latency": ({"Latency"}, t.api_p99_latency_ms),
        "stream-iterator-age": ({"GetRecords.IteratorAgeMilliseconds"}, t.iterator_age_ms),
        "stream-write-throttled": ({"WriteProvisionedThroughputExceeded"}, 0),
        "processor-unstored-readings": ({"UnstoredReadings"}, 0),
        "database-cpu": ({"CPUUtilization"}, t.database_cpu_percent),
        "database-connections": ({"DatabaseConnections"}, t.database_connections),
        "readings-table-throttled": ({"ReadThrottleEvents", "WriteThrottleEvents"}, 0),
        "aggregates-table-throttled": ({"ReadThrottleEvents", "WriteThrottleEvents"}, 0),
        "worker-cpu": ({"CPUUtilization"}, t.ecs_cpu_percent),
        "worker-memory": ({"MemoryUtilization"}, t.ecs_memory_percent),
        "worker-tasks-below-minimum": ({"RunningTaskCount"}, config.processing.worker.min_tasks),
    }
    for function in FUNCTIONS + (("redis-rotation",) if config.data.cache else ()):
        timeout_ms = config.functions[function].timeout_seconds * 1000
        expected |= {
            f"{function}-errors": ({"Errors"}, 0),
            f"{function}-throttles": ({"Throttles"}, 0),
            f"{function}-duration": ({"Duration"}, timeout_ms * t.function_duration_percent_of_timeout / 100),
        }
    if config.data.cache:
        expected |= {
            "redis-cpu": ({"EngineCPUUtilization"}, t.redis_cpu_percent),
            "redis-memory": ({"DatabaseMemoryUsagePercentage"}, t.redis_memory_percent),
            "redis-evictions": ({"Evictions"}, 0),
        }
    for signal, (metrics, threshold) in expected.items():
        assert signal in found, f"no {signal} alarm in {name}"
        assert metric_names(found[signal]) == metrics, signal
        assert found[signal]["threshold"] == threshold, signal
    (queue,) = resources(stack, "aws_sqs_queue")
    dead_letters = found["processing-dead-letters"]
    assert dead_letters["dimensions"] == {"QueueName": f"${{aws_sqs_queue.{queue}.name}}"}
    assert (dead_letters["comparison_operator"], dead_letters["threshold"]) == ("GreaterThanThreshold", 0)


def test_prod_pages_on_a_lag_of_two_seconds_and_on_a_silent_stream(synth: Synth) -> None:
    found = by_signal(synth.stacks[f"{PROJECT}-prod"], "prod")
    assert found["stream-iterator-age"]["threshold"] == 2000
    silent = found["stream-silent"]
    assert (silent["metric_name"], silent["comparison_operator"], silent["threshold"]) == (
        "IncomingRecords",
        "LessThanThreshold",
        1,
    )
    assert silent["treat_missing_data"] == "breaching", "a silent stream is not OK"
    assert "stream-silent" not in by_signal(synth.stacks[f"{PROJECT}-dev"], "dev")


@pytest.mark.parametrize(
    ("signal", "missing"),
    [
        ("stream-iterator-age", "breaching"),
        ("worker-tasks-below-minimum", "breaching"),
        ("ingest-errors", "notBreaching"),
        ("api-5xx-rate", "notBreaching"),
        ("database-cpu", "missing"),
    ],
)
def test_missing_data_means_what_the_signal_means(synth: Synth, signal: str, missing: str) -> None:
    assert by_signal(synth.stacks[f"{PROJECT}-prod"], "prod")[signal]["treat_missing_data"] == missing


def test_the_redis_alarms_watch_every_node(synth: Synth) -> None:
    found = by_signal(synth.stacks[f"{PROJECT}-prod"], "prod")
    nodes = {
        q["metric"]["dimensions"]["CacheClusterId"]
        for q in found["redis-cpu"]["metric_query"]
        if "metric" in q
    }
    assert nodes == {
        f"{PROJECT}-redis-prod-{shard:04d}-{member:03d}" for shard in (1, 2, 3) for member in (1, 2)
    }


def test_one_dashboard_per_environment_shows_the_same_signals(stack: dict[str, Any]) -> None:
    dashboard = one(stack, "aws_cloudwatch_dashboard")
    body = dashboard["dashboard_body"]
    assert body.startswith("${jsonencode(")
    for metric in (
        "5XXError",
        "GetRecords.IteratorAgeMilliseconds",
        "ApproximateNumberOfMessagesVisible",
        "Errors",
    ):
        assert f'"{metric}"' in body


def test_the_alarms_firing_widget_shows_every_alarm_in_alarm(stack: dict[str, Any]) -> None:
    body = one(stack, "aws_cloudwatch_dashboard")["dashboard_body"]
    widget = body[body.index('"type" = "alarm"') :]
    for name in resources(stack, "aws_cloudwatch_metric_alarm"):
        assert f"aws_cloudwatch_metric_alarm.{name}.arn" in widget, name
    assert '"states" = ["ALARM"]' in widget
    assert '"title" = "Alarms firing"' in widget


@pytest.mark.parametrize("name", ["staging", "prod"])
def test_a_protected_environments_alerts_reach_its_subscribers(synth: Synth, name: str) -> None:
    stack = synth.stacks[f"{PROJECT}-{name}"]
    (topic,) = resources(stack, "aws_sns_topic")
    subscriptions = resources(stack, "aws_sns_topic_subscription").values()
    expected = environment(name, {}).alerts.subscriptions
    assert [(s["protocol"], s["endpoint"]) for s in subscriptions] == [
        (e.protocol, e.endpoint) for e in expected
    ]
    assert all(s["topic_arn"] == f"${{aws_sns_topic.{topic}.arn}}" for s in subscriptions)


def test_a_protected_environment_without_alert_subscriptions_is_refused_by_name() -> None:
    from dataclasses import replace

    from iot_constructs.alert_topic import AlertSettings, Subscription
    from stacks.config import ConfigError

    with pytest.raises(ConfigError, match="environment 'prod' has no alert subscriptions"):
        replace(environment("prod", {}), alerts=AlertSettings())
    with pytest.raises(ValueError, match="'oncall' is not an email endpoint"):
        Subscription("email", "oncall")


def test_the_unstored_readings_alarm_watches_what_the_processor_publishes(stack: dict[str, Any]) -> None:
    """The processor's Powertools metrics: its POWERTOOLS_METRICS_NAMESPACE, its service as the dimension."""
    environment_name = stack["provider"]["aws"][0]["default_tags"][0]["tags"]["environment"]
    processor = one(stack, "aws_lambda_function", function_name=f"{PROJECT}-processor-{environment_name}")
    variables = processor["environment"]["variables"]
    (alarm,) = [
        a
        for a in resources(stack, "aws_cloudwatch_metric_alarm").values()
        if a.get("metric_name") == "UnstoredReadings"
    ]
    assert alarm["namespace"] == variables["POWERTOOLS_METRICS_NAMESPACE"]
    assert alarm["dimensions"] == {"service": variables["POWERTOOLS_SERVICE_NAME"]}
    processor_code = (FUNCTIONS_DIR / "processor" / "handler.py").read_text()
    assert 'add_metric(name="UnstoredReadings"' in processor_code
