from __future__ import annotations

import pytest

from kubepresence.cli.core.interceptflags import (
    PreviewOptions,
    filter_from_options,
    preview_options,
    wants_auto_header,
)
from kubepresence.protocol.errors import UserError
from kubepresence.protocol.httpfilter import HttpFilter


def test_no_filter_option_is_a_global_intercept() -> None:
    assert filter_from_options([]) is None


def test_options_build_one_filter() -> None:
    built = filter_from_options(["X-Dev=alice", "x-team=a=b"], path_prefix="/api/", method="get")
    assert built == HttpFilter(
        headers=(("x-dev", "alice"), ("x-team", "a=b")), path_prefix="/api/", method="GET"
    )


def test_auto_takes_the_generated_header() -> None:
    assert wants_auto_header(["auto"])
    built = filter_from_options(["auto"], auto=("x-kubepresence-intercept-id", "s:echo"))
    assert built == HttpFilter(headers=(("x-kubepresence-intercept-id", "s:echo"),))
    with pytest.raises(UserError, match="needs a connected session"):
        filter_from_options(["auto"])


@pytest.mark.parametrize(
    ("headers", "options", "message"),
    [
        (["x-dev"], {}, "expected NAME=VALUE"),
        (["bad name=1"], {}, "not a valid header name"),
        ([], {"path_regex": "(["}, "--http-path-regex '(['"),
        ([], {"path_prefix": "api"}, "a path starts with '/'"),
        ([], {"path_prefix": "/a", "path_equal": "/b"}, "cannot be used together"),
        ([], {"method": "GE T"}, "not an HTTP method name"),
        (["x-a=1", "X-A=2"], {}, "given more than once"),
    ],
)
def test_bad_filters_say_why_in_one_line(
    headers: list[str], options: dict[str, str], message: str
) -> None:
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace("[", r"\[")) as caught:
        filter_from_options(
            headers,
            path_prefix=options.get("path_prefix", ""),
            path_equal=options.get("path_equal", ""),
            path_regex=options.get("path_regex", ""),
            method=options.get("method", ""),
        )
    assert "\n" not in str(caught.value)


def test_preview_options() -> None:
    assert preview_options(False, "", 0, False) is None
    assert preview_options(True, "frontend.shop", 0, True) == PreviewOptions(
        "frontend.shop", 0, True
    )
    with pytest.raises(UserError, match="need --preview-url"):
        preview_options(False, "frontend.shop", 0, False)
    with pytest.raises(UserError, match="needs --ingress-host"):
        preview_options(True, "", 80, False)
    with pytest.raises(UserError, match="out of range"):
        preview_options(True, "web", 70000, False)
