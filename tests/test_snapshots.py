"""One golden, normalized JSON per environment: a change to the platform shows as a readable diff.

Update after an intended change with `make snapshots` and explain the diff in the commit message.
"""

from typing import Any

import pytest
from syrupy.assertion import SnapshotAssertion
from syrupy.extensions.json import JSONSnapshotExtension


def normalized(node: Any) -> Any:
    """The stack without cdktf's `//` metadata (construct paths, versions), which is not Terraform."""
    if isinstance(node, dict):
        return {key: normalized(value) for key, value in node.items() if key != "//"}
    if isinstance(node, list):
        return [normalized(item) for item in node]
    return node


@pytest.fixture
def snapshot_json(snapshot: SnapshotAssertion) -> SnapshotAssertion:
    return snapshot.use_extension(JSONSnapshotExtension)


def test_the_synthesized_stack_matches_its_snapshot(
    stack: dict[str, Any], snapshot_json: SnapshotAssertion
) -> None:
    assert normalized(stack) == snapshot_json
