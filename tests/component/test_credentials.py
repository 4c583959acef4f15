"""userd's kubeconfig credentials against a real HTTP API stand-in on loopback.

The stand-in accepts only the bearer tokens it is told to (as an API server accepts only
unexpired, unrevoked ones); the exec plugin is a real program that mints a new token per
call and counts its calls. Scenarios:
- An exec plugin runs once at load and its token is used; a revoked token (401) makes the
  next API call fetch a new one and succeed, without the caller seeing the 401.
- A credential that declares an expiry is fetched again before it, for the next request.
- A tokenFile is re-read after a 401 (rotated on disk by someone else).
- A static token refused with 401 is not retried (nothing to refresh): the 401 reaches
  the caller.
- A missing plugin fails the load in one line with its installHint; interactiveMode
  Always fails in one line (the daemon has no terminal); v1 without interactiveMode too.
- Kubeconfigs that cannot be used name the file and the reason in one line: not YAML,
  not a mapping, unreadable, missing, basic auth.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from kubernetes_asyncio import client

from kubepresence.protocol.errors import ConfigError
from kubepresence.userd.k8s import apiclient, credentials, errors

V1 = "client.authentication.k8s.io/v1"


class ApiStandIn:
    """Answers GET /api/v1/namespaces for accepted bearer tokens, 401 otherwise."""

    def __init__(self) -> None:
        self.accepted: set[str] = set()
        self.seen: list[str] = []

    async def namespaces(self, request: web.Request) -> web.Response:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        self.seen.append(token)
        if token not in self.accepted:
            return web.json_response(
                {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 401},
                status=401,
            )
        return web.json_response({"kind": "NamespaceList", "apiVersion": "v1", "items": []})


@pytest.fixture
async def api() -> AsyncIterator[tuple[ApiStandIn, str]]:
    stand_in = ApiStandIn()
    app = web.Application()
    app.router.add_get("/api/v1/namespaces", stand_in.namespaces)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield stand_in, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def kubeconfig(path: Path, server: str, user: dict[str, Any]) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": server}}],
                "users": [{"name": "dev", "user": user}],
                "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "dev"}}],
                "current-context": "ctx",
            }
        )
    )
    return path


def minting_plugin(tmp_path: Path, lifetime: float | None = None) -> Path:
    """A plugin that answers token-N on its N-th call (N counted in a file)."""
    script = tmp_path / "mint-token"
    expiry = (
        f"'expirationTimestamp': time.strftime('%Y-%m-%dT%H:%M:%SZ',"
        f" time.gmtime(time.time() + {lifetime})),"
        if lifetime is not None
        else ""
    )
    script.write_text(
        textwrap.dedent(f"""\
        #!{sys.executable}
        import json, os, pathlib, time
        info = json.loads(os.environ["KUBERNETES_EXEC_INFO"])
        assert info["spec"]["interactive"] is False
        calls = pathlib.Path(os.environ["CALLS"])
        n = int(calls.read_text() or 0) + 1 if calls.exists() else 1
        calls.write_text(str(n))
        print(json.dumps({{"apiVersion": info["apiVersion"], "kind": "ExecCredential",
                          "status": {{"token": f"token-{{n}}", {expiry}}}}}))
        """)
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def exec_user(script: Path, calls: Path, **extra: Any) -> dict[str, Any]:
    return {
        "exec": {
            "apiVersion": V1,
            "command": str(script),
            "env": [{"name": "CALLS", "value": str(calls)}],
            "interactiveMode": "IfAvailable",
            **extra,
        }
    }


async def list_namespaces(configuration: client.Configuration) -> Any:
    async with apiclient.rest_client(configuration) as api:
        return await client.CoreV1Api(api).list_namespace()


async def test_exec_token_used_and_a_revoked_one_replaced(
    api: tuple[ApiStandIn, str], tmp_path: Path
) -> None:
    stand_in, server = api
    calls = tmp_path / "calls"
    path = kubeconfig(tmp_path / "config", server, exec_user(minting_plugin(tmp_path), calls))
    stand_in.accepted = {"token-1"}

    configuration = await apiclient.load_configuration(path)
    assert calls.read_text() == "1"
    await list_namespaces(configuration)
    assert stand_in.seen == ["token-1"]

    stand_in.accepted = {"token-2"}  # token-1 revoked
    await list_namespaces(configuration)
    assert stand_in.seen == ["token-1", "token-1", "token-2"]
    assert calls.read_text() == "2"


async def test_an_expiring_token_is_fetched_again_before_its_expiry(
    api: tuple[ApiStandIn, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stand_in, server = api
    calls = tmp_path / "calls"
    plugin = minting_plugin(tmp_path, lifetime=600)
    path = kubeconfig(tmp_path / "config", server, exec_user(plugin, calls))
    stand_in.accepted = {"token-1", "token-2"}
    configuration = await apiclient.load_configuration(path)
    await list_namespaces(configuration)
    assert calls.read_text() == "1"

    real_clock = credentials.clock
    monkeypatch.setattr(credentials, "clock", lambda: real_clock() + 590)  # 10 s left
    await list_namespaces(configuration)
    assert calls.read_text() == "2"
    assert stand_in.seen == ["token-1", "token-2"]


async def test_a_token_file_is_read_again_after_a_401(
    api: tuple[ApiStandIn, str], tmp_path: Path
) -> None:
    stand_in, server = api
    (tmp_path / "token").write_text("first\n")
    path = kubeconfig(tmp_path / "config", server, {"tokenFile": "token"})  # relative
    stand_in.accepted = {"first"}
    configuration = await apiclient.load_configuration(path)
    await list_namespaces(configuration)

    (tmp_path / "token").write_text("second\n")  # rotated by someone else
    stand_in.accepted = {"second"}
    await list_namespaces(configuration)
    assert stand_in.seen == ["first", "first", "second"]


async def test_a_refused_static_token_is_not_retried(
    api: tuple[ApiStandIn, str], tmp_path: Path
) -> None:
    stand_in, server = api
    path = kubeconfig(tmp_path / "config", server, {"token": "static"})
    configuration = await apiclient.load_configuration(path)
    with pytest.raises(errors.RawApiError) as caught:
        await list_namespaces(configuration)
    assert caught.value.status == 401
    assert stand_in.seen == ["static"]
    assert credentials.source_of(configuration) is None


async def test_a_missing_plugin_names_its_install_hint(tmp_path: Path) -> None:
    user = {
        "exec": {
            "apiVersion": V1,
            "command": "kubepresence-no-such-plugin",
            "interactiveMode": "Never",
            "installHint": "Install it with:\n  apt-get install no-such-plugin",
        }
    }
    path = kubeconfig(tmp_path / "config", "https://127.0.0.1:1", user)
    with pytest.raises(ConfigError) as caught:
        await apiclient.load_configuration(path)
    assert str(caught.value) == (
        "the exec plugin 'kubepresence-no-such-plugin' of user 'dev' cannot be run"
        " (No such file or directory): Install it with: apt-get install no-such-plugin"
    )


async def test_a_failing_plugin_reports_its_last_stderr_line(tmp_path: Path) -> None:
    script = tmp_path / "fail"
    script.write_text(
        "#!/bin/sh\necho 'step one' >&2\necho 'token expired: run login' >&2\nexit 3\n"
    )
    script.chmod(0o755)
    path = kubeconfig(tmp_path / "config", "https://127.0.0.1:1", exec_user(script, tmp_path / "c"))
    with pytest.raises(ConfigError, match=r"failed \(exit 3\): token expired: run login$"):
        await apiclient.load_configuration(path)


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ({"interactiveMode": "Always"}, "needs a terminal"),
        ({"interactiveMode": None}, "needs interactiveMode"),
    ],
)
async def test_plugins_the_daemon_cannot_run_are_refused(
    tmp_path: Path, extra: dict[str, Any], reason: str
) -> None:
    user = exec_user(minting_plugin(tmp_path), tmp_path / "calls", **extra)
    if extra.get("interactiveMode") is None:
        del user["exec"]["interactiveMode"]
    path = kubeconfig(tmp_path / "config", "https://127.0.0.1:1", user)
    with pytest.raises(ConfigError, match=reason):
        await apiclient.load_configuration(path)
    assert not (tmp_path / "calls").exists()


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("clusters: [\n  oops", "is not valid YAML: .* \\(line \\d+, column \\d+\\)"),
        ("- a\n- b\n", "is not a kubeconfig: its top level is a list, not a mapping"),
        ("just a string", "its top level is a str"),
        ("users: {a: 1}\n", "users must be a list of named entries"),
    ],
)
async def test_kubeconfigs_that_cannot_be_used_name_file_and_reason(
    tmp_path: Path, content: str, reason: str
) -> None:
    path = tmp_path / "config"
    path.write_text(content)
    for attempt in (apiclient.load_configuration(path), apiclient.resolve_target(str(path))):
        with pytest.raises(ConfigError, match=reason) as caught:
            await attempt
        assert str(path) in str(caught.value)
        assert "\n" not in str(caught.value)


async def test_unreadable_and_missing_kubeconfigs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read the kubeconfig .*/nope"):
        await apiclient.resolve_target(str(tmp_path / "nope"))
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.write_text("{}")
        locked.chmod(0)
        with pytest.raises(ConfigError, match="Permission denied"):
            await apiclient.resolve_target(str(locked))
    # A KUBECONFIG list skips missing files, as kubectl does, but needs one.
    with pytest.raises(ConfigError, match="no kubeconfig found"):
        await apiclient.resolve_target(f"{tmp_path / 'a'}:{tmp_path / 'b'}")


async def test_basic_auth_is_refused(tmp_path: Path) -> None:
    path = kubeconfig(
        tmp_path / "config", "https://127.0.0.1:1", {"username": "u", "password": "p"}
    )
    with pytest.raises(ConfigError, match=r"removed in 1\.19"):
        await apiclient.load_configuration(path)


async def test_resolve_target_still_reads_contexts_and_namespaces(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path / "config", "https://127.0.0.1:1", {"token": "t"})
    data = yaml.safe_load(path.read_text())
    data["contexts"][0]["context"]["namespace"] = "shop"
    path.write_text(json.dumps(data))  # JSON is YAML too
    target = await apiclient.resolve_target(str(path))
    assert (target.context, target.namespace, target.server) == (
        "ctx",
        "shop",
        "https://127.0.0.1:1",
    )
    with pytest.raises(
        ConfigError, match=r"context 'other' is not in the kubeconfig \(known: ctx\)"
    ):
        await apiclient.resolve_target(str(path), "other")


async def test_cluster_fields_reach_the_client_configuration(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path / "config", "https://10.0.0.1:6443", {"token": "t"})
    data = yaml.safe_load(path.read_text())
    data["clusters"][0]["cluster"].update(
        {
            "insecure-skip-tls-verify": True,
            "tls-server-name": "api.internal",
            "proxy-url": "http://127.0.0.1:3128",
        }
    )
    path.write_text(yaml.safe_dump(data))
    configuration = await apiclient.load_configuration(path)
    assert configuration.verify_ssl is False
    assert configuration.tls_server_name == "api.internal"
    assert configuration.proxy == "http://127.0.0.1:3128"
    assert configuration.api_key["BearerToken"] == "Bearer t"
