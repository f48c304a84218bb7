"""Fast synth: a lazily loading view of the cdktf AWS provider bindings, and a direct jsii kernel.

Importing anything from cdktf_cdktf_provider_aws runs its package `__init__`, which imports all 2,135
resource modules, and the jsii kernel then requires all of them again in Node. The view, generated from
the installed package by `python -m fast_synth build` into `.cache/lazy-provider/`, shadows the
package with one whose submodules load on first use, with their annotations unevaluated (postponed.py),
backed by a copy of the provider's jsii tarball whose `index.js` defers each `require` the same way.
Calls into the kernel get cheaper too: the view runs a copy of the jsii kernel that talks to Python
without jsii's relay process and does not record a stack trace for each token cdktf creates
(kernel_prelude.js); the bindings' Python-side type checks, which the kernel repeats, are skipped; and
structs are sent with only the fields they hold. Entry points call `enable()` before anything imports
the bindings; `IOT_FAST_SYNTH=0` turns it all off.
"""

from __future__ import annotations

import json
import os
import sys
import typing
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from fast_synth.postponed import PostponedAnnotationsFinder

ENV_VAR = "IOT_FAST_SYNTH"
PACKAGE = "cdktf_cdktf_provider_aws"
DISTRIBUTION = "cdktf-cdktf-provider-aws"
JSII_DISTRIBUTION = "jsii"
PROJECT_ROOT = Path(__file__).resolve().parents[1]
VIEW_DIR = PROJECT_ROOT / ".cache" / "lazy-provider"
MANIFEST = VIEW_DIR / "manifest.json"
KERNEL_PROGRAM = VIEW_DIR / "jsii-kernel" / "lib" / "program.js"
KERNEL_NODE = Path(__file__).with_name("jsii-node")
BYTECODE_DIR = VIEW_DIR / "bytecode"  # filled as the provider's submodules are first imported
# Bumped whenever the generated view changes shape, so that views built by older code are rebuilt.
FORMAT = 5
SETUP_HINT = "run `make setup`"
# What jsii's generated bindings name the functions whose annotations their type checks read.
TYPE_CHECKING_STUB_PREFIX = "_typecheckingstub__"

_kernel_started = False


def enable(environ: Mapping[str, str] = os.environ) -> bool:
    """Put the lazy view first on sys.path, start the direct kernel, and return True, unless turned off.

    An unusable view (not built, built for other installed versions, or enabled after the bindings were
    imported) is skipped with a one-line warning on stderr, leaving the stock bindings in use.
    """
    if environ.get(ENV_VAR) == "0":
        return False
    if str(VIEW_DIR) in sys.path:
        return True
    reason = unavailable_reason()
    if reason is None and (imported := [name for name in ("constructs", PACKAGE) if name in sys.modules]):
        reason = f"{imported[0]} was imported before fast_synth.enable()"
    if reason is not None:
        print(f"warning: fast synth is off: {reason}", file=sys.stderr)
        return False
    sys.path.insert(0, str(VIEW_DIR))
    sys.meta_path.insert(0, PostponedAnnotationsFinder(PACKAGE, BYTECODE_DIR))
    _skip_binding_type_checks()
    _send_only_the_fields_structs_hold()
    _start_direct_kernel()
    return True


def unavailable_reason() -> str | None:
    """Why the view cannot be used with the installed packages, or None if it can."""
    try:
        built = json.loads(MANIFEST.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"the lazy provider view is not built ({SETUP_HINT})"
    if built["format"] != FORMAT:
        return f"the lazy provider view was built by an older fast_synth ({SETUP_HINT})"
    for distribution, key in ((DISTRIBUTION, "provider_version"), (JSII_DISTRIBUTION, "jsii_version")):
        try:
            installed = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            return f"{distribution} is not installed"
        if built[key] != installed:
            return (
                f"the lazy provider view was built for {distribution} {built[key]}, "
                f"but {installed} is installed ({SETUP_HINT})"
            )
    return None


def active() -> bool:
    """Whether this process imported the provider bindings from the view and runs the direct kernel."""
    module = sys.modules.get(PACKAGE)
    return _kernel_started and module is not None and Path(module.__path__[0]).parent == VIEW_DIR


def _start_direct_kernel() -> None:
    """Start the jsii kernel from the view's copy (kernel_prelude.js) unless JSII_NODE or JSII_RUNTIME is set.

    jsii reads the two variables when it starts its kernel, as the first assembly loads, which importing
    constructs does. They are set only meanwhile, so that child processes see the environment as it was.
    """
    global _kernel_started
    if {"JSII_NODE", "JSII_RUNTIME"} & os.environ.keys():
        return
    os.environ.update(JSII_NODE=str(KERNEL_NODE), JSII_RUNTIME=str(KERNEL_PROGRAM))
    try:
        import constructs  # noqa: F401
    finally:
        del os.environ["JSII_NODE"], os.environ["JSII_RUNTIME"]
    _kernel_started = True


def _skip_binding_type_checks() -> None:
    """Skip the Python-side argument checks of the jsii bindings, which the jsii kernel repeats.

    Before each call into the bindings, the generated code resolves a stub function's annotations with
    typing.get_type_hints and checks every argument against them with typeguard: about a fifth of a
    synth's time. The kernel checks the values it receives against the same declarations (a string for a
    number, a list for a string, a wrong object: refused, naming the parameter), and mypy checks the
    project's calls against them statically. So the check accepts everything, and the stubs' annotations,
    which the view leaves unevaluated (postponed.py), are not resolved: each reads as typing.Any.
    The stock synth, which tests/test_fast_synth.py runs in CI, keeps the checks.
    """
    import typeguard

    resolve = typing.get_type_hints

    def get_type_hints(
        obj: Any,
        globalns: dict[str, Any] | None = None,
        localns: Mapping[str, Any] | None = None,
        include_extras: bool = False,
    ) -> dict[str, Any]:
        if getattr(obj, "__name__", "").startswith(TYPE_CHECKING_STUB_PREFIX):
            return _UNCHECKED_HINTS
        return resolve(obj, globalns, localns, include_extras)

    def accept(*_args: Any, **_kwargs: Any) -> None:
        return None

    typing.get_type_hints = get_type_hints
    typeguard.check_type = accept


class _UncheckedHints(dict[str, Any]):
    """The type hints of every type-checking stub of the bindings: typing.Any for each argument."""

    def __missing__(self, _name: str) -> Any:
        return Any


_UNCHECKED_HINTS = _UncheckedHints()


def _send_only_the_fields_structs_hold() -> None:
    """Send each struct to the kernel as the fields it holds rather than as every field it declares.

    jsii sends a struct (the config of a resource, a policy statement) by reading every property its
    class declares, each read evaluating the property's typing.cast annotation, and sends the unset ones
    as nulls, which the kernel then drops from the struct it builds. The generated constructor keeps each
    argument that is not None in the struct's `_values`; sending just those gives the kernel the same
    struct, about 0.4 s sooner in a synth of every environment. Every other value is sent as jsii sends it.
    """
    from jsii import _kernel

    stock = _kernel._make_reference_for_native

    def make_reference_for_native(kernel: _kernel.Kernel, d: Any) -> Any:  # named as jsii names them
        names = getattr(d, "__jsii_name_mapping__", None)  # what a struct's fields are called in jsii
        if names is None:
            return stock(kernel, d)  # which calls this function for the items of lists and maps
        fields = {names[name]: make_reference_for_native(kernel, value) for name, value in d._values.items()}
        return {"$jsii.struct": {"fqn": d.__jsii_type__, "data": fields}}

    _kernel._make_reference_for_native = make_reference_for_native
