"""Lazily imported re-exporting packages give the same names as eager ones, on first read."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kubepresence.protocol.lazyimport import reexports

PACKAGE = {
    "__init__.py": textwrap.dedent(
        '''
        """A package that only re-exports."""
        from __future__ import annotations
        __version__ = "1.2"
        from lazypkg.heavy import Heavy
        from .light import light as renamed
        from . import other
        import lazypkg.sub as sub
        '''
    ),
    "heavy.py": "import sys\nsys.modules['lazypkg'].imported.append('heavy')\nclass Heavy: ...\n",
    "light.py": "def light():\n    return 'light'\n",
    "other.py": "VALUE = 3\n",
    "unlisted.py": "VALUE = 4\n",
    "sub/__init__.py": "from lazypkg.sub.deep import DEEP\n",
    "sub/deep.py": "DEEP = 'deep'\n",
}


def run_python(code: str, args: list[str]) -> object:
    result = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def write_package(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / "lazypkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_reexports_reads_imports_and_assignments() -> None:
    found = reexports(PACKAGE["__init__.py"], "lazypkg")
    assert found is not None
    names, assignments = found
    assert names == {
        "annotations": ("__future__", "annotations"),  # bound by an eager import too
        "Heavy": ("lazypkg.heavy", "Heavy"),
        "renamed": ("lazypkg.light", "light"),
        "other": ("lazypkg.other", None),
        "sub": ("lazypkg.sub", None),
    }
    assert len(assignments) == 1


@pytest.mark.parametrize(
    "source",
    [
        "from lazypkg.a import *\n",
        "import json\n",  # binds a name the eager import would have
        "print('side effect')\n",
        "def helper():\n    pass\n",
        "try:\n    from lazypkg.a import A\nexcept ImportError:\n    A = None\n",
    ],
)
def test_anything_more_than_reexporting_is_imported_eagerly(source: str) -> None:
    assert reexports(source, "lazypkg") is None


LAZY = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, sys.argv[1])
    from kubepresence.protocol.lazyimport import lazy_reexports
    lazy_reexports("lazypkg", "lazypkg.sub")
    import lazypkg
    lazypkg.imported = []
    seen = {"version": lazypkg.__version__, "before": list(lazypkg.imported)}
    seen["heavy"] = lazypkg.Heavy.__module__
    seen["after"] = list(lazypkg.imported)
    from lazypkg import renamed, other, sub
    seen["renamed"] = renamed()
    seen["other"] = other.VALUE
    seen["deep"] = sub.DEEP
    seen["unlisted"] = lazypkg.unlisted.VALUE  # a submodule, as an eager import would bind
    try:
        lazypkg.missing
    except AttributeError as error:
        seen["missing"] = str(error)
    seen["dir"] = "Heavy" in dir(lazypkg)
    print(json.dumps(seen))
    """
)


def test_names_resolve_on_first_read(tmp_path: Path) -> None:
    write_package(tmp_path, PACKAGE)
    assert run_python(LAZY, [str(tmp_path)]) == {
        "version": "1.2",
        "before": [],
        "heavy": "lazypkg.heavy",
        "after": ["heavy"],
        "renamed": "light",
        "other": 3,
        "deep": "deep",
        "unlisted": 4,
        "missing": "module 'lazypkg' has no attribute 'missing'",
        "dir": True,
    }


KUBERNETES_NAMES = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    if sys.argv[1] == "lazy":
        from kubepresence.protocol.lazyimport import KUBERNETES_ASYNCIO, lazy_reexports
        lazy_reexports(*KUBERNETES_ASYNCIO)
    import kubernetes_asyncio
    from kubernetes_asyncio import client, config, watch
    imported = len([m for m in sys.modules if m.startswith("kubernetes_asyncio.client.")])
    packages = {p.__name__: p for p in (kubernetes_asyncio, client, client.models, client.api)}
    if sys.argv[1] == "lazy":  # the names the eager import has
        wanted = json.loads(Path(sys.argv[2]).read_text())["names"]
    else:
        wanted = [f"{p}.{n}" for p in packages for n in dir(packages[p]) if not n.startswith("__")]
    names = {}
    for dotted in wanted:
        package, name = dotted.rsplit(".", 1)
        value = getattr(packages[package], name)
        names[dotted] = f"{getattr(value, '__module__', '')}.{getattr(value, '__name__', value)}"
    print(json.dumps({"imported": imported, "names": names}))
    """
)


@pytest.mark.timeout(30)  # imports kubernetes_asyncio in fresh interpreters
def test_kubernetes_asyncio_lazily_has_every_name_of_the_eager_import(tmp_path: Path) -> None:
    pytest.importorskip("kubernetes_asyncio", reason="needs kubernetes_asyncio installed")
    eager = run_python(KUBERNETES_NAMES, ["eager"])
    assert isinstance(eager, dict)
    (tmp_path / "eager.json").write_text(json.dumps({"names": list(eager["names"])}))
    lazy = run_python(KUBERNETES_NAMES, ["lazy", str(tmp_path / "eager.json")])
    assert isinstance(lazy, dict)
    assert lazy["names"] == eager["names"]
    assert len(eager["names"]) > 800
    assert lazy["imported"] < 40 < eager["imported"]


INIT_DOES_MORE = {
    "__init__.py": "from lazypkg.heavy import Heavy\nprint('init ran')\n",
    "heavy.py": "class Heavy: ...\n",
    "light.py": "from lazypkg.other import VALUE\ndef light():\n    return VALUE\n",
    "other.py": "VALUE = 3\n",
}

WITHOUT_INIT = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, sys.argv[1])
    from kubepresence.protocol.lazyimport import without_package_init
    if sys.argv[2] == "imported-before":
        import lazypkg
    with without_package_init("lazypkg"):
        from lazypkg.light import light
        inside = sorted(m for m in sys.modules if m.startswith("lazypkg"))
    after = sorted(m for m in sys.modules if m.startswith("lazypkg"))
    import lazypkg.light
    print(json.dumps({
        "inside": inside, "after": after, "light": light(),
        "whole": [lazypkg.Heavy.__name__, lazypkg.light.light()],
    }))
    """
)


def without_init_output(root: Path, mode: str) -> list[str]:
    write_package(root, INIT_DOES_MORE)
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_INIT, str(root), mode],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return result.stdout.splitlines()


def test_without_package_init_imports_only_the_submodule_and_leaves_no_trace(
    tmp_path: Path,
) -> None:
    stdout_lines = without_init_output(tmp_path, "fresh")
    # The package's __init__ ran only for the plain import at the end.
    assert stdout_lines[0] == "init ran"
    found = json.loads(stdout_lines[1])
    assert found["inside"] == ["lazypkg", "lazypkg.light", "lazypkg.other"]
    assert found["after"] == []
    assert found["light"] == 3
    assert found["whole"] == ["Heavy", 3]


def test_without_package_init_leaves_an_imported_package_alone(tmp_path: Path) -> None:
    init_ran, printed = without_init_output(tmp_path, "imported-before")
    assert init_ran == "init ran"  # once, before; nothing imported it again
    found = json.loads(printed)
    whole = ["lazypkg", "lazypkg.heavy", "lazypkg.light", "lazypkg.other"]
    assert found["inside"] == found["after"] == whole
