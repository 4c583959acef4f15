"""The workload kinds: the lookup order both parts use, their API names."""

from __future__ import annotations

import pytest
from kubernetes_asyncio import client

from kubepresence.protocol.workloads import KIND_NAMES, KINDS, WorkloadKind, by_kind


def test_kinds_in_lookup_order_with_their_api_names() -> None:
    assert [(k.kind, k.plural, k.api_version) for k in KINDS] == [
        ("Deployment", "deployments", "apps/v1"),
        ("StatefulSet", "statefulsets", "apps/v1"),
        ("ReplicaSet", "replicasets", "apps/v1"),
    ]
    assert ", ".join(k.kind for k in KINDS[:-1]) + f" or {KINDS[-1].kind}" == KIND_NAMES


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
@pytest.mark.parametrize("verb", ["read", "patch", "list"])
def test_every_call_the_parts_make_exists_in_the_client(kind: WorkloadKind, verb: str) -> None:
    assert callable(getattr(client.AppsV1Api, kind.call(verb)))
    if verb == "list":
        assert callable(getattr(client.AppsV1Api, kind.call(verb, everywhere=True)))


def test_by_kind() -> None:
    assert by_kind("StatefulSet") is KINDS[1]
    assert by_kind("Pod") is None
    assert by_kind("deployment") is None
