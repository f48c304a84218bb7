"""`python -m tools.local deploy ENV | destroy ENV | emulator | plan ENV`: the Makefile's deploy, destroy and
plan.

deploy ENV   starts the emulator and the local data stores (PostgreSQL, redis-server; or reuses the
             running ones), deploys ENV (local, or any short-lived suffix such as pr-7, with the local
             environment's exclusions) to the emulator, writes outputs/ENV.json, sends sample readings through
             it (the worker runs against the stores) and prints what each store holds; all keep running for
             `destroy`, `plan` and `npx cdktf deploy|destroy <stack>`.
destroy ENV  destroys ENV on the emulator and stops the emulator and the stores.
emulator starts the emulator (or finds the running one), creates the local state bucket in it and prints
         its endpoint, for LOCAL_AWS_ENDPOINT.
plan ENV plans any environment (local: on the emulator) into cdktf.out/stacks/<stack>/: plan.tfplan,
         plan.json and plan.md, the summary for reviewers, which it prints.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

from stacks.app import synth_all
from stacks.config import (
    STANDING_ENVIRONMENTS,
    ConfigError,
    EnvironmentConfig,
    environment,
    load_environments,
)
from stacks.emulator import IGNORED_DRIFT, OMITTED_ARGUMENTS, UNSUPPORTED_RESOURCES
from tools.local.emulator import Emulator, EmulatorError, start
from tools.local.plan_review import review
from tools.local.round_trip import RoundTripError, round_trip
from tools.local.security_scan import ScanError
from tools.local.servers import STORES_STATE, LocalStores, running_stores
from tools.local.terraform import Terraform, TerraformError
from tools.terraform import terraform_environ

PROJECT_ROOT = Path(__file__).resolve().parents[2]
OUTDIR = PROJECT_ROOT / "cdktf.out"
OUTPUTS_DIR = PROJECT_ROOT / "outputs"
EMULATOR_STATE = PROJECT_ROOT / ".cache" / "local" / "emulator.json"
EMULATOR_LOG = EMULATOR_STATE.with_name("moto.log")


def deploy(name: str) -> None:
    started = time.monotonic()
    emulator = running_emulator() or start_emulator()
    config, terraform = prepare(name, emulator)
    print_workarounds()
    step("Deploying")
    terraform.apply()
    outputs = terraform.outputs()
    outputs_file = OUTPUTS_DIR / f"{name}.json"
    OUTPUTS_DIR.mkdir(exist_ok=True)
    outputs_file.write_text(json.dumps(outputs, indent=2) + "\n")
    stores = running_stores() or start_stores()
    step("Sending sample readings through the deployed resources and the worker")
    result = round_trip(outputs, endpoint=emulator.endpoint, stores=stores)
    print(
        f"\nDeployed {config.stack_name} to the emulator at {emulator.endpoint} "
        f"in {time.monotonic() - started:.0f} s\n"
        f"  resources  {len(terraform.resources())} deployed\n"
        f"  readings   {result.sent} sent, {result.accepted} accepted and put on the stream\n"
        f"  DynamoDB   {result.stored} raw readings, {result.aggregated} counted in the minute aggregates "
        f"(the processor)\n"
        f"  PostgreSQL {result.rolled_up} counted in the hourly rollups (the worker; GET .../rollups)\n"
        f"  Redis      the latest reading of {result.latest} devices (the worker; GET .../latest)\n"
        f"  archive    {result.archived} readings in {stores.archive_dir.relative_to(PROJECT_ROOT)}/ "
        f"(the worker)\n"
        f"  query      {result.returned} readings returned by GET .../readings\n"
        f"  outputs    {outputs_file.relative_to(PROJECT_ROOT)}\n"
        f"  destroy    make destroy ENV={name}"
    )


def destroy(name: str) -> None:
    started = time.monotonic()
    emulator = running_emulator()
    if emulator:
        config, terraform = prepare(name, emulator)
        resources = len(terraform.resources())
        step("Destroying")
        terraform.destroy()
        emulator.stop()
        took = time.monotonic() - started
        print(
            f"\nDestroyed {resources} resources of {config.stack_name} in {took:.0f} s; stopped the emulator."
        )
    else:
        print(f"The emulator is not running, so there is no {name} environment on it to destroy.")
    stores = running_stores()
    if stores:
        stores.stop()
        print("Stopped the local PostgreSQL and redis-server.")
    STORES_STATE.unlink(missing_ok=True)
    EMULATOR_STATE.unlink(missing_ok=True)
    (OUTPUTS_DIR / f"{name}.json").unlink(missing_ok=True)


def plan(name: str) -> None:
    emulator = (running_emulator() or start_emulator()) if name == "local" else None
    config, terraform = prepare(name, emulator)
    step("Planning, and scanning the stack (checkov)")
    summary = review(terraform, config.stack_name)
    print(
        f"\n{summary}\nIn {terraform.stack_dir.relative_to(PROJECT_ROOT)}/: plan.tfplan, plan.json, plan.md"
    )


def emulator_endpoint() -> str:
    """The running emulator's endpoint, with the local state bucket in it: for `npx cdktf deploy`."""
    emulator = running_emulator() or start_emulator()
    emulator.create_state_bucket(environment("local", os.environ).backend)
    return emulator.endpoint


def prepare(name: str, emulator: Emulator | None) -> tuple[EnvironmentConfig, Terraform]:
    """Synthesize the environment `name` and `terraform init` its stack; on the emulator if given (which only
    the local environment and short-lived ones run on)."""
    if emulator and name in STANDING_ENVIRONMENTS and name != "local":
        raise ConfigError(
            f"{name} never runs on the emulator: deploy local or a short-lived suffix (for example pr-7)"
        )
    environ = dict(os.environ)
    if emulator:
        environ["LOCAL_AWS_ENDPOINT"] = emulator.endpoint
    if name not in STANDING_ENVIRONMENTS:
        environ["ENVIRONMENT_SUFFIX"] = name
    config = next(config for config in load_environments(environ) if config.name == name)
    if emulator:
        emulator.create_state_bucket(config.backend)
    step(f"Synthesizing into {OUTDIR.relative_to(PROJECT_ROOT)}/")
    synth_all(OUTDIR, environ)
    terraform = Terraform(OUTDIR / "stacks" / config.stack_name, terraform_environ(environ), echo=True)
    step(f"terraform init ({config.stack_name})")
    terraform.init()
    return config, terraform


def running_emulator() -> Emulator | None:
    """The emulator an earlier command started, if it still answers."""
    if not EMULATOR_STATE.exists():
        return None
    emulator = Emulator(**json.loads(EMULATOR_STATE.read_text()))
    return emulator if emulator.answers() else None


def start_emulator() -> Emulator:
    step("Starting the emulator (moto)")
    emulator = start(EMULATOR_LOG)
    EMULATOR_STATE.write_text(json.dumps({"endpoint": emulator.endpoint, "pid": emulator.pid}))
    print(
        f"moto listens at {emulator.endpoint} (log: {EMULATOR_LOG.relative_to(PROJECT_ROOT)})",
        file=sys.stderr,
    )
    return emulator


def start_stores() -> LocalStores:
    step("Starting the local data stores (PostgreSQL, redis-server)")
    stores = LocalStores.start(STORES_STATE.parent / "stores")
    STORES_STATE.write_text(stores.to_json())
    return stores


def print_workarounds() -> None:
    """What the local environment leaves out or ignores because of the emulator (stacks/emulator.py)."""
    print("\nThe local environment differs from the real ones where the emulator falls short:")
    print("  left out, because the emulator cannot create, read or delete them:")
    for resource_type, error in UNSUPPORTED_RESOURCES.items():
        print(f"    {resource_type}: {error}")
    print("  arguments dropped:")
    for workaround in OMITTED_ARGUMENTS:
        print(f"    {workaround.resource_type}.{workaround.attribute}: {workaround.emulator}")
    print("  differences ignored, because only the emulator causes them:")
    for workaround in IGNORED_DRIFT:
        print(f"    {workaround.resource_type}.{workaround.attribute}: {workaround.emulator}")


def step(title: str) -> None:
    """Progress goes to stderr: stdout carries results (the endpoint of `emulator`)."""
    print(f"\n==> {title}", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tools.local", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for command, does in (
        ("deploy", "deploy an environment to the emulator and send readings through"),
        ("destroy", "destroy an environment on the emulator and stop the emulator"),
    ):
        commands.add_parser(command, help=does).add_argument(
            "environment", nargs="?", default="local", help="local (the default) or a short-lived suffix"
        )
    commands.add_parser(
        "emulator", help="start the emulator (or find the running one) and print its endpoint"
    )
    plan_parser = commands.add_parser("plan", help="plan an environment and summarize the plan for review")
    plan_parser.add_argument("environment", help="dev, staging, prod, local, or a short-lived suffix")
    args = parser.parse_args()
    try:
        if args.command == "deploy":
            deploy(args.environment)
        elif args.command == "destroy":
            destroy(args.environment)
        elif args.command == "emulator":
            print(emulator_endpoint())
        else:
            plan(args.environment)
    except (ConfigError, EmulatorError, RoundTripError, ScanError, TerraformError) as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
