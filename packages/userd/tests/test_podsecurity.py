"""Pod Security Admission before an intercept (core.podsecurity).

Scenarios:
- a named-port takeover (the agent sidecar only) is allowed at every level;
- a numeric-port takeover (the NET_ADMIN init container) is allowed where nothing is
  enforced (no label, `privileged`, only `warn`/`audit` labels) and refused in `baseline`
  and `restricted` with one line that names the port, the workload, the namespace, the
  level and what to do instead (through a Service, or without one);
- an enforce label PodSecurity does not know counts as `restricted`, as PodSecurity reads
  it, and the refusal shows the label's value; `enforce-version` changes nothing;
- the API server's refusal of a pod is recognised in a ReplicaFailure message, and other
  pod-creation failures are not taken for it.
"""

from __future__ import annotations

import itertools

import pytest

from kubepresence.userd.core.podsecurity import (
    ENFORCE_LABEL,
    Level,
    TakeoverMethod,
    decide,
    enforced_level,
    rejected_by_pod_security,
)

NS = "shop"
WORKLOAD = "deployment/echo"

LABELS: dict[str, tuple[dict[str, str], Level]] = {
    "none": ({}, Level.PRIVILEGED),
    "unrelated": ({"team": "web", "kubernetes.io/metadata.name": NS}, Level.PRIVILEGED),
    "privileged": ({ENFORCE_LABEL: "privileged"}, Level.PRIVILEGED),
    "baseline": ({ENFORCE_LABEL: "baseline"}, Level.BASELINE),
    "restricted": ({ENFORCE_LABEL: "restricted"}, Level.RESTRICTED),
    "warn-audit-only": (
        {
            "pod-security.kubernetes.io/warn": "restricted",
            "pod-security.kubernetes.io/audit": "restricted",
            "pod-security.kubernetes.io/warn-version": "latest",
        },
        Level.PRIVILEGED,
    ),
    "privileged-warn-restricted": (
        {ENFORCE_LABEL: "privileged", "pod-security.kubernetes.io/warn": "restricted"},
        Level.PRIVILEGED,
    ),
    "baseline-pinned": (
        {ENFORCE_LABEL: "baseline", "pod-security.kubernetes.io/enforce-version": "v1.23"},
        Level.BASELINE,
    ),
    "restricted-latest": (
        {ENFORCE_LABEL: "restricted", "pod-security.kubernetes.io/enforce-version": "latest"},
        Level.RESTRICTED,
    ),
    "unknown-value": ({ENFORCE_LABEL: "strict"}, Level.RESTRICTED),
    "wrong-case": ({ENFORCE_LABEL: "Baseline"}, Level.RESTRICTED),
    "empty-value": ({ENFORCE_LABEL: ""}, Level.RESTRICTED),
}


@pytest.mark.parametrize("case", list(LABELS))
def test_enforced_level(case: str) -> None:
    labels, level = LABELS[case]
    assert enforced_level(labels) is level


@pytest.mark.parametrize(
    ("case", "takeover", "service"),
    list(itertools.product(LABELS, TakeoverMethod, ["echo", ""])),
)
def test_every_label_set_and_takeover(case: str, takeover: TakeoverMethod, service: str) -> None:
    labels, level = LABELS[case]
    decision = decide(NS, labels, takeover, "8080", WORKLOAD, service)
    refused = takeover is TakeoverMethod.REDIRECT and level in (Level.BASELINE, Level.RESTRICTED)
    assert decision.allowed is not refused
    assert decision.level is level
    if decision.allowed:
        assert decision.reason == ""
        return
    reason = decision.reason
    assert "\n" not in reason
    for part in ("port 8080", WORKLOAD, f"namespace {NS}", f'"{level.value}"', "NET_ADMIN"):
        assert part in reason, (part, reason)
    assert reason.endswith("or intercept in a namespace that allows it")
    if service:
        assert f"service {service} targets it by number" in reason
        assert f"make service {service} target it by name" in reason
    else:
        assert "no service selects the workload" in reason
        assert "through a service that targets the port by name" in reason


def test_refusal_reads_as_one_line() -> None:
    decision = decide(
        NS, {ENFORCE_LABEL: "restricted"}, TakeoverMethod.REDIRECT, "8080", WORKLOAD, "echo"
    )
    assert decision.reason == (
        "cannot intercept port 8080 of deployment/echo: service echo targets it by number, "
        "which only an init container with NET_ADMIN can redirect, and namespace shop "
        'enforces Pod Security "restricted", which forbids it; name the container port and '
        "make service echo target it by name (a named port needs no init container), "
        "or intercept in a namespace that allows it"
    )


def test_unknown_level_shows_the_label_value() -> None:
    decision = decide(NS, {ENFORCE_LABEL: "strict"}, TakeoverMethod.REDIRECT, "8080", WORKLOAD)
    assert not decision.allowed
    assert "enforces Pod Security \"restricted\" (label value 'strict')" in decision.reason


@pytest.mark.parametrize(
    ("message", "rejected"),
    [
        (
            'pods "echo-7c9d-x2" is forbidden: violates PodSecurity "restricted:latest": '
            'unrestricted capabilities (container "kubepresence-init" must not include '
            '"NET_ADMIN", "NET_RAW" in securityContext.capabilities.add)',
            True,
        ),
        (
            'pods "echo-7c9d-x2" is forbidden: violates PodSecurity "baseline:v1.34": '
            'non-default capabilities (container "kubepresence-init" must not include '
            '"NET_ADMIN", "NET_RAW" in securityContext.capabilities.add)',
            True,
        ),
        ('pods "echo-1" is forbidden: exceeded quota: compute, requested: cpu=10m', False),
        ("FailedCreate", False),
        ("", False),
    ],
)
def test_rejection_is_recognised(message: str, rejected: bool) -> None:
    assert rejected_by_pod_security(message) is rejected
