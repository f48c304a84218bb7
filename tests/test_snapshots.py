"""One golden, normalized JSON per environment: a change to the platform shows as a readable diff.

Update after an intended change with `make snapshots` and explain the diff in the commit message.
"""

import re
from typing import Any

import pytest
from syrupy.assertion import SnapshotAssertion
from syrupy.extensions.json import JSONSnapshotExtension

# A function's code is hashed into its asset path and source_code_hash; code changes are reviewed as code.
ASSET_HASH = re.compile(r"\b[0-9A-F]{32}\b")


def normalized(node: Any) -> Any:
    """The stack without cdktf's `//` metadata (construct paths, versions), which is not Terraform, and
    with function code hashes replaced by a placeholder."""
    if isinstance(node, dict):
        return {key: normalized(value) for key, value in node.items() if key != "//"}
    if isinstance(node, list):
        return [normalized(item) for item in node]
    if isinstance(node, str):
        return ASSET_HASH.sub("<asset-hash>", node)
    return node


@pytest.fixture
def snapshot_json(snapshot: SnapshotAssertion) -> SnapshotAssertion:
    return snapshot.use_extension(JSONSnapshotExtension)


def test_the_synthesized_stack_matches_its_snapshot(
    stack: dict[str, Any], snapshot_json: SnapshotAssertion
) -> None:
    assert normalized(stack) == snapshot_json
