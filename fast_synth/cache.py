"""Keeps the jsii package cache warm for the stock and the lazy provider tarball.

The jsii kernel extracts each tarball it loads into a cache entry keyed on the tarball's digest, then
indexes the assembly there in a worker thread, so that later loads parse only the types they use. A
fast synth exits too soon after loading for that worker to finish: without this step every one of them
would parse the provider's whole 120 MB assembly again (about 1 s and 900 MiB more in Node).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from fast_synth import PROJECT_ROOT

# Written last by the jsii 1.142 kernel once it has indexed an assembly in its cache entry.
RUNTIME_INDEX = ".jsii.runtime.v1.json"
INDEX_TIMEOUT_SECONDS = 300


def warm(assembly: str, version: str, tarballs: Sequence[Path]) -> list[Path]:
    """Load, in parallel, each tarball whose cache entry is not indexed yet; return those loaded."""
    root = cache_root()
    if root is None:
        return []
    indexes = {tarball: entry(root, assembly, version, tarball) / RUNTIME_INDEX for tarball in tarballs}
    cold = {tarball: index for tarball, index in indexes.items() if not index.is_file()}
    script = "import sys; from fast_synth.cache import load; load(*sys.argv[1:])"
    loads = [
        subprocess.Popen(
            [sys.executable, "-c", script, assembly, version, str(tarball), str(index)], cwd=PROJECT_ROOT
        )
        for tarball, index in cold.items()
    ]
    if any(load.wait() != 0 for load in loads):
        raise RuntimeError("warming the jsii package cache failed")
    return list(cold)


def load(assembly: str, version: str, tarball: str, index: str) -> None:
    """Load a tarball into this process's jsii kernel and wait until the kernel has indexed it."""
    # Imported here, as each starts or uses this process's kernel. The stock index.js requires cdktf
    # and constructs, so the kernel must have loaded them first.
    import cdktf  # noqa: F401
    import jsii

    jsii.load(assembly, version, tarball)
    deadline = time.monotonic() + INDEX_TIMEOUT_SECONDS
    while not Path(index).is_file():
        if time.monotonic() > deadline:
            sys.exit(f"the jsii kernel did not index {tarball} within {INDEX_TIMEOUT_SECONDS} s")
        time.sleep(0.2)


def cache_root() -> Path | None:
    """The jsii package cache's directory, as the kernel chooses it on Linux and macOS; None if it is off."""
    if os.environ.get("JSII_RUNTIME_PACKAGE_CACHE", "enabled").lower() != "enabled":
        return None
    if configured := os.environ.get("JSII_RUNTIME_PACKAGE_CACHE_ROOT"):
        return Path(configured)
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "com.amazonaws.jsii" / "package-cache"
    return Path.home() / ".cache" / "aws" / "jsii" / "package-cache"


def entry(root: Path, assembly: str, version: str, tarball: Path) -> Path:
    """A tarball's cache entry: <root>/<assembly>/<version>/<sha256 of tarball, assembly and version>."""
    with tarball.open("rb") as file:
        digest = hashlib.file_digest(file, "sha256")
    for comment in (assembly, version):
        digest.update(b"\0" + comment.encode())
    return root.joinpath(*assembly.split("/"), version, digest.hexdigest())
