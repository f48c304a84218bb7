"""Lambda function packages: zipped here once per content, reproducibly."""

import hashlib
import os
import tempfile
import zipfile
from importlib.metadata import distribution
from pathlib import Path

BUNDLES_DIR = Path(__file__).resolve().parent.parent / ".cache" / "function-bundles"


def package(source: Path, libraries: tuple[Path, ...], distributions: tuple[str, ...]) -> Path:
    """The function's zip: `source` at its root, each of `libraries` beside it under its own name, and
    `distributions`; built once per content and reproducible.

    Zipped here rather than by cdktf (an ARCHIVE asset spawns a Node process per asset and stack); fixed
    entry times and order make the same code the same bytes, so Terraform only sees real changes.
    """
    files = {path.relative_to(source): path for path in sorted(source.rglob("*")) if _packaged(path)}
    for library in libraries:
        files |= {
            path.relative_to(library.parent): path for path in sorted(library.rglob("*")) if _packaged(path)
        }
    for name in distributions:
        installed = distribution(name)
        located = {Path(file): Path(str(installed.locate_file(file))) for file in installed.files or []}
        files |= {
            relative: path
            for relative, path in located.items()
            if _packaged(path) and not relative.parts[0].startswith("..")  # scripts outside site-packages
        }
    digest = hashlib.sha256()
    for relative, path in sorted(files.items()):
        digest.update(str(relative).encode() + b"\0" + path.read_bytes())
    bundle = BUNDLES_DIR / digest.hexdigest()[:16] / f"{source.name}.zip"
    if not bundle.exists():
        _write_zip(bundle, files)
    return bundle


def _write_zip(bundle: Path, files: dict[Path, Path]) -> None:
    bundle.parent.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(dir=bundle.parent, suffix=".zip")
    with os.fdopen(handle, "wb") as file, zipfile.ZipFile(file, "w") as archive:
        for relative, path in sorted(files.items()):
            entry = zipfile.ZipInfo(relative.as_posix(), date_time=(1980, 1, 1, 0, 0, 0))
            entry.external_attr = 0o644 << 16
            archive.writestr(entry, path.read_bytes(), compress_type=zipfile.ZIP_DEFLATED)
    os.replace(staging, bundle)  # atomic: concurrent synths may build the same package


def _packaged(path: Path) -> bool:
    return path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
