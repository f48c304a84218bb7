"""Records the AWS calls code makes, through botocore's event hooks, with the IAM actions that authorize them.

Registered on a boto3 session (or, in a subprocess, on every botocore and aiobotocore session), it sees each
call's operation and parameters before they are serialized, and notes the resource the call touches: a table
name, a stream name or ARN, a topic ARN, a parameter name, a secret id, a replication group id. Shard
iterators and paging tokens are traced back to the stream they came from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# IAM service prefixes that differ from botocore's signing name.
IAM_PREFIXES: dict[str, str] = {}
# TransactWriteItems is authorized item by item (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/transaction-apis-iam.html).
TRANSACT_WRITE_ACTIONS = {
    "Put": "PutItem",
    "Update": "UpdateItem",
    "Delete": "DeleteItem",
    "ConditionCheck": "ConditionCheckItem",
}
# SNS authorizes PublishBatch as sns:Publish (https://docs.aws.amazon.com/sns/latest/api/API_PublishBatch.html).
RENAMED_ACTIONS = {("sns", "PublishBatch"): "Publish"}
# The parameter that names the resource an operation touches, by service.
RESOURCE_PARAMETERS = {
    "dynamodb": ("TableName",),
    "kinesis": ("StreamARN", "StreamName"),
    "sns": ("TopicArn", "TargetArn"),
    "ssm": ("Name", "Path"),
    "secretsmanager": ("SecretId",),
    "elasticache": ("ReplicationGroupId",),
    "sqs": ("QueueUrl",),
}


@dataclass(frozen=True)
class Call:
    service: str
    """botocore's service name: kinesis, dynamodb, ..."""
    operation: str
    action: str
    """The IAM action authorizing (this part of) the call: dynamodb:PutItem for a TransactWriteItems Put."""
    resource: str
    """What the call names: a table or stream name, an ARN, a parameter name...; "*" when it names none."""


def authorizations(service: str, operation: str, params: dict[str, Any]) -> list[tuple[str, str]]:
    """(IAM action, resource named) for each authorization a call needs."""
    prefix = IAM_PREFIXES.get(service, service)
    if service == "dynamodb" and operation in ("BatchWriteItem", "BatchGetItem"):
        return [(f"{prefix}:{operation}", table) for table in params.get("RequestItems", {})]
    if service == "dynamodb" and operation == "TransactWriteItems":
        found = []
        for item in params.get("TransactItems", []):
            for kind, request in item.items():
                found.append((f"{prefix}:{TRANSACT_WRITE_ACTIONS[kind]}", request["TableName"]))
        return found
    if service == "dynamodb" and operation == "TransactGetItems":
        return [(f"{prefix}:GetItem", item["Get"]["TableName"]) for item in params.get("TransactItems", [])]
    if service == "ssm" and operation == "GetParameters":
        return [(f"{prefix}:GetParameters", name) for name in params.get("Names", [])]
    action = f"{prefix}:{RENAMED_ACTIONS.get((service, operation), operation)}"
    names = [params[key] for key in RESOURCE_PARAMETERS.get(service, ()) if params.get(key)]
    return [(action, str(names[0]) if names else "*")]


class Recorder:
    """Turns botocore events into Calls, handed to `sink` as they happen."""

    def __init__(self, sink: Callable[[str, Call], None]) -> None:
        self.sink = sink
        self.principal = ""
        self._streams: dict[str, str] = {}  # shard iterator or paging token -> the stream it belongs to

    def handlers(self) -> list[tuple[str, Callable[..., None]]]:
        return [("before-parameter-build", self.before_call), ("after-call.kinesis", self.after_kinesis_call)]

    def register(self, events: Any) -> None:
        for event, handler in self.handlers():
            events.register(event, handler)

    def before_call(self, params: dict[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
        service = model.service_model.signing_name or model.service_model.service_name
        if service == "kinesis":
            named = params.get("StreamARN") or params.get("StreamName")
            position = params.get("ShardIterator") or params.get("NextToken")
            stream = named or self._streams.get(str(position), "*")
            context["contract_stream"] = stream
            params = {**params, "StreamName": stream}
        for action, resource in authorizations(service, model.name, params):
            self.sink(self.principal, Call(service, model.name, action, resource))

    def after_kinesis_call(self, parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        stream = context.get("contract_stream")
        for key in ("ShardIterator", "NextShardIterator", "NextToken"):
            if stream and parsed.get(key):
                self._streams[str(parsed[key])] = stream
