"""The intercept desk hands out preview URLs for personal intercepts only."""

from __future__ import annotations

import pytest

from kubepresence.manager.rpc.interceptdesk import InterceptDesk
from kubepresence.protocol.errors import UserError
from kubepresence.protocol.gen import common

BASE = "http://kubepresence-manager.kp:8082"
ALICE = common.HttpFilter(headers=[common.HeaderMatch(name="x-dev", value="alice")])


def spec(**extra: object) -> common.InterceptSpec:
    return common.InterceptSpec(
        name="echo",
        namespace="shop",
        workload_name="echo",
        service_port="http",
        local_port=8080,
        **extra,  # type: ignore[arg-type]
    )


def test_a_personal_intercept_gets_a_preview_url_until_it_ends() -> None:
    desk = InterceptDesk(preview_base=BASE)
    info = desk.create("client-1", spec(http_filter=ALICE, preview_ingress_host="frontend.shop"))
    assert info.preview_url.startswith(BASE + "/")
    token = info.preview_url.removeprefix(BASE + "/").rstrip("/")
    preview = desk.previews.get(token)
    assert preview is not None
    assert (preview.ingress.host, preview.ingress.port) == ("frontend.shop", 80)
    assert preview.header == ("x-dev", "alice")
    desk.remove("client-1", "echo")
    assert desk.previews.get(token) is None


def test_previews_end_with_their_client() -> None:
    desk = InterceptDesk(preview_base=BASE)
    info = desk.create(
        "client-1",
        spec(http_filter=ALICE, preview_ingress_host="web", preview_ingress_port=8443,
             preview_ingress_tls=True),
    )  # fmt: skip
    token = info.preview_url.removeprefix(BASE + "/").rstrip("/")
    desk.client_gone("client-1")
    assert desk.previews.get(token) is None


@pytest.mark.parametrize(
    ("base", "extra", "reason"),
    [
        (BASE, {"preview_ingress_host": "web"}, "needs a personal intercept"),
        (
            BASE,
            {"preview_ingress_host": "web", "http_filter": common.HttpFilter(method="GET")},
            "with a header filter",
        ),
        ("", {"preview_ingress_host": "web", "http_filter": ALICE}, "serves no preview URLs"),
        (BASE, {"preview_ingress_host": "a b", "http_filter": ALICE}, "not a host name"),
    ],
)
def test_bad_previews_are_refused_and_leave_nothing(
    base: str, extra: dict[str, object], reason: str
) -> None:
    desk = InterceptDesk(preview_base=base)
    with pytest.raises(UserError, match=reason):
        desk.create("client-1", spec(**extra))
    assert desk.registry.for_client("client-1") == []
