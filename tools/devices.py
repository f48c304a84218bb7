"""`python -m tools.devices register --env ENV --client API_KEY_ID DEVICE_ID...`: register devices to the API
client that owns them, in a deployed environment's device registry.

Runs `python -m stream_worker.devices register ...` (functions/stream_worker/devices.py) as a one-off task of
the environment's admin task definition, as tools.migrate does; prints its exit code and log lines, and fails
unless it exited 0. Registering is idempotent; a device registered to another client is refused, naming it,
and then nothing is registered. The API key id is the client's (`aws apigateway get-api-keys`). Ingest and
query see a registration within half a minute (the worker republishes the owners map to Redis).
"""

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from tools.migrate import run


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.devices", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    registration = commands.add_parser("register", help="register devices to a client")
    registration.add_argument(
        "--env", required=True, help="dev, staging, prod, or a short-lived suffix (pr-7)"
    )
    registration.add_argument("--outputs", type=Path, help="the outputs file (default: outputs/<ENV>.json)")
    registration.add_argument("--client", required=True, help="the owning client's API key id")
    registration.add_argument("device_ids", nargs="+", metavar="device_id")
    args = parser.parse_args(argv)
    command = ["python", "-m", "stream_worker.devices", "register", "--client", args.client, *args.device_ids]
    return run(args.env, args.outputs, command)


if __name__ == "__main__":
    sys.exit(main())
