"""Modules the CLI loads on first use, so that a command pays only for what it runs.

`--help`, shell completion and `version` without daemons need neither the gRPC stack
(asyncio, grpclib, betterproto2, the generated code: most of the CLI's start-up) nor the
daemon starter. `importlib.util.LazyLoader` defers a module's execution until one of its
attributes is read. (protocol.lazyimport, the daemons' tool for library packages, imports
`ast` and `importlib.abc`, which the CLI otherwise does not need.)
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType


def lazy_module(name: str) -> ModuleType:
    """`name`, executed when one of its attributes is first read."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ImportError(f"no module named {name!r}", name=name)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, module)
    return module
