"""`python -m stream_worker.devices register --client <api-key-id> <device_id>...`: registers devices to the
API client that owns them (readings.ownership), in the device registry.

Registering is idempotent: a device already registered to the client stays as it is. A device registered to
another client is refused, and then nothing is registered. The worker publishes the registry's owners into
Redis within readings.ownership.OWNERS_PUBLISH_SECONDS, after which ingest and query accept the client's
readings and requests for the devices.

Connects as the admin user, as stream_worker.migrate does.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import psycopg
from readings import DEVICE_ID
from stream_worker.migrate import admin_conninfo

# API Gateway's API key ids are ten lowercase letters and digits; this refuses what cannot be one (spaces,
# quotes, a key's value pasted by mistake is longer).
CLIENT_ID = re.compile(r"[A-Za-z0-9]{1,64}")


class RegistrationError(ValueError):
    pass


@dataclass(frozen=True)
class Registered:
    new: list[str]
    already: list[str]


def register(conninfo: str, client_id: str, device_ids: Sequence[str]) -> Registered:
    """Registers the devices to the client, all or none; raises RegistrationError naming the devices that
    are invalid or another client's."""
    if not CLIENT_ID.fullmatch(client_id):
        raise RegistrationError(f"{client_id!r} is not an API key id")
    if not device_ids:
        raise RegistrationError("name at least one device")
    invalid = [device_id for device_id in device_ids if not DEVICE_ID.fullmatch(device_id)]
    if invalid:
        raise RegistrationError(f"invalid device ids (pattern {DEVICE_ID.pattern}): {', '.join(invalid)}")
    wanted = sorted(set(device_ids))
    with psycopg.connect(conninfo) as connection, connection.transaction():
        # The rows, new or not, are locked until COMMIT: a registration of the same device by another client
        # waits, then finds it taken.
        connection.execute(
            "INSERT INTO devices (device_id) SELECT unnest(%s::text[]) ON CONFLICT DO NOTHING", [wanted]
        )
        owners: dict[str, str | None] = dict(
            connection.execute(
                "SELECT device_id, client_id FROM devices WHERE device_id = ANY(%s) FOR UPDATE", [wanted]
            ).fetchall()
        )
        taken = [device_id for device_id in wanted if owners[device_id] not in (None, client_id)]
        if taken:
            raise RegistrationError(f"devices registered to another client: {', '.join(taken)}")
        new = [device_id for device_id in wanted if owners[device_id] is None]
        connection.execute(
            "UPDATE devices SET client_id = %s, registered_at = now() WHERE device_id = ANY(%s)",
            [client_id, new],
        )
    return Registered(new=new, already=[device_id for device_id in wanted if device_id not in new])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m stream_worker.devices", description=__doc__.split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    registration = commands.add_parser("register", help="register devices to a client")
    registration.add_argument("--client", required=True, help="the owning client's API key id")
    registration.add_argument("device_ids", nargs="+", metavar="device_id")
    args = parser.parse_args(argv)
    try:
        registered = register(admin_conninfo(), args.client, args.device_ids)
    except (RegistrationError, ValueError, psycopg.Error) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(
        f"Registered {len(registered.new)} devices to {args.client}"
        + (f"; {len(registered.already)} were already" if registered.already else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
