"""HTTP filters to and from the wire message."""

from __future__ import annotations

from kubepresence.protocol.gen import common
from kubepresence.protocol.httpfilter import HttpFilter
from kubepresence.protocol.wire import filter_from_message, filter_to_message


def test_round_trip_and_normalisation() -> None:
    sent = common.HttpFilter(
        headers=[common.HeaderMatch(name="X-Dev", value="Alice")],
        path_prefix="/api/",
        method="post",
    )
    received = filter_from_message(sent)
    assert received == HttpFilter(headers=(("x-dev", "Alice"),), path_prefix="/api/", method="POST")
    assert filter_from_message(filter_to_message(received)) == received


def test_no_filter_is_a_global_intercept() -> None:
    assert filter_from_message(None) is None
    assert filter_from_message(common.HttpFilter()) is None
    assert filter_to_message(None) is None
