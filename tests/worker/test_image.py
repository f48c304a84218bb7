"""The worker image (functions/stream_worker/Dockerfile) installs what its code imports, as locked."""

import ast
import json
from importlib.metadata import packages_distributions, requires
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

PROJECT_ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS = PROJECT_ROOT / "functions"
# The code the Dockerfile copies.
IMAGE_CODE = (
    FUNCTIONS / "stream_worker" / "worker.py",
    FUNCTIONS / "stream_worker" / "config.py",
    FUNCTIONS / "processor" / "handler.py",
)


def pins() -> dict[str, str]:
    pinned: dict[str, str] = {}
    for line in (FUNCTIONS / "stream_worker" / "requirements.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pinned[canonicalize_name(name)] = version
    return pinned


def test_each_package_is_at_its_locked_version() -> None:
    lock = json.loads((PROJECT_ROOT / "Pipfile.lock").read_text())
    locked: dict[str, str] = {
        canonicalize_name(name): entry["version"].removeprefix("==")
        for section in ("default", "develop")
        for name, entry in lock[section].items()
    }
    assert {name: locked.get(name) for name in pins()} == pins()


def test_every_dependency_of_a_package_is_pinned() -> None:
    """Installed as this environment has them, which is at the same versions."""
    needed = {
        canonicalize_name(requirement.name)
        for name in pins()
        for requirement in map(Requirement, requires(name) or [])
        if requirement.marker is None or requirement.marker.evaluate({"extra": ""})
    }
    assert needed - pins().keys() == set()


def test_every_package_the_code_imports_is_pinned() -> None:
    modules = set()
    for path in IMAGE_CODE:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                modules.add(node.module.split(".")[0])
    distributions = packages_distributions()
    imported = {canonicalize_name(name) for module in modules for name in distributions.get(module, [])}
    assert imported and imported - pins().keys() == set()
