"""A personal intercept's filter as the manager reads it from a client's spec (the
conversion itself is protocol.wire's, tested there; here: the manager's checks)."""

from __future__ import annotations

import pytest

from kubepresence.manager.rpc.interceptdesk import filter_of
from kubepresence.protocol.errors import UserError
from kubepresence.protocol.gen import common


def test_no_or_empty_filter_is_global() -> None:
    assert filter_of(None) is None
    assert filter_of(common.HttpFilter()) is None


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (common.HttpFilter(path_regex="(["), "--http-path-regex"),
        (common.HttpFilter(headers=[common.HeaderMatch(name="bad name", value="1")]), "header"),
        (common.HttpFilter(path_prefix="no-slash"), "a path starts with '/'"),
    ],
)
def test_a_bad_filter_is_the_clients_error(message: common.HttpFilter, reason: str) -> None:
    # A client other than our CLI may send anything: the manager checks it too.
    with pytest.raises(UserError, match=reason):
        filter_of(message)
