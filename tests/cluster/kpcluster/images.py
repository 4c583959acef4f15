"""A deterministic docker-archive writer: container images without a registry or an engine.

A layer is an uncompressed tar whose entries are owned by root with mtime 0, in sorted order,
so the same inputs give the same digest and the cached base layer keeps its identity across
runs. An image is a docker-archive (`manifest.json`, a config blob, one `<diffid>/layer.tar`
per layer) that `ctr -n k8s.io images import` understands. The config must say
architecture amd64 / os linux, or containerd filters the image out at import (notes §7.1).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

# Top-level directories a root filesystem needs but whose contents belong to the runtime.
EMPTIED_DIRS = frozenset({"proc", "sys", "dev", "run", "tmp"})
COPY_CHUNK = 1 << 20


@dataclass(frozen=True)
class FileSpec:
    """One file to place in a layer: host source, absolute path in the image, mode."""

    source: Path
    dest: str
    mode: int = 0o644


@dataclass(frozen=True)
class Layer:
    """A layer tar on disk with its diff id (sha256 of the uncompressed tar)."""

    path: Path
    diff_id: str


@dataclass
class ImageConfig:
    """The parts of the OCI/docker image config the cluster uses."""

    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    env: list[str] = field(default_factory=list)
    user: str | None = None
    workdir: str | None = None
    labels: dict[str, str] = field(default_factory=dict)


def _normalise(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = 0
    return info


def _parent_dirs(dest: str) -> list[str]:
    parts = dest.strip("/").split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def write_layer_from_files(specs: Sequence[FileSpec], out: Path) -> Layer:
    """Write a layer holding the given files (and their parent directories)."""
    dirs = sorted({d for spec in specs for d in _parent_dirs(spec.dest)})
    with (
        _HashingFile(out) as sink,
        tarfile.open(fileobj=sink, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for d in dirs:
            info = _normalise(tarfile.TarInfo(d))
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)
        for spec in sorted(specs, key=lambda s: s.dest):
            info = _normalise(tarfile.TarInfo(spec.dest.strip("/")))
            info.size = spec.source.stat().st_size
            info.mode = spec.mode
            with spec.source.open("rb") as f:
                tar.addfile(info, f)
    return Layer(out, "sha256:" + sink.hexdigest())


def write_layer_from_dir(root: Path, out: Path) -> Layer:
    """Write a layer holding a directory tree (device nodes, sockets and fifos skipped)."""
    with (
        _HashingFile(out) as sink,
        tarfile.open(fileobj=sink, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for path in _ordered_tree(root):
            rel = path.relative_to(root).as_posix()
            st = path.lstat()
            if not (
                stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode) or stat.S_ISLNK(st.st_mode)
            ):
                continue
            info = _normalise(tar.gettarinfo(str(path), arcname=rel))
            if info.isreg():
                with path.open("rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
    return Layer(out, "sha256:" + sink.hexdigest())


def _ordered_tree(root: Path) -> list[Path]:
    """All paths under root in a deterministic depth-first, name-sorted order."""
    result: list[Path] = []

    def visit(directory: Path, top: bool) -> None:
        for entry in sorted(os.scandir(directory), key=lambda e: e.name):
            path = Path(entry.path)
            result.append(path)
            if entry.is_dir(follow_symlinks=False) and not (top and entry.name in EMPTIED_DIRS):
                visit(path, top=False)

    visit(root, top=True)
    return result


def image_config(layers: Sequence[Layer], config: ImageConfig) -> bytes:
    """The image config blob, canonical JSON so identical inputs give identical ids."""
    inner: dict[str, object] = {"Env": config.env}
    if config.entrypoint is not None:
        inner["Entrypoint"] = config.entrypoint
    if config.cmd is not None:
        inner["Cmd"] = config.cmd
    if config.user is not None:
        inner["User"] = config.user
    if config.workdir is not None:
        inner["WorkingDir"] = config.workdir
    if config.labels:
        inner["Labels"] = config.labels
    doc = {
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": inner,
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "kubepresence image writer"}],
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def write_docker_archive(name: str, layers: Sequence[Layer], config: ImageConfig, out: Path) -> str:
    """Write a docker-archive for image `name` (repo:tag); return the image id (config digest)."""
    if ":" not in name.rsplit("/", 1)[-1]:
        raise ValueError(f"image name needs an explicit tag: {name}")
    blob = image_config(layers, config)
    config_hex = hashlib.sha256(blob).hexdigest()
    manifest = [
        {
            "Config": f"{config_hex}.json",
            "RepoTags": [name],
            "Layers": [f"{layer.diff_id.removeprefix('sha256:')}/layer.tar" for layer in layers],
        }
    ]
    tmp = out.with_suffix(out.suffix + ".tmp")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _add_bytes(tar, f"{config_hex}.json", blob)
        seen: set[str] = set()
        for layer in layers:
            hex_id = layer.diff_id.removeprefix("sha256:")
            if hex_id in seen:
                continue
            seen.add(hex_id)
            info = _normalise(tarfile.TarInfo(f"{hex_id}/layer.tar"))
            info.size = layer.path.stat().st_size
            info.mode = 0o644
            with layer.path.open("rb") as f:
                tar.addfile(info, f)
        _add_bytes(tar, "manifest.json", json.dumps(manifest).encode())
    tmp.replace(out)
    return "sha256:" + config_hex


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = _normalise(tarfile.TarInfo(name))
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


class _HashingFile(io.RawIOBase):
    """A write-only file that hashes what it writes, so a layer's diff id costs no second read."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = path.with_suffix(path.suffix + ".tmp")
        self._final = path
        self._file = self._tmp.open("wb")
        self._hash = hashlib.sha256()
        self._written = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(data)
        self._hash.update(view)
        self._file.write(view)
        self._written += len(view)
        return len(view)

    def tell(self) -> int:
        # tarfile asks for the position once, at open; a write-only stream knows it.
        return self._written

    def hexdigest(self) -> str:
        return self._hash.hexdigest()

    def __enter__(self) -> _HashingFile:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        self._file.close()
        if exc_type is None:
            self._tmp.replace(self._final)
        else:
            self._tmp.unlink(missing_ok=True)
