"""The project's own code passes its linters and type checker (configured in pyproject.toml)."""

import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@pytest.mark.parametrize(
    "command",
    [["ruff", "check", "."], ["ruff", "format", "--check", "."], ["mypy"]],
    ids=["ruff-lint", "ruff-format", "mypy"],
)
def test_the_code_passes(command: list[str]) -> None:
    result = subprocess.run(
        [str(BIN / command[0]), *command[1:]], cwd=PROJECT_ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_refuses_a_wrong_argument_to_a_provider_binding(tmp_path: Path) -> None:
    """Fast synth skips the bindings' runtime type checks; mypy checks every call into them instead."""
    module = tmp_path / "wrong_binding.py"
    module.write_text(
        "from cdktf_cdktf_provider_aws.kinesis_stream import KinesisStream\n"
        "from constructs import Construct\n\n\n"
        "def build(scope: Construct) -> None:\n"
        '    KinesisStream(scope, "s", name=123, no_such_argument=True)\n'
    )
    result = subprocess.run(
        [str(BIN / "mypy"), str(module)], cwd=PROJECT_ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert 'Unexpected keyword argument "no_such_argument" for "KinesisStream"' in result.stdout
    assert 'Argument "name" to "KinesisStream" has incompatible type "int"; expected "str"' in result.stdout
