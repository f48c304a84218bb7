"""tools.verify: the smoke test of a deployed environment, against a moto server and a local HTTP server."""

import io
import json
import threading
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import boto3
import pytest
from botocore.credentials import Credentials
from moto.server import ThreadedMotoServer
from stream_worker.migrate import migrate

import tools.verify
from iot_constructs.database import DATABASE_NAME
from stacks.config import environment
from tools.local.emulator import CREDENTIALS
from tools.local.servers import LocalStores
from tools.verify import (
    EMULATOR_SKIPS_API,
    NO_LOCAL_STORES,
    PROBE_COMMAND,
    Result,
    Target,
    api_round_trip,
    check_data_stores,
    check_worker,
    main,
    passed,
    run,
)

REGION = "eu-west-1"
# The worker container's own settings, as deployed (the local stores replace where its stores are).
WORKER_ENVIRONMENT = [
    {"name": "STREAM_NAME", "value": "readings"},
    {"name": "STREAM_RETENTION_HOURS", "value": "24"},
    {"name": "DATABASE_NAME", "value": "iot"},
    {"name": "DATABASE_USER", "value": "iot_worker"},
]


@pytest.fixture(autouse=True)
def no_local_stores(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever `make deploy` left running here, verify finds no local stores unless a test gives some."""
    monkeypatch.setattr(tools.verify, "running_stores", lambda: None)


@dataclass
class Deployment:
    """Resources on the moto server named as a deployment's outputs name them."""

    endpoint: str
    outputs: dict[str, Any]

    def client(self, service: str) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def deployment(moto_endpoint: str) -> Deployment:
    """A fresh stream, processor and its mapping, worker service and subscribed alert topic; their outputs."""
    run = uuid.uuid4().hex[:8]
    deployment = Deployment(moto_endpoint, {})
    kinesis, aws_lambda = deployment.client("kinesis"), deployment.client("lambda")
    stream = f"readings-{run}"
    kinesis.create_stream(StreamName=stream, ShardCount=1)
    stream_arn = kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]["StreamARN"]
    role = deployment.client("iam").create_role(
        RoleName=f"processor-{run}",
        AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}),
    )["Role"]["Arn"]
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as archive:
        archive.writestr("handler.py", "def handler(event, context):\n    return None\n")
    processor = f"processor-{run}"
    processor_arn = aws_lambda.create_function(
        FunctionName=processor,
        Runtime="python3.11",
        Role=role,
        Handler="handler.handler",
        Code={"ZipFile": code.getvalue()},
    )["FunctionArn"]
    aws_lambda.create_event_source_mapping(  # by ARN, as the stack names it
        EventSourceArn=stream_arn, FunctionName=processor_arn, StartingPosition="LATEST", BatchSize=100
    )
    ecs = deployment.client("ecs")
    cluster = f"workers-{run}"
    ecs.create_cluster(clusterName=cluster)
    ecs.register_task_definition(
        family=f"worker-{run}",
        containerDefinitions=[
            {"name": "worker", "image": "worker:1", "memory": 512, "environment": WORKER_ENVIRONMENT}
        ],
    )
    ecs.create_service(cluster=cluster, serviceName="worker", taskDefinition=f"worker-{run}", desiredCount=1)
    sns = deployment.client("sns")
    topic = sns.create_topic(Name=f"alerts-{run}")["TopicArn"]
    sns.subscribe(TopicArn=topic, Protocol="email", Endpoint="oncall@example.com")
    deployment.outputs = {
        "api_invoke_url": "https://abc123.execute-api.eu-west-1.amazonaws.com/v1",
        "api_key_id": "key123",
        "stream_name": stream,
        "processor_function_name": processor,
        "worker_cluster_name": cluster,
        "worker_service_name": "worker",
        "private_subnet_ids": [f"subnet-{run}"],
        "worker_security_group_id": f"sg-{run}",
        "alert_topic_arn": topic,
        "processing_dlq_url": f"{moto_endpoint}/123456789012/dlq-{run}",
    }
    return deployment


def verify(
    deployment: Deployment, tmp_path: Path, capsys: pytest.CaptureFixture[str], env: str = "local"
) -> tuple[int, str]:
    """`python -m tools.verify ENV --outputs FILE`, the file as `cdktf deploy --outputs-file` writes it, on
    the emulator (LOCAL_AWS_ENDPOINT) whatever the environment's configuration."""
    outputs = tmp_path / f"{env}.json"
    outputs.write_text(json.dumps({f"iot-platform-{env}": deployment.outputs}))
    code = main([env, "--outputs", str(outputs)], environ={"LOCAL_AWS_ENDPOINT": deployment.endpoint})
    return code, capsys.readouterr().out


def line(output: str, check: str) -> str:
    (found,) = [line for line in output.splitlines() if line.split()[1:2] == [check]]
    return found


def test_the_emulator_passes_what_it_can_and_says_what_it_skipped(
    deployment: Deployment, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, output = verify(deployment, tmp_path, capsys)
    assert code == 0, output
    assert f"on the emulator at {deployment.endpoint}" in output
    assert line(output, "api") == f"SKIP  api             {EMULATOR_SKIPS_API}"
    assert line(output, "stream-mapping").startswith("PASS")
    assert "Enabled" in line(output, "stream-mapping")
    assert line(output, "worker").startswith("SKIP")
    assert "runs no containers: worker wants 1" in line(output, "worker")
    assert line(output, "alert-topic") == "PASS  alert-topic     1 subscription(s), 0 pending confirmation"
    assert line(output, "data-stores") == f"SKIP  data-stores     {NO_LOCAL_STORES}"
    assert output.splitlines()[-1] == "2 passed, 0 failed, 3 skipped"


def test_on_the_emulator_the_workers_probe_runs_here_against_the_local_stores(
    deployment: Deployment,
    local_stores: LocalStores,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    local_stores.create_database(DATABASE_NAME)
    migrate(local_stores.conninfo(DATABASE_NAME))
    monkeypatch.setattr(tools.verify, "running_stores", lambda: local_stores)
    code, output = verify(deployment, tmp_path, capsys)
    assert line(output, "data-stores") == (
        "PASS  data-stores     PostgreSQL, Redis and the archive file system answer the worker"
    )
    assert "ok    postgres: logged in to 127.0.0.1 as iot_worker; 0 devices registered" in output
    # The probe's stores are tests/worker/test_probe.py's; here, that verify reports a failing one.
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("")
    refused = replace(local_stores, archive_dir=not_a_directory / "archive")
    monkeypatch.setattr(tools.verify, "running_stores", lambda: refused)
    code, output = verify(deployment, tmp_path, capsys)
    assert code == 1
    assert line(output, "data-stores").startswith("FAIL  data-stores     the worker's probe exited with 1")
    assert "FAIL  archive: NotADirectoryError" in output


def test_a_topic_lacking_a_configured_subscription_fails_naming_it(
    deployment: Deployment, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    topic = deployment.outputs["alert_topic_arn"]
    (oncall,) = environment("staging", {}).alerts.subscriptions
    code, output = verify(deployment, tmp_path, capsys, env="staging")
    assert code == 1, output
    assert line(output, "alert-topic") == (
        f"FAIL  alert-topic     the alert topic {topic} lacks the configured "
        f"{oncall.protocol}:{oncall.endpoint}: alerts miss them"
    )
    assert line(output, "stream-mapping").startswith("PASS")
    deployment.client("sns").subscribe(TopicArn=topic, Protocol=oncall.protocol, Endpoint=oncall.endpoint)
    code, output = verify(deployment, tmp_path, capsys, env="staging")
    assert line(output, "alert-topic") == "PASS  alert-topic     2 subscription(s), 0 pending confirmation"


def test_a_topic_without_subscription_is_skipped_where_the_configuration_subscribes_no_one(
    deployment: Deployment, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sns = deployment.client("sns")
    topic = deployment.outputs["alert_topic_arn"]
    for subscription in sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]:
        sns.unsubscribe(SubscriptionArn=subscription["SubscriptionArn"])
    code, output = verify(deployment, tmp_path, capsys)
    assert code == 0, output
    assert line(output, "alert-topic") == (
        "SKIP  alert-topic     the configuration subscribes no one to the alerts (AlertSettings)"
    )


def test_a_disabled_mapping_fails(
    deployment: Deployment, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    aws_lambda = deployment.client("lambda")
    function = deployment.outputs["processor_function_name"]
    stream = deployment.outputs["stream_name"]
    summary = deployment.client("kinesis").describe_stream_summary(StreamName=stream)
    (mapping,) = aws_lambda.list_event_source_mappings(
        EventSourceArn=summary["StreamDescriptionSummary"]["StreamARN"]
    )["EventSourceMappings"]
    aws_lambda.update_event_source_mapping(UUID=mapping["UUID"], Enabled=False)
    code, output = verify(deployment, tmp_path, capsys)
    assert code == 1, output
    assert line(output, "stream-mapping") == (
        f"FAIL  stream-mapping  the mapping of {stream} to {function} is Disabled, not Enabled"
    )
    assert line(output, "alert-topic").startswith("PASS")


def test_a_missing_output_fails_its_check_only(
    deployment: Deployment, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    del deployment.outputs["worker_service_name"]
    code, output = verify(deployment, tmp_path, capsys)
    assert code == 1, output
    assert line(output, "worker") == "FAIL  worker          the outputs have no worker_service_name"
    assert line(output, "alert-topic").startswith("PASS")


def test_the_checks_run_at_once_and_are_reported_in_their_order() -> None:
    """Checks spend most of their time waiting: two that wait for each other both pass."""
    both_running = threading.Barrier(2, timeout=5)  # broken, failing the test, if one waits alone

    def check(target: Target) -> Result:
        return passed(f"arrived {both_running.wait()}")

    results = run(Target({}), {"second": check, "first": check})
    assert list(results) == ["second", "first"]
    assert sorted(result.detail for result in results.values()) == ["arrived 0", "arrived 1"]


def test_on_aws_a_worker_short_of_tasks_fails(deployment: Deployment) -> None:
    """moto starts no task (runningCount 0): what a real service that cannot start its tasks reports."""
    session = boto3.Session(
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=REGION,
    )
    # Real AWS (no emulator endpoint), with boto3's endpoint pointed at moto through the session's clients.
    target = Target(deployment.outputs, session=_EndpointSession(session, deployment.endpoint))
    result = check_worker(target)
    assert (result.status, result.detail) == ("failed", "worker runs 0 of the 1 tasks it wants")


def test_on_aws_the_probe_is_a_one_off_task_of_the_workers_task_definition_in_its_subnets_and_group(
    deployment: Deployment,
) -> None:
    """moto runs no container (its task stops with exit code 0 after a few polls): this checks the request."""
    session = boto3.Session(
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=REGION,
    )
    endpoint_session = _EndpointSession(session, deployment.endpoint)
    target = Target(deployment.outputs, session=endpoint_session, task_poll_seconds=0.01)
    result = check_data_stores(target)
    assert result.status == "passed", result.detail
    ecs = deployment.client("ecs")
    cluster = deployment.outputs["worker_cluster_name"]
    (task,) = ecs.describe_tasks(
        cluster=cluster, tasks=ecs.list_tasks(cluster=cluster, startedBy="iot-platform-tools")["taskArns"]
    )["tasks"]
    (service,) = ecs.describe_services(cluster=cluster, services=["worker"])["services"]
    assert task["taskDefinitionArn"] == service["taskDefinition"]
    assert task["launchType"] == "FARGATE"
    assert task["overrides"]["containerOverrides"] == [{"name": "worker", "command": list(PROBE_COMMAND)}]
    # moto cannot run an awsvpc task (it fails naming the interface), so the network is checked as requested.
    (run_task,) = endpoint_session.run_tasks
    assert run_task["networkConfiguration"] == {
        "awsvpcConfiguration": {
            "subnets": deployment.outputs["private_subnet_ids"],
            "securityGroups": [deployment.outputs["worker_security_group_id"]],
            "assignPublicIp": "DISABLED",
        }
    }


@dataclass(frozen=True)
class _EndpointSession:
    """A boto3 session whose clients talk to `endpoint`: real-AWS code paths against moto. It keeps the
    parameters of each ECS RunTask call its clients make."""

    session: Any
    endpoint: str
    run_tasks: list[dict[str, Any]] = field(default_factory=list)

    def client(self, service: str, endpoint_url: str | None = None) -> Any:
        client = self.session.client(service, endpoint_url=self.endpoint)
        client.meta.events.register(
            "provide-client-params.ecs.RunTask", lambda params, **_: self.run_tasks.append(dict(params))
        )
        return client


class _FakeApi(BaseHTTPRequestHandler):
    """Records every request below the stage (/stage, as the invoke URL ends); answers POST /v1/readings
    with 202 and, when `store` is set, GET with the readings posted so far, else with none."""

    requests: ClassVar[list[dict[str, Any]]] = []
    stored: ClassVar[list[dict[str, Any]]] = []
    store: ClassVar[bool] = True

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self._record(body)
        readings = json.loads(body)
        if self.store:
            type(self).stored += readings
        self._answer(202, {"accepted": len(readings), "duplicates": 0})

    def do_GET(self) -> None:
        self._record(b"")
        device_id = self.path.removeprefix("/stage").split("/")[3]
        readings = [
            {key: value for key, value in reading.items() if key != "device_id"}
            for reading in self.stored
            if reading["device_id"] == device_id
        ]
        self._answer(200, {"device_id": device_id, "readings": readings, "next_token": None})

    def _record(self, body: bytes) -> None:
        type(self).requests.append(
            {
                "method": self.command,
                "path": self.path.removeprefix("/stage"),
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body,
            }
        )

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def fake_api() -> Iterator[tuple[str, type[_FakeApi]]]:
    handler = type("FakeApi", (_FakeApi,), {"requests": [], "stored": [], "store": True})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/stage", handler
    server.shutdown()
    server.server_close()


CLIENT_CREDENTIALS = Credentials("AKIDVERIFYTEST", "secret")


def test_the_api_check_signs_its_requests_and_reads_the_readings_back(
    fake_api: tuple[str, type[_FakeApi]],
) -> None:
    url, api = fake_api
    result = api_round_trip(url, "the-key", CLIENT_CREDENTIALS, REGION, wait_seconds=5, poll_seconds=0.05)
    assert result.status == "passed", result
    post, get = api.requests[0], api.requests[-1]
    assert (post["method"], post["path"]) == ("POST", "/v1/readings")
    for request in (post, get):
        authorization = request["headers"]["authorization"]
        assert authorization.startswith("AWS4-HMAC-SHA256 Credential=AKIDVERIFYTEST/")
        assert f"/{REGION}/execute-api/aws4_request" in authorization
        assert "x-api-key" in authorization  # signed, not only sent
        assert request["headers"]["x-api-key"] == "the-key"
    assert post["headers"]["content-type"] == "application/json"
    readings = json.loads(post["body"])
    assert len(readings) == 2
    (device_id,) = {reading["device_id"] for reading in readings}
    assert device_id.startswith("verify-")
    assert all(set(reading) == {"device_id", "timestamp", "metrics", "sequence"} for reading in readings)
    assert get["method"] == "GET"
    assert get["path"].startswith(f"/v1/devices/{device_id}/readings?from=")
    assert result.detail == f"POST 202, both readings of {device_id} read back"


def test_the_api_check_gives_up_at_its_bound_when_readings_never_appear(
    fake_api: tuple[str, type[_FakeApi]],
) -> None:
    url, api = fake_api
    api.store = False
    result = api_round_trip(url, "the-key", CLIENT_CREDENTIALS, REGION, wait_seconds=0.5, poll_seconds=0.1)
    assert result.status == "failed"
    device_id = json.loads(api.requests[0]["body"])[0]["device_id"]
    assert result.detail == (f"0 of 2 readings of {device_id} came back within 0.5 s (last GET answered 200)")
    gets = [request for request in api.requests if request["method"] == "GET"]
    assert 3 <= len(gets) <= 7  # polled until the bound, then stopped
