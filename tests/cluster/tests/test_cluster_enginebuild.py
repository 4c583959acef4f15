"""Unit tests of the engine build's inputs (no root, no buildah, no cluster).

Scenarios:
- both Dockerfiles take `ARG BASE` with the public slim image as the default, and every
  stage is built FROM it, so the local base replaces it with a build argument alone;
- what the build context leaves out (.dockerignore) is what the cache key leaves out, and
  a source edit changes the key while a stray __pycache__ does not.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from kpcluster import enginebuild, layout


@pytest.mark.parametrize("part", enginebuild.PARTS)
def test_dockerfiles_build_on_an_overridable_base(part: str) -> None:
    lines = (layout.IMAGES_SRC / f"{part}.Dockerfile").read_text().splitlines()
    instructions = [line for line in lines if line.strip() and not line.startswith("#")]
    assert instructions[0] == "ARG BASE=python:3.11-slim-bookworm"
    froms = [line for line in instructions if line.startswith("FROM ")]
    assert len(froms) == 2
    assert all(line.split()[1] == "${BASE}" for line in froms), froms


def test_dockerignore_and_cache_key_leave_out_the_same() -> None:
    entries = (layout.REPO / ".dockerignore").read_text().splitlines()
    for name in enginebuild.IGNORED_DIRS:
        assert f"**/{name}" in entries, name
    assert "**/*.pyc" in entries
    assert "**/*.egg-info" in entries


def test_tree_digest_follows_sources_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(layout, "REPO", tmp_path)
    part = tmp_path / "packages" / "manager"
    (part / "src").mkdir(parents=True)
    (part / "src" / "app.py").write_text("x = 1\n")
    before = enginebuild._tree_digest([part])
    (part / "src" / "__pycache__").mkdir()
    (part / "src" / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"\0")
    (part / "kubepresence_manager.egg-info").mkdir()
    (part / "kubepresence_manager.egg-info" / "PKG-INFO").write_text("x")
    assert enginebuild._tree_digest([part]) == before
    (part / "src" / "app.py").write_text("x = 2\n")
    assert enginebuild._tree_digest([part]) != before
