"""core.interceptports (the local end): one local port, one intercept, unless shared on purpose.

Scenarios: the same port on the same or an any-address host conflicts and names the other
intercept; another port, or another host, does not; the same workload port again is left
to the manager's own refusal."""

from __future__ import annotations

import pytest

from kubepresence.userd.core.interceptports import LocalTarget, conflict

WEB = LocalTarget("web", "shop", "web", "http", "127.0.0.1", 8080)


@pytest.mark.parametrize(
    ("new", "clash"),
    [
        (LocalTarget("api", "shop", "api", "http", "127.0.0.1", 8080), True),
        (LocalTarget("api", "other", "web", "http", "127.0.0.1", 8080), True),
        (LocalTarget("api", "shop", "web", "grpc", "127.0.0.1", 8080), True),
        (LocalTarget("api", "shop", "api", "http", "0.0.0.0", 8080), True),
        (LocalTarget("api", "shop", "api", "http", "::", 8080), True),
        (LocalTarget("api", "shop", "api", "http", "127.0.0.1", 8081), False),
        (LocalTarget("api", "shop", "api", "http", "127.0.0.2", 8080), False),
        (LocalTarget("web2", "shop", "web", "http", "127.0.0.1", 8080), False),
    ],
)
def test_conflicts(new: LocalTarget, clash: bool) -> None:
    found = conflict([WEB], new)
    assert (found is not None) == clash
    if found:
        assert found == (
            "local port 8080 already receives intercept 'web' (shop/web): pick another"
            " local port, or pass --share-local-port to send both there"
        )


def test_no_intercepts_no_conflict() -> None:
    assert conflict([], WEB) is None
