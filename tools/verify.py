"""`python -m tools.verify ENV [--outputs FILE]`: smoke-test a deployed environment from its outputs file.

Each check returns passed, failed (with the reason) or skipped (with the reason); one line is printed per
check, and the command exits 1 if any check failed (skips do not fail it). The outputs file is the one
`npx cdktf deploy <stack> --outputs-file outputs/<env>.json` writes (outputs/<env>.json by default).

Against real AWS the caller's credentials and the region of the outputs' resources are used. Against the
emulator (the local environment, or outputs with http://127.0.0.1 addresses) the checks talk to it with its
credentials, and skip what it cannot do (it serves no HTTPS API, runs no Lambda code and no containers); the
data stores are the local ones `make deploy` started, probed from this machine.
"""

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import boto3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import BotoCoreError, ClientError

from iot_constructs.alert_topic import Subscription
from iot_constructs.worker import WORKER_CONTAINER
from stacks.config import ConfigError, EnvironmentConfig, configuration
from tools.local.emulator import CREDENTIALS
from tools.local.round_trip import FUNCTIONS_DIR, iso, load_outputs, worker_environment
from tools.local.servers import LocalStores, running_stores
from tools.migrate import POLL_SECONDS as TASK_POLL_SECONDS
from tools.migrate import TaskError, run_task

PROJECT_ROOT = Path(__file__).resolve().parents[1]
API_WAIT_SECONDS = 60.0
API_POLL_SECONDS = 2.0
HTTP_TIMEOUT_SECONDS = 15
LOOPBACK_PREFIXES = ("http://127.0.0.1", "http://localhost")
EMULATOR_SKIPS_API = (
    "the emulator (moto) serves no HTTPS API and runs no Lambda code; "
    "`make deploy` runs the handlers in process instead"
)
EMULATOR_SKIPS_CONTAINERS = "the emulator (moto) runs no containers"
NO_LOCAL_STORES = (
    "the emulator runs no containers and the local data stores are not running (`make deploy ENV=...` starts "
    "them)"
)
# The worker's image checks its data stores with its own settings (functions/stream_worker/probe.py).
PROBE_COMMAND = ("python", "-m", "stream_worker.probe")


@dataclass(frozen=True)
class Result:
    status: Literal["passed", "failed", "skipped"]
    detail: str = ""


def passed(detail: str = "") -> Result:
    return Result("passed", detail)


def failed(reason: str) -> Result:
    return Result("failed", reason)


def skipped(reason: str) -> Result:
    return Result("skipped", reason)


@dataclass(frozen=True)
class Target:
    """A deployed environment: its outputs and how to reach its AWS account (or the emulator)."""

    outputs: Mapping[str, Any]
    endpoint: str | None = None
    """The emulator's endpoint, or None for real AWS."""
    api_wait_seconds: float = API_WAIT_SECONDS
    api_poll_seconds: float = API_POLL_SECONDS
    task_poll_seconds: float = TASK_POLL_SECONDS
    session: Any = field(default=None)
    """The session of every client (tests point the real-AWS checks at moto with it, one check at a time);
    by default, each client gets a session of its own, as the checks run at once (`run`) and a boto3 session
    is not thread-safe."""
    stores: LocalStores | None = None
    """On the emulator, the local data stores `make deploy` started, if they run."""
    subscriptions: tuple[Subscription, ...] = ()
    """Who the environment's configuration subscribes to its alerts."""

    @property
    def on_emulator(self) -> bool:
        return self.endpoint is not None

    @property
    def region(self) -> str:
        topic_arn: str = self.outputs["alert_topic_arn"]  # arn:partition:sns:region:account:name
        return topic_arn.split(":")[3]

    def aws(self) -> Any:
        """`session`, or a new boto3 session in the outputs' region: the emulator's credentials, or the
        caller's."""
        if self.session is not None:
            return self.session
        if self.on_emulator:
            return boto3.Session(
                aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                region_name=self.region,
            )
        return boto3.Session(region_name=self.region)

    def client(self, service: str) -> Any:
        return self.aws().client(service, endpoint_url=self.endpoint)


Check = Callable[[Target], Result]


def check_api(target: Target) -> Result:
    """POST two fresh readings through the API (SigV4 and the default client's API key) and GET them back."""
    if target.on_emulator:
        return skipped(EMULATOR_SKIPS_API)
    api_key = target.client("apigateway").get_api_key(apiKey=target.outputs["api_key_id"], includeValue=True)
    credentials = target.aws().get_credentials()
    if credentials is None:
        return failed("no AWS credentials to sign the API requests with")
    return api_round_trip(
        target.outputs["api_invoke_url"],
        api_key["value"],
        credentials.get_frozen_credentials(),
        target.region,
        wait_seconds=target.api_wait_seconds,
        poll_seconds=target.api_poll_seconds,
    )


def api_round_trip(
    invoke_url: str,
    api_key: str,
    credentials: Credentials,
    region: str,
    *,
    wait_seconds: float,
    poll_seconds: float,
) -> Result:
    """POST two readings of a new device to /v1/readings, then GET /v1/devices/<id>/readings every
    `poll_seconds` until both come back, for at most `wait_seconds`. The paths are the API's resources, below
    the stage's invoke URL (which ends in the stage's name, v1)."""
    base = invoke_url.rstrip("/") + "/v1"
    device_id = f"verify-{uuid.uuid4().hex[:12]}"
    now = datetime.now(UTC)
    timestamps = [iso(now - timedelta(seconds=seconds)) for seconds in (2, 1)]
    readings = [
        {
            "device_id": device_id,
            "timestamp": timestamp,
            "metrics": {"temperature": 21.5},
            "sequence": sequence,
        }
        for sequence, timestamp in enumerate(timestamps)
    ]
    status, body = signed_request(
        "POST", f"{base}/readings", api_key, credentials, region, body=json.dumps(readings).encode()
    )
    if status != 202:
        return failed(f"POST /readings answered {status}, not 202: {body[:300]}")
    query = urllib.parse.urlencode({"from": iso(now - timedelta(seconds=10))})
    url = f"{base}/devices/{device_id}/readings?{query}"
    deadline = time.monotonic() + wait_seconds
    found: set[str] = set()
    while True:
        status, body = signed_request("GET", url, api_key, credentials, region)
        if status == 200:
            found = {reading["timestamp"] for reading in json.loads(body)["readings"]}
            if found >= set(timestamps):
                return passed(f"POST 202, both readings of {device_id} read back")
        elif status not in (429, 500, 502, 503, 504):
            return failed(f"GET /devices/{device_id}/readings answered {status}: {body[:300]}")
        if time.monotonic() + poll_seconds > deadline:
            return failed(
                f"{len(found & set(timestamps))} of 2 readings of {device_id} came back "
                f"within {wait_seconds:g} s (last GET answered {status})"
            )
        time.sleep(poll_seconds)


def signed_request(
    method: str,
    url: str,
    api_key: str,
    credentials: Credentials,
    region: str,
    body: bytes | None = None,
) -> tuple[int, str]:
    """Send a request signed with SigV4 for execute-api, with the API key; its status and body."""
    headers = {"x-api-key": api_key, "Accept": "application/json"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    request = AWSRequest(method=method, url=url, data=body, headers=headers)
    SigV4Auth(credentials, "execute-api", region).add_auth(request)
    prepared = urllib.request.Request(url, data=body, headers=dict(request.headers.items()), method=method)
    try:
        with urllib.request.urlopen(prepared, timeout=HTTP_TIMEOUT_SECONDS) as response:
            return int(response.status), response.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")


def check_stream_mapping(target: Target) -> Result:
    """The processor's event source mapping on the stream is enabled."""
    stream_name = target.outputs["stream_name"]
    function_name = target.outputs["processor_function_name"]
    summary = target.client("kinesis").describe_stream_summary(StreamName=stream_name)
    stream_arn = summary["StreamDescriptionSummary"]["StreamARN"]
    # The stack names the function by its ARN; matched here by name, as AWS would match either.
    mappings = [
        mapping
        for page in target.client("lambda")
        .get_paginator("list_event_source_mappings")
        .paginate(EventSourceArn=stream_arn)
        for mapping in page["EventSourceMappings"]
        if mapping["FunctionArn"].split(":")[6] == function_name
    ]
    if not mappings:
        return failed(f"no event source mapping feeds {stream_name} to {function_name}")
    not_enabled = [m for m in mappings if m["State"] != "Enabled"]
    if not_enabled:
        return failed(
            f"the mapping of {stream_name} to {function_name} is {not_enabled[0]['State']}, not Enabled"
        )
    return passed(f"{stream_name} -> {function_name} Enabled")


def check_worker(target: Target) -> Result:
    """The worker service runs at least as many tasks as it wants, and wants at least one."""
    cluster = target.outputs["worker_cluster_name"]
    name = target.outputs["worker_service_name"]
    services = target.client("ecs").describe_services(cluster=cluster, services=[name])["services"]
    if not services:
        return failed(f"no service {name} in the cluster {cluster}")
    service = services[0]
    desired, running = service["desiredCount"], service["runningCount"]
    if desired < 1:
        return failed(f"{name} wants {desired} tasks, not at least 1")
    if target.on_emulator:
        return skipped(f"{EMULATOR_SKIPS_CONTAINERS}: {name} wants {desired}, running tasks not checked")
    if running < desired:
        return failed(f"{name} runs {running} of the {desired} tasks it wants")
    return passed(f"{name} runs {running} of {desired} tasks")


def check_alert_topic(target: Target) -> Result:
    """Everyone the configuration subscribes to the alert topic is subscribed, confirmed or pending."""
    topic_arn = target.outputs["alert_topic_arn"]
    sns = target.client("sns")
    subscriptions = [
        subscription
        for page in sns.get_paginator("list_subscriptions_by_topic").paginate(TopicArn=topic_arn)
        for subscription in page["Subscriptions"]
    ]
    found = {(s["Protocol"], s["Endpoint"]) for s in subscriptions}
    missing = [
        f"{s.protocol}:{s.endpoint}" for s in target.subscriptions if (s.protocol, s.endpoint) not in found
    ]
    if missing:
        return failed(
            f"the alert topic {topic_arn} lacks the configured {', '.join(missing)}: alerts miss them"
        )
    if not subscriptions:
        return skipped("the configuration subscribes no one to the alerts (AlertSettings)")
    pending = sum(s["SubscriptionArn"] == "PendingConfirmation" for s in subscriptions)
    return passed(f"{len(subscriptions)} subscription(s), {pending} pending confirmation")


def check_data_stores(target: Target) -> Result:
    """PostgreSQL, Redis and the archive file system answer the worker's probe, run with the worker's own
    settings: in AWS as a one-off task of the worker's task definition, so from inside the VPC through its
    security group; on the emulator, which runs no containers, as a process of this machine against the
    local stores that stand in for them."""
    if target.on_emulator:
        if target.stores is None:
            return skipped(NO_LOCAL_STORES)
        probe = subprocess.run(
            [sys.executable, *PROBE_COMMAND[1:]],  # python -m stream_worker.probe, as in the image
            cwd=FUNCTIONS_DIR,
            env={
                **os.environ,
                **worker_environment(target.client("ecs"), target.outputs, target.stores),
                "PYTHONDONTWRITEBYTECODE": "1",
            },
            capture_output=True,
            text=True,
            check=False,
        )
        print(probe.stdout + probe.stderr, end="", flush=True)
        exit_code = probe.returncode
    else:
        (service,) = target.client("ecs").describe_services(
            cluster=target.outputs["worker_cluster_name"], services=[target.outputs["worker_service_name"]]
        )["services"]
        try:
            exit_code = run_task(
                target.outputs,
                target.aws(),
                service["taskDefinition"],
                PROBE_COMMAND,
                WORKER_CONTAINER,
                poll_seconds=target.task_poll_seconds,
            )
        except TaskError as error:
            return failed(str(error))
    if exit_code != 0:
        return failed(f"the worker's probe exited with {exit_code}: its lines above name the store")
    return passed("PostgreSQL, Redis and the archive file system answer the worker")


CHECKS: dict[str, Check] = {
    "api": check_api,
    "stream-mapping": check_stream_mapping,
    "worker": check_worker,
    "alert-topic": check_alert_topic,
    "data-stores": check_data_stores,
}


def run(target: Target, checks: Mapping[str, Check] = CHECKS) -> dict[str, Result]:
    """Every check's result, in the order of `checks`. The checks run at once, as most of their time is spent
    waiting (readings to come back through the API, the probe task to stop); a check that raises fails with
    the error, and the others still run."""

    def result(check: Check) -> Result:
        try:
            return check(target)
        except KeyError as error:
            return failed(f"the outputs have no {error.args[0]}")
        except (BotoCoreError, ClientError, urllib.error.URLError, OSError, ValueError) as error:
            return failed(f"{type(error).__name__}: {error}")

    with ThreadPoolExecutor(len(checks)) as pool:
        futures = {name: pool.submit(result, check) for name, check in checks.items()}
    return {name: future.result() for name, future in futures.items()}


def report(results: Mapping[str, Result]) -> str:
    width = max(map(len, results))
    labels = {"passed": "PASS", "failed": "FAIL", "skipped": "SKIP"}
    lines = [f"{labels[r.status]}  {name:<{width}}  {r.detail}".rstrip() for name, r in results.items()]
    counts = {status: sum(r.status == status for r in results.values()) for status in labels}
    lines.append(", ".join(f"{count} {status}" for status, count in counts.items()))
    return "\n".join(lines)


def emulator_endpoint(
    config: EnvironmentConfig, outputs: Mapping[str, Any], environ: Mapping[str, str]
) -> str | None:
    """Where the emulator listens if the environment runs on it: LOCAL_AWS_ENDPOINT, else the loopback origin
    the outputs name (`make deploy` picks a free port), else the configured one; None for real AWS."""
    loopback = sorted(
        value for value in outputs.values() if isinstance(value, str) and value.startswith(LOOPBACK_PREFIXES)
    )
    if not config.emulator_endpoint and not loopback:
        return None
    if environ.get("LOCAL_AWS_ENDPOINT"):
        return environ["LOCAL_AWS_ENDPOINT"]
    if loopback:
        parts = urllib.parse.urlsplit(loopback[0])
        return f"{parts.scheme}://{parts.netloc}"
    return config.emulator_endpoint


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] = os.environ) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.verify", description=__doc__.split("\n")[0])
    parser.add_argument("environment", help="dev, staging, prod, local, or a short-lived suffix (pr-7)")
    parser.add_argument("--outputs", type=Path, help="the outputs file (default: outputs/<ENV>.json)")
    args = parser.parse_args(argv)
    path: Path = args.outputs or PROJECT_ROOT / "outputs" / f"{args.environment}.json"
    try:
        config = configuration(args.environment, environ)
        outputs = load_outputs(path)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as error:
        print(f"error: cannot read the outputs file {path}: {error}", file=sys.stderr)
        return 2
    endpoint = emulator_endpoint(config, outputs, environ)
    target = Target(
        outputs,
        endpoint=endpoint,
        stores=running_stores() if endpoint else None,
        subscriptions=config.alerts.subscriptions,
    )
    where = f"the emulator at {target.endpoint}" if target.on_emulator else "AWS"
    print(f"Verifying {config.stack_name} on {where}, from {path}", flush=True)
    results = run(target)
    print(report(results))
    return 1 if any(result.status == "failed" for result in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
