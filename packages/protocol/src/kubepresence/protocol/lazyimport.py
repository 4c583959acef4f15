"""Packages whose `__init__` only re-exports its submodules' names, imported lazily.

kubernetes_asyncio's `__init__` files import every API group and all ~770 models: 1.2 s
and ~30 MiB in each process that touches one of them (measured on the user daemon, with
bytecode compiled), although a part uses a dozen. `lazy_reexports(...)` makes those
packages resolve a re-exported name when it is first read (PEP 562 module `__getattr__`),
with the same objects as an eager import. A package whose `__init__` does anything but
import, assign and document is imported as usual.

`skip_imports(...)` is the other side: optional integrations a library loads whenever they
are installed, which a daemon never uses, are not imported at all.

`without_package_init(...)` is for a package whose `__init__` does more than re-export
(asyncssh's imports every part of SSH with cryptography, ~16 MiB, and registers
algorithms) when a part needs one self-contained submodule of it (the agent: asyncssh's
SFTP server, ~1 MiB).
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
from collections.abc import Iterator, Sequence

# What the user daemon and the traffic manager import from kubernetes_asyncio.
KUBERNETES_ASYNCIO = (
    "kubernetes_asyncio",
    "kubernetes_asyncio.client",
    "kubernetes_asyncio.client.api",
    "kubernetes_asyncio.client.models",
)

# name -> (module, attribute of it, or None for the module itself)
Reexports = dict[str, tuple[str, str | None]]


def reexports(source: str, package: str) -> tuple[Reexports, list[ast.stmt]] | None:
    """The names an `__init__` re-exports and its assignments, or None when it does more."""
    names: Reexports = {}
    assignments: list[ast.stmt] = []
    for node in ast.parse(source).body:
        if isinstance(node, ast.ImportFrom):
            module = importlib.util.resolve_name("." * node.level + (node.module or ""), package)
            for alias in node.names:
                if alias.name == "*":
                    return None
                if node.module is None:  # `from . import x`: a submodule, or a name of ours
                    names[alias.asname or alias.name] = (f"{module}.{alias.name}", None)
                else:
                    names[alias.asname or alias.name] = (module, alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname is None:  # binds the top package, which is importing now
                    if alias.name.split(".")[0] != package.split(".")[0]:
                        return None
                    continue
                names[alias.asname] = (alias.name, None)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            assignments.append(node)
        elif not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)):
            return None  # code with effects: import the package as usual
    return names, assignments


class _ReexportingLoader(importlib.abc.Loader):
    def __init__(self, origin: str, names: Reexports, assignments: list[ast.stmt]) -> None:
        self.origin = origin
        self.names = names
        self.assignments = assignments

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None  # the default module

    def exec_module(self, module: types.ModuleType) -> None:
        code = compile(ast.Module(self.assignments, []), self.origin, "exec")
        exec(code, module.__dict__)  # noqa: S102 - the package's own constant assignments
        names = self.names

        def resolve(name: str) -> object:
            submodule = f"{module.__name__}.{name}"
            if name in names:
                module_name, attribute = names[name]
            elif _is_submodule(submodule):  # an eager import binds its submodules too
                module_name, attribute = submodule, None
            else:
                raise AttributeError(f"module {module.__name__!r} has no attribute {name!r}")
            imported = importlib.import_module(module_name)
            value = imported if attribute is None else getattr(imported, attribute)
            setattr(module, name, value)
            return value

        def listing() -> list[str]:
            return sorted({*module.__dict__, *names})

        module.__getattr__ = resolve  # type: ignore[method-assign]
        module.__dir__ = listing  # type: ignore[method-assign]


def _is_submodule(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


class _ReexportingFinder(importlib.abc.MetaPathFinder):
    def __init__(self, packages: Sequence[str]) -> None:
        self.packages = frozenset(packages)

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: types.ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.packages:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.origin is None or not spec.submodule_search_locations:
            return spec
        try:
            with open(spec.origin, encoding="utf-8") as source:
                found = reexports(source.read(), fullname)
        except (OSError, SyntaxError, ValueError, ImportError):
            found = None
        if found is None:
            return spec
        spec.loader = _ReexportingLoader(spec.origin, *found)
        return spec


def lazy_reexports(*packages: str) -> None:
    """Import these packages lazily from now on (before anything imports them)."""
    already = {p for f in sys.meta_path if isinstance(f, _ReexportingFinder) for p in f.packages}
    wanted = [p for p in packages if p not in already and p not in sys.modules]
    if wanted:
        sys.meta_path.insert(0, _ReexportingFinder(wanted))


# Optional integrations a library imports when they are installed, which no daemon uses:
# betterproto2 imports pydantic if present (typer, the CLI's, brings it to a workstation),
# ~3 MiB and 0.1 s in each daemon; kubepresence's messages are plain dataclasses.
UNUSED_OPTIONAL = ("pydantic",)


def skip_imports(*modules: str) -> None:
    """Make importing these modules fail, so libraries leave out their optional support
    for them (unless something imported them already). For a daemon's entry point only."""
    for name in modules:
        if name not in sys.modules:
            sys.modules[name] = None  # type: ignore[assignment]


@contextlib.contextmanager
def without_package_init(package: str) -> Iterator[None]:
    """Inside, importing `package.x` runs `x` and what it imports, not `package/__init__`.

    On the way out the package and the submodules imported inside leave `sys.modules`
    again (the importer keeps its references): a later plain `import package` then gets
    the whole package, as if this had not happened. Where the package is imported
    already, this does nothing.
    """
    if package in sys.modules:
        yield
        return
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"{package} is not a package")
    before = set(sys.modules)
    sys.modules[package] = importlib.util.module_from_spec(spec)  # __path__, no __init__
    try:
        yield
    finally:
        for name in set(sys.modules) - before:
            if name == package or name.startswith(package + "."):
                del sys.modules[name]
