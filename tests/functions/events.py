"""Event builders: the recorded events in fixtures/, with the parts a test varies replaced."""

import base64
import copy
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent / "fixtures"


def _recorded(name: str) -> dict[str, Any]:
    recorded: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return recorded


POST_READINGS = _recorded("api_gateway_post_readings.json")
GET_READINGS = _recorded("api_gateway_get_readings.json")
KINESIS_RECORD = _recorded("kinesis_record.json")
# The API key id both recorded API events carry: the client the tests register their devices to.
CLIENT_ID = POST_READINGS["requestContext"]["identity"]["apiKeyId"]


def post_readings(body: str, client_id: str | None = CLIENT_ID) -> dict[str, Any]:
    event = copy.deepcopy(POST_READINGS)
    event["body"] = body
    event["requestContext"]["identity"]["apiKeyId"] = client_id
    return event


def get_readings(
    device_id: str,
    parameters: dict[str, str] | None = None,
    *,
    route: str = "readings",
    client_id: str | None = CLIENT_ID,
) -> dict[str, Any]:
    """A GET of one of the device routes: readings, latest or rollups."""
    event = copy.deepcopy(GET_READINGS)
    event["resource"] = event["requestContext"]["resourcePath"] = f"/v1/devices/{{device_id}}/{route}"
    event["path"] = f"/v1/devices/{device_id}/{route}"
    event["requestContext"]["path"] = f"/dev/v1/devices/{device_id}/{route}"
    event["requestContext"]["identity"]["apiKeyId"] = client_id
    event["pathParameters"] = {"device_id": device_id}
    event["queryStringParameters"] = parameters or None
    event["multiValueQueryStringParameters"] = {k: [v] for k, v in parameters.items()} if parameters else None
    return event


def kinesis_event(stream_arn: str, shard_id: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    """The event a Kinesis event source mapping delivers for records as GetRecords returns them."""
    event_records = []
    for record in records:
        event_record = copy.deepcopy(KINESIS_RECORD)
        event_record["kinesis"] |= {
            "partitionKey": record["PartitionKey"],
            "sequenceNumber": record["SequenceNumber"],
            "data": base64.b64encode(record["Data"]).decode(),
            "approximateArrivalTimestamp": record["ApproximateArrivalTimestamp"].timestamp(),
        }
        event_record["eventID"] = f"{shard_id}:{record['SequenceNumber']}"
        event_record["awsRegion"] = stream_arn.split(":")[3]
        event_record["eventSourceARN"] = stream_arn
        event_records.append(event_record)
    return {"Records": event_records}


def minutes_ago(minutes: int, *, seconds: float = 0) -> datetime:
    """A moment at a whole minute in the recent past, plus seconds: readings land in known minutes."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    return now - timedelta(minutes=minutes) + timedelta(seconds=seconds)


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def reading(device_id: str, moment: datetime, **metrics: float) -> dict[str, Any]:
    return {"device_id": device_id, "timestamp": iso(moment), "metrics": metrics}
