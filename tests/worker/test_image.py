"""The worker image (functions/stream_worker/Dockerfile) holds what its code imports: the packages, as locked,
and the project's own modules, laid out as they import."""

import ast
import json
import os
import shutil
import subprocess
import sys
from importlib.metadata import packages_distributions, requires
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

PROJECT_ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS = PROJECT_ROOT / "functions"  # the build context
DOCKERFILE = FUNCTIONS / "stream_worker" / "Dockerfile"


def copy_instructions() -> dict[str, str]:
    """The Dockerfile's COPY sources (files, or patterns), each with its destination."""
    copies: dict[str, str] = {}
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("COPY "):
            *sources, destination = line.split()[1:]
            copies |= dict.fromkeys(sources, destination)
    return copies


def copied() -> dict[str, str]:
    """Where the Dockerfile copies each file of its context to, relative to its working directory."""
    copies = {}
    for pattern, destination in copy_instructions().items():
        sources = sorted(FUNCTIONS.glob(pattern))
        assert sources, f"COPY {pattern} matches no file"
        for source in sources:
            into_directory = destination == "." or destination.endswith("/")
            target = str(Path(destination) / source.name) if into_directory else destination
            copies[str(source.relative_to(FUNCTIONS))] = target
    return copies


IMAGE_CODE = [FUNCTIONS / source for source in copied() if source.endswith(".py")]


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


def test_the_build_context_lets_through_exactly_what_the_dockerfile_copies() -> None:
    ignore_file = DOCKERFILE.with_name("Dockerfile.dockerignore")
    let_through = {line[1:] for line in ignore_file.read_text().splitlines() if line.startswith("!")}
    assert let_through == copy_instructions().keys()


def test_the_worker_and_its_commands_import_from_the_files_as_the_image_lays_them_out(tmp_path: Path) -> None:
    for source, target in copied().items():
        (tmp_path / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(FUNCTIONS / source, tmp_path / target)
    environment = {"PATH": os.environ["PATH"]}

    # As the image's command does: `python -m` puts the working directory first on the import path.
    result = subprocess.run(
        [sys.executable, "-c", "import stream_worker.worker, stream_worker.migrate, stream_worker.devices"],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    # The migrations are there for stream_worker.migrate to find.
    assert sorted(path.name for path in (tmp_path / "stream_worker" / "migrations").iterdir()) == sorted(
        path.name for path in (FUNCTIONS / "stream_worker" / "migrations").iterdir()
    )
