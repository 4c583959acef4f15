"""The user daemon's dry-run probe pod is one the manager's webhook core injects: if it were
not, `connect` would wait for an injection that never comes, and only warn."""

from __future__ import annotations

import json

import pytest

from kubepresence.manager.core.injection import InjectionSettings, review
from kubepresence.userd.core.manifests import ManagerInstall, injection_probe


def _review_of(probe: dict[str, object], namespace: str) -> bytes:
    return json.dumps(
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "probe-uid",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "namespace": namespace,
                "operation": "CREATE",
                "dryRun": True,
                "object": probe,
            },
        }
    ).encode()


@pytest.mark.parametrize(
    "install",
    [
        ManagerInstall(namespace="kp"),
        ManagerInstall(namespace="kp", rbac_scope="namespaced", rbac_namespaces=("team",)),
    ],
)
def test_the_manager_injects_the_probe(install: ManagerInstall) -> None:
    probe = injection_probe(install)
    assert probe is not None
    settings = InjectionSettings(
        agent_image=install.agent_image, manager_namespace=install.namespace
    )
    verdict = review(_review_of(probe, probe["metadata"]["namespace"]), settings)
    assert verdict.patch is not None, verdict.reason
    added = [op["value"] for op in verdict.patch if op["path"].startswith("/spec/containers")]
    assert [c["name"] for c in added] == ["kubepresence-agent"]


def test_another_manager_leaves_the_probe_alone() -> None:
    probe = injection_probe(ManagerInstall(namespace="kp"))
    assert probe is not None
    other = InjectionSettings(agent_image="x", manager_namespace="elsewhere")
    assert review(_review_of(probe, "default"), other).patch is None
