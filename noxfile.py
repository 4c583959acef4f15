"""Tasks of the kubepresence monorepo. `nox -l` lists them; `./run tests` runs `ci`."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nox

nox.options.default_venv_backend = "uv"
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_external_run = True
nox.options.sessions = ["lint", "typecheck", "unit"]

ROOT = Path(__file__).parent
PYTHON = "3.11"
CONSTRAINTS = ("-c", str(ROOT / "constraints.txt"))
PARTS = ("protocol", "cli", "userd", "rootd", "manager", "agent")
PART_DIRS = [f"packages/{part}" for part in PARTS]
CLUSTER = ("python", "tests/cluster/cluster.py")
# Tests outside the parts that need neither root nor a cluster.
UNIT_TEST_DIRS = (
    "tests/component",
    "tests/packaging",
    "tests/cluster/tests",
    "tests/support/tests",
)
E2E_REQUIREMENTS = (
    "-r",
    "tests/cluster/requirements.txt",
    "pytest",
    "pytest-asyncio",
    "pytest-timeout",
    "python-dotenv",  # env files read back by the tool of their syntax
)


def install_parts(session: nox.Session) -> None:
    """All parts, editable, with their pinned dependencies, compiled to bytecode as pip
    does at install time: this machine sets PYTHONDONTWRITEBYTECODE, so otherwise every
    daemon start would compile kubernetes_asyncio and the rest from source again."""
    editable = [arg for d in PART_DIRS for arg in ("-e", d)]
    session.install(*CONSTRAINTS, *editable)
    purelib = session.run(
        "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", silent=True
    )
    assert isinstance(purelib, str)
    sources = [f"{d}/src" for d in PART_DIRS]
    session.run("python", "-m", "compileall", "-q", "-j0", purelib.strip(), *sources)


def install(session: nox.Session, *requirements: str) -> None:
    session.install(*CONSTRAINTS, *requirements)


@nox.session(python=PYTHON)
def lock(session: nox.Session) -> None:
    """Re-pin constraints.txt from constraints.in."""
    session.run(
        "uv",
        "pip",
        "compile",
        "-q",
        "--python-version",
        PYTHON,
        "constraints.in",
        "-o",
        "constraints.txt",
        external=True,
    )


@nox.session(python=PYTHON)
def proto(session: nox.Session) -> None:
    """Regenerate the protocol code (`-- --check`: fail if the committed code drifted)."""
    install(session, "grpcio-tools", "betterproto2-compiler", "betterproto2[grpclib]")
    session.run("python", "tools/protogen.py", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff check, ruff format --check and the import-linter contracts."""
    install_parts(session)
    install(session, "ruff", "import-linter")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("lint-imports")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy --strict over every part, the tests and the tools."""
    install_parts(session)
    install(
        session,
        "mypy",
        "nox",
        "types-pyyaml",
        "pytest",
        "pytest-asyncio",
        "hypothesis",
        "python-dotenv",
        "-r",
        "tests/cluster/requirements.txt",
    )
    sources = [f"{d}/src" for d in PART_DIRS]
    session.run("mypy", *sources, "tools", "noxfile.py")
    session.run("mypy", "benchmarks")
    session.run("mypy", "tests/cluster/kpcluster", "tests/cluster/cluster.py")
    session.run("mypy", "tests/support", "conftest.py")
    # Tests are checked per directory: each part's tests/ is its own root.
    for test_dir in [
        *(f"{d}/tests" for d in PART_DIRS),
        *UNIT_TEST_DIRS,
        "tests/e2e",
        "tests/teardown",
    ]:
        if Path(test_dir).is_dir():
            session.run("mypy", test_dir)


@nox.session(python=PYTHON)
def unit(session: nox.Session) -> None:
    """Unit tests of every part and the component tests (no root, no cluster)."""
    install_parts(session)
    install(
        session,
        "pytest",
        "pytest-asyncio",
        "pytest-timeout",
        "hypothesis",
        "python-dotenv",
        "-r",
        "tests/cluster/requirements.txt",
    )
    targets = session.posargs or [*PART_DIRS, *UNIT_TEST_DIRS]
    # A few seconds per test: the slow ones (network namespaces, real daemons) say so with
    # their own @pytest.mark.timeout.
    session.run("pytest", "--timeout=10", *targets)


def _require_root(session: nox.Session) -> None:
    if os.geteuid() != 0:
        session.error("this session runs a real cluster and network namespaces: run it as root")


@nox.session(python=PYTHON)
def cluster(session: nox.Session) -> None:
    """The local cluster: `nox -s cluster -- up|down|status|logs|kubeconfig|ws -- CMD`."""
    _require_root(session)
    install(session, "-r", "tests/cluster/requirements.txt")
    session.run(*CLUSTER, *(session.posargs or ["status"]))


@nox.session(python=PYTHON)
def e2e(session: nox.Session) -> None:
    """End-to-end tests on the local cluster (brought up when not running)."""
    _require_root(session)
    install_parts(session)
    install(session, *E2E_REQUIREMENTS)
    session.run(*CLUSTER, "up")
    # The manager and agent images of this very checkout, imported into the cluster.
    session.run(*CLUSTER, "images")
    session.run("pytest", "--timeout=900", *(session.posargs or ["tests/e2e"]))


@nox.session(python=PYTHON)
def teardown(session: nox.Session) -> None:
    """`cluster down`, then prove nothing the cluster created is left."""
    _require_root(session)
    install(session, *E2E_REQUIREMENTS)
    session.run("pytest", "--timeout=600", "tests/teardown", *session.posargs)


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Benchmarks, each figure beside a baseline from the same run, on the local cluster
    (`-- --quick`: small sizes, checks only that every figure is produced; `-- --profile`:
    py-spy profiles of userd, rootd, manager and agent; `-- --only components|cluster|scale`)."""
    install_parts(session)
    install(session, "-r", "tests/cluster/requirements.txt", "matplotlib", "py-spy")
    if "--only" not in session.posargs or {"cluster", "scale"} & set(session.posargs):
        _require_root(session)
        session.run(*CLUSTER, "up")
        if "--quick" not in session.posargs:  # in CI, e2e imported this checkout's images
            session.run(*CLUSTER, "images")
    session.run("python", "-m", "benchmarks.run", *session.posargs)


@nox.session(python=PYTHON)
def demo(session: nox.Session) -> None:
    """The main job: bring up the local cluster and use it from the workstation."""
    _require_root(session)
    install_parts(session)
    install(session, "-r", "tests/cluster/requirements.txt")
    session.run(*CLUSTER, "up")
    session.run(*CLUSTER, "images")
    session.run("python", "tools/demo.py")


@nox.session(python=PYTHON)
def ci(session: nox.Session) -> None:
    """Everything CI runs, in order; the cluster is torn down and checked at the end."""
    for name in ("proto-check", "lint", "typecheck", "unit", "e2e"):
        session.notify(name)
    # Catches a broken benchmark (every figure must be produced), never a slow one.
    session.notify("bench", posargs=["--quick"])
    session.notify("teardown")


@nox.session(python=PYTHON, name="proto-check")
def proto_check(session: nox.Session) -> None:
    """Fail if the generated protocol code is not what the .proto sources give."""
    install(session, "grpcio-tools", "betterproto2-compiler", "betterproto2[grpclib]")
    session.run("python", "tools/protogen.py", "--check")


if __name__ == "__main__":
    sys.exit("run this file with nox")
