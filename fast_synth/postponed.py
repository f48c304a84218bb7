"""Provider submodules compiled with postponed evaluation of annotations (PEP 563), cached in the view.

Importing a provider submodule defines thousands of functions, and Python evaluates every annotation
(`typing.Optional[typing.Union[builtins.bool, IResolvable]]`, ...) as it defines each: most of the time
the module's code takes to run (55-80% for the modules measured), spent on values that only the bindings'
type checks read, which fast synth skips. Compiled as if each module began with
`from __future__ import annotations`, they stay unevaluated strings. The bytecode is cached in the view,
never next to the installed sources, and keyed like Python's own: by the interpreter's bytecode version,
the optimization level and the source file's size and modification time.
"""

from __future__ import annotations
import __future__

import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import marshal
import os
import struct
import sys
from collections.abc import Sequence
from pathlib import Path
from types import CodeType, ModuleType


class PostponedAnnotationsFinder(importlib.abc.MetaPathFinder):
    """Finds the public submodules of `package` where the path finder does, loading them postponed."""

    def __init__(self, package: str, cache: Path) -> None:
        self.package = package
        self.cache = cache

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        parent, _, name = fullname.rpartition(".")
        if parent != self.package or name.startswith("_"):
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or not isinstance(spec.loader, importlib.machinery.SourceFileLoader):
            return spec
        loader = PostponedAnnotationsLoader(fullname, spec.loader.path, self.cache)
        spec.loader, spec.cached = loader, str(loader.cached)
        return spec


class PostponedAnnotationsLoader(importlib.machinery.SourceFileLoader):
    def __init__(self, fullname: str, path: str, cache: Path) -> None:
        super().__init__(fullname, path)
        self.cached = cache / f"{fullname}.bytecode"

    def get_code(self, fullname: str) -> CodeType:
        source = Path(self.get_filename(fullname))
        stat = source.stat()
        key = importlib.util.MAGIC_NUMBER + struct.pack(
            "<bqq", sys.flags.optimize, stat.st_mtime_ns, stat.st_size
        )
        try:
            cached = self.cached.read_bytes()
        except OSError:  # not cached yet, or not readable: compiled like a stale entry
            cached = b""
        if cached.startswith(key):
            code: CodeType = marshal.loads(memoryview(cached)[len(key) :])
            return code
        code = compile(
            source.read_bytes(),
            str(source),
            "exec",
            flags=__future__.annotations.compiler_flag,
            dont_inherit=True,
        )
        # Written aside and renamed into place, so that processes importing at once never read half a file.
        partial = self.cached.with_name(f".{self.cached.name}.{os.getpid()}")
        try:
            self.cached.parent.mkdir(parents=True, exist_ok=True)
            partial.write_bytes(key + marshal.dumps(code))
            partial.replace(self.cached)
        except OSError:  # a view that cannot be written to (read-only, full) compiles again next time
            with contextlib.suppress(OSError):
                partial.unlink(missing_ok=True)
        return code
