"""Unit tests of the docker-archive writer and the image builders (no root, no cluster)."""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
import textwrap
from pathlib import Path

import pytest
from kpcluster import imagebuild
from kpcluster.images import (
    FileSpec,
    ImageConfig,
    write_docker_archive,
    write_layer_from_dir,
    write_layer_from_files,
)


def _tree(root: Path) -> Path:
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "usr" / "bin" / "tool").write_text("#!/bin/sh\necho hi\n")
    (root / "usr" / "bin" / "tool").chmod(0o755)
    os.link(root / "usr" / "bin" / "tool", root / "usr" / "bin" / "tool2")
    (root / "usr" / "bin" / "link").symlink_to("tool")
    (root / "proc" / "1").mkdir(parents=True)
    (root / "proc" / "1" / "status").write_text("runtime stuff")
    (root / "tmp").mkdir()
    (root / "tmp" / "junk").write_text("x")
    os.mkfifo(root / "fifo")
    return root


def test_layer_from_dir_is_deterministic_and_normalised(tmp_path: Path) -> None:
    root = _tree(tmp_path / "root")
    first = write_layer_from_dir(root, tmp_path / "a.tar")
    os.utime(root / "usr" / "bin" / "tool", (12345, 12345))
    second = write_layer_from_dir(root, tmp_path / "b.tar")
    assert first.diff_id == second.diff_id
    assert first.diff_id == "sha256:" + hashlib.sha256(first.path.read_bytes()).hexdigest()
    with tarfile.open(first.path) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert {"proc", "tmp"} <= members.keys()
    assert not {"proc/1", "tmp/junk"} & members.keys()
    assert "fifo" not in members
    assert members["usr/bin/link"].issym()
    assert members["usr/bin/link"].linkname == "tool"
    assert members["usr/bin/tool2"].islnk()
    assert all(m.uid == 0 and m.gid == 0 and m.mtime == 0 for m in members.values())
    assert list(members) == sorted(members, key=lambda n: n.split("/"))


def test_docker_archive_layout(tmp_path: Path) -> None:
    binary = tmp_path / "pause"
    binary.write_bytes(b"\x7fELF fake")
    layer = write_layer_from_files([FileSpec(binary, "/bin/pause", 0o755)], tmp_path / "layer.tar")
    out = tmp_path / "img.tar"
    image_id = write_docker_archive(
        "localhost/pause:1", [layer], ImageConfig(entrypoint=["/bin/pause"]), out
    )
    with tarfile.open(out) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        config_blob = tar.extractfile(manifest[0]["Config"]).read()  # type: ignore[union-attr]
        layer_tar = tar.extractfile(manifest[0]["Layers"][0]).read()  # type: ignore[union-attr]
    config = json.loads(config_blob)
    assert manifest[0]["RepoTags"] == ["localhost/pause:1"]
    assert image_id == "sha256:" + hashlib.sha256(config_blob).hexdigest()
    # containerd drops images whose platform it cannot match at import.
    assert (config["architecture"], config["os"]) == ("amd64", "linux")
    assert config["rootfs"]["diff_ids"] == [layer.diff_id]
    assert "sha256:" + hashlib.sha256(layer_tar).hexdigest() == layer.diff_id
    assert config["config"]["Entrypoint"] == ["/bin/pause"]
    with tarfile.open(layer.path) as tar:
        assert [(m.name, m.mode) for m in tar.getmembers()] == [
            ("bin", 0o755),
            ("bin/pause", 0o755),
        ]


def test_image_name_needs_a_tag(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="explicit tag"):
        write_docker_archive("localhost:5000/pause", [], ImageConfig(), tmp_path / "x.tar")


def test_debian_mirror_is_read_from_sources(tmp_path: Path) -> None:
    sources = tmp_path / "debian.sources"
    sources.write_text(
        textwrap.dedent(
            """\
            Types: deb
            URIs: http://mirror.invalid/debian-security
            Suites: bookworm-security
            Components: main

            Types: deb
            # a comment: with a colon
            URIs: http://mirror.invalid/debian
            Suites: bookworm bookworm-updates
            Components: main
            """
        )
    )
    assert imagebuild.debian_mirror(sources, tmp_path / "none") == "http://mirror.invalid/debian"
    legacy = tmp_path / "sources.list"
    legacy.write_text("deb [arch=amd64] http://legacy.invalid/debian bookworm main\n")
    assert imagebuild.debian_mirror(tmp_path / "none", legacy) == "http://legacy.invalid/debian"


@pytest.mark.timeout(60)  # builds wheels
def test_python_app_image_from_wheels(tmp_path: Path) -> None:
    """The kubepresence image builder, exercised on a throwaway package and a fake base."""
    project = tmp_path / "demo"
    (project / "src" / "kpdemo").mkdir(parents=True)
    (project / "src" / "kpdemo" / "__init__.py").write_text("")
    (project / "src" / "kpdemo" / "__main__.py").write_text("print('demo')\n")
    (project / "pyproject.toml").write_text(
        textwrap.dedent(
            """\
            [build-system]
            requires = ["setuptools>=61"]
            build-backend = "setuptools.build_meta"
            [project]
            name = "kpdemo"
            version = "0.0.1"
            [project.scripts]
            kpdemo = "kpdemo.__main__:main"
            [tool.setuptools.packages.find]
            where = ["src"]
            """
        )
    )
    base_root = tmp_path / "base"
    (base_root / "etc").mkdir(parents=True)
    (base_root / "etc" / "os-release").write_text("ID=fake\n")
    base = write_layer_from_dir(base_root, tmp_path / "base.tar")
    built = imagebuild.build_python_app_image(
        name="localhost/kpdemo:0.0.1",
        project_dirs=[project],
        requirement="kpdemo",
        module="kpdemo",
        out=tmp_path / "kpdemo.tar",
        base=base,
    )
    with tarfile.open(built.tarball) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        config = json.load(tar.extractfile(manifest[0]["Config"]))  # type: ignore[arg-type]
        app = tar.extractfile(manifest[0]["Layers"][1])
        assert app is not None
        with tarfile.open(fileobj=app) as app_tar:
            names = app_tar.getnames()
    assert config["config"]["Entrypoint"] == ["python3", "-m", "kpdemo"]
    assert f"PYTHONPATH={imagebuild.KUBEPRESENCE_SITE}" in config["config"]["Env"]
    assert "opt/kubepresence/site-packages/kpdemo/__main__.py" in names
    assert not any(n.startswith("opt/kubepresence/site-packages/bin") for n in names)
