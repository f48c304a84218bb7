"""`python -m tools.migrate --env ENV [--outputs FILE]`: apply the PostgreSQL migrations of a deployed
environment (`make migrate ENV=...`).

Runs the environment's admin task definition (the worker's image as the database's admin user; its command is
`python -m stream_worker.migrate`) as a one-off ECS Fargate task in the worker's cluster, private subnets and
security group; waits for it to stop; prints its exit code, its log lines and where its logs are; and fails
unless it exited 0. The outputs file is the one `cdktf deploy --outputs-file outputs/<env>.json` writes; the
caller's AWS credentials need ecs:RunTask, ecs:DescribeTasks, ecs:DescribeTaskDefinition, iam:PassRole on the
task's roles, and logs:GetLogEvents.

tools.devices runs the same task with another command. An environment on the emulator (local, or a short-lived
one that `make deploy ENV=...` deployed there) runs no containers: there the command runs as a process of this
machine, against the local PostgreSQL that `make deploy` started.
"""

import argparse
import math
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError, WaiterError

from iot_constructs.database import DATABASE_NAME
from stacks.config import ConfigError, configuration
from tools.local.round_trip import load_outputs
from tools.local.servers import running_stores

PROJECT_ROOT = Path(__file__).resolve().parents[1]
FUNCTIONS_DIR = PROJECT_ROOT / "functions"
# The admin task definition's own command.
MIGRATE_COMMAND = ("python", "-m", "stream_worker.migrate")
# The task pulls the image, waits for the database and exits: minutes at most.
WAIT_SECONDS = 600
POLL_SECONDS = 6.0
LOG_LINES = 50


class TaskError(Exception):
    pass


def run_task(
    outputs: Mapping[str, Any],
    session: Any,
    task_definition: str,
    command: Sequence[str] | None,
    container_name: str | None = None,
    poll_seconds: float = POLL_SECONDS,
) -> int:
    """Runs one task of `task_definition` in the worker's cluster, private subnets and security group until it
    stops, with `command` instead of its container's own (the container `container_name`, or the definition's
    only one); returns that container's exit code. Raises TaskError if ECS cannot start the task, or it does
    not stop within WAIT_SECONDS, or stops without one."""
    ecs = session.client("ecs")
    cluster = outputs["worker_cluster_name"]
    definition = ecs.describe_task_definition(taskDefinition=task_definition)["taskDefinition"]
    (container,) = [c for c in definition["containerDefinitions"] if container_name in (None, c["name"])]
    response = ecs.run_task(
        cluster=cluster,
        taskDefinition=definition["taskDefinitionArn"],
        launchType="FARGATE",
        count=1,
        startedBy="iot-platform-tools",
        networkConfiguration={
            "awsvpcConfiguration": {
                "subnets": list(outputs["private_subnet_ids"]),
                "securityGroups": [outputs["worker_security_group_id"]],
                "assignPublicIp": "DISABLED",
            }
        },
        overrides={"containerOverrides": [{"name": container["name"], "command": list(command)}]}
        if command
        else {},
    )
    if response["failures"] or not response["tasks"]:
        raise TaskError(f"ECS did not start the task: {response['failures']}")
    task_arn = response["tasks"][0]["taskArn"]
    print(f"Started {task_arn} ({' '.join(command or container.get('command', []))})", flush=True)
    try:
        ecs.get_waiter("tasks_stopped").wait(
            cluster=cluster,
            tasks=[task_arn],
            WaiterConfig={"Delay": poll_seconds, "MaxAttempts": math.ceil(WAIT_SECONDS / poll_seconds)},
        )
    except WaiterError as error:
        raise TaskError(f"{task_arn} did not stop in time: {error}") from None
    task = ecs.describe_tasks(cluster=cluster, tasks=[task_arn])["tasks"][0]
    print_logs(session, container, task_arn)
    exit_code = next((c.get("exitCode") for c in task["containers"] if c["name"] == container["name"]), None)
    if exit_code is None:
        raise TaskError(f"{task_arn} stopped without an exit code: {task.get('stoppedReason', 'no reason')}")
    print(f"The task exited with {exit_code}")
    return int(exit_code)


def print_logs(session: Any, container: Mapping[str, Any], task_arn: str) -> None:
    """Where the task's logs are (the awslogs driver's group and stream), and their last lines."""
    options = container.get("logConfiguration", {}).get("options", {})
    if "awslogs-group" not in options:
        print("The task's container sends its logs nowhere this tool can read")
        return
    group = options["awslogs-group"]
    stream = f"{options['awslogs-stream-prefix']}/{container['name']}/{task_arn.rsplit('/', 1)[-1]}"
    print(f"Logs: log group {group}, stream {stream}")
    try:
        events = session.client("logs").get_log_events(
            logGroupName=group, logStreamName=stream, limit=LOG_LINES, startFromHead=False
        )["events"]
    except ClientError as error:
        print(f"  (not readable: {error})")
        return
    for event in events:
        print(f"  {event['message']}")


def run_locally(environment: str, command: Sequence[str]) -> int:
    """The admin command as a process of this machine, against the local PostgreSQL that `make deploy`
    started for the environment on the emulator (which runs no containers)."""
    stores = running_stores()
    if not stores:
        print(
            f"error: the local data stores are not running: `make deploy ENV={environment}` starts them",
            file=sys.stderr,
        )
        return 2
    stores.create_database(DATABASE_NAME)
    finished = subprocess.run(
        [sys.executable, *command[1:]],  # python -m stream_worker.<...>, as in the image
        cwd=FUNCTIONS_DIR,
        env={**os.environ, **stores.admin_environment(DATABASE_NAME), "PYTHONDONTWRITEBYTECODE": "1"},
        check=False,
    )
    return 0 if finished.returncode == 0 else 1


def run(environment: str, outputs_path: Path | None, command: Sequence[str] | None) -> int:
    """The admin task of `environment`, from its outputs file; the exit status for the command line."""
    path = outputs_path or PROJECT_ROOT / "outputs" / f"{environment}.json"
    try:
        config = configuration(environment, os.environ)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if config.emulator_endpoint:
        return run_locally(environment, command or MIGRATE_COMMAND)
    try:
        outputs = load_outputs(path)
    except (OSError, ValueError) as error:
        print(f"error: cannot read the outputs file {path}: {error}", file=sys.stderr)
        return 2
    session = boto3.Session(region_name=outputs["admin_task_definition_arn"].split(":")[3])
    try:
        exit_code = run_task(outputs, session, outputs["admin_task_definition_arn"], command)
    except (TaskError, BotoCoreError, ClientError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0 if exit_code == 0 else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.migrate", description=__doc__.split("\n")[0])
    parser.add_argument("--env", required=True, help="dev, staging, prod, or a short-lived suffix (pr-7)")
    parser.add_argument("--outputs", type=Path, help="the outputs file (default: outputs/<ENV>.json)")
    args = parser.parse_args(argv)
    return run(args.env, args.outputs, command=None)


if __name__ == "__main__":
    sys.exit(main())
