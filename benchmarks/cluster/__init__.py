"""The cluster-level benchmark suite (issue 8): kubepresence on the local cluster, each
figure beside its baseline measured in the same run (the direct path from the node,
`kubectl port-forward` from the workstation, the same pod → Service → app without an
intercept).

It drives the cluster with the e2e tooling (kpcluster's `Cluster`, the e2e `Workstation`
driver and its ws1 lock), which live under tests/: their directories are put on sys.path
here, as tests/e2e/conftest.py does for the tests.
"""

from __future__ import annotations

import sys
from pathlib import Path

_TESTS = Path(__file__).resolve().parents[2] / "tests"
for _directory in (_TESTS / "cluster", _TESTS / "e2e"):
    if str(_directory) not in sys.path:
        sys.path.insert(0, str(_directory))
