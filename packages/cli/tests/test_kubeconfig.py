"""kubeconfig selection follows kubectl's rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kubepresence.cli.core.kubeconfig import kubeconfig_paths, select
from kubepresence.protocol.errors import Category, KubepresenceError


def doc(current: str = "", contexts: dict[str, dict[str, str]] | None = None) -> dict[str, Any]:
    contexts = contexts or {}
    return {
        "current-context": current,
        "contexts": [{"name": n, "context": c} for n, c in contexts.items()],
        "clusters": [
            {"name": c["cluster"], "cluster": {"server": f"https://{c['cluster']}:6443"}}
            for c in contexts.values()
        ],
    }


def test_paths_flag_then_env_list_then_home(tmp_path: Path) -> None:
    assert kubeconfig_paths("/x/conf", {"KUBECONFIG": "/a:/b"}, tmp_path) == [Path("/x/conf")]
    assert kubeconfig_paths(None, {"KUBECONFIG": "/a::/b"}, tmp_path) == [Path("/a"), Path("/b")]
    assert kubeconfig_paths(None, {}, tmp_path) == [tmp_path / ".kube/config"]


def test_current_context_and_its_namespace() -> None:
    chosen = select([doc("lab", {"lab": {"cluster": "c1", "namespace": "shop", "user": "u"}})])
    assert (chosen.context, chosen.server, chosen.namespace) == ("lab", "https://c1:6443", "shop")


def test_flags_win_and_namespace_defaults() -> None:
    documents = [doc("lab", {"lab": {"cluster": "c1"}, "prod": {"cluster": "c2"}})]
    chosen = select(documents, context="prod")
    assert (chosen.context, chosen.namespace) == ("prod", "default")
    assert select(documents, namespace="x").namespace == "x"


def test_first_file_that_sets_a_key_wins() -> None:
    first = doc("", {"lab": {"cluster": "c1", "namespace": "from-first"}})
    second = doc("lab", {"lab": {"cluster": "c9", "namespace": "from-second"}})
    chosen = select([first, second])
    assert (chosen.context, chosen.namespace, chosen.cluster) == ("lab", "from-first", "c1")


@pytest.mark.parametrize(
    ("documents", "context", "message"),
    [
        ([doc("", {"lab": {"cluster": "c1"}})], None, "no current context"),
        ([doc("lab", {"lab": {"cluster": "c1"}})], "nope", "context 'nope' is not in"),
        (
            [{"current-context": "x", "contexts": [{"name": "x", "context": {"cluster": "gone"}}]}],
            None,
            "names cluster 'gone', which is missing",
        ),
    ],
)
def test_config_errors(documents: list[dict[str, Any]], context: str | None, message: str) -> None:
    with pytest.raises(KubepresenceError, match=message) as caught:
        select(documents, context)
    assert caught.value.category is Category.CONFIG
