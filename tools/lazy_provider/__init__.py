"""Fast synth: a lazily loading view of the cdktf AWS provider bindings.

Importing anything from cdktf_cdktf_provider_aws runs its package `__init__`, which imports all 2,135
resource modules, and the jsii kernel then requires all of them again in Node. The view, generated from
the installed package by `python -m tools.lazy_provider build` into `.cache/lazy-provider/`, shadows the
package with one whose submodules load on first use, backed by a copy of the provider's jsii tarball
whose `index.js` defers each `require` the same way. Entry points call `enable()` before anything
imports the provider; `IOT_FAST_SYNTH=0` turns it off.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path

ENV_VAR = "IOT_FAST_SYNTH"
PACKAGE = "cdktf_cdktf_provider_aws"
DISTRIBUTION = "cdktf-cdktf-provider-aws"
PROJECT_ROOT = Path(__file__).resolve().parents[2]
VIEW_DIR = PROJECT_ROOT / ".cache" / "lazy-provider"
MANIFEST = VIEW_DIR / "manifest.json"
# Bumped whenever the generated view changes shape, so that views built by older code are rebuilt.
FORMAT = 1
SETUP_HINT = "run `make setup`"


def enable(environ: Mapping[str, str] = os.environ) -> bool:
    """Put the lazy view first on sys.path and return True, unless it is turned off or unusable.

    An unusable view (not built, built for another provider version, or enabled after the provider was
    imported) is skipped with a one-line warning on stderr, leaving the stock bindings in use.
    """
    if environ.get(ENV_VAR) == "0":
        return False
    if str(VIEW_DIR) in sys.path:
        return True
    reason = unavailable_reason()
    if reason is None and PACKAGE in sys.modules:
        reason = f"{PACKAGE} was imported before tools.lazy_provider.enable()"
    if reason is not None:
        print(f"warning: fast synth is off: {reason}", file=sys.stderr)
        return False
    sys.path.insert(0, str(VIEW_DIR))
    return True


def unavailable_reason() -> str | None:
    """Why the view cannot be used with the installed provider, or None if it can."""
    try:
        built = json.loads(MANIFEST.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"the lazy provider view is not built ({SETUP_HINT})"
    try:
        installed = metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return f"{DISTRIBUTION} is not installed"
    if built["format"] != FORMAT:
        return f"the lazy provider view was built by an older tools.lazy_provider ({SETUP_HINT})"
    if built["provider_version"] != installed:
        return (
            f"the lazy provider view was built for {DISTRIBUTION} {built['provider_version']}, "
            f"but {installed} is installed ({SETUP_HINT})"
        )
    return None


def active() -> bool:
    """Whether the provider package imported in this process is the lazy view."""
    module = sys.modules.get(PACKAGE)
    return module is not None and Path(module.__path__[0]).parent == VIEW_DIR
