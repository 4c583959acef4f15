"""The kubeconfig credential rules of core.credentials (client-go's, for exec and tokenFile).

Scenarios:
- exec sections are validated as client-go does: command, apiVersion v1/v1beta1, args and
  env shapes, interactiveMode required in v1 and defaulted in v1beta1, installHint kept,
  relative commands resolved against the kubeconfig's directory.
- username/password is refused in one line; a tokenFile is resolved relative to the
  kubeconfig; static tokens and certificates are left to the client library.
- Plugin answers: token or certificate+key, expirationTimestamp in RFC 3339 forms, and every
  malformed answer refused with a reason naming the plugin and user.
- The cache fetches first, before expiry (at most a quarter of the lifetime ahead), after a
  401, and periodically for token files; a property test over arbitrary clocks.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubepresence.userd.core import credentials as c

V1 = "client.authentication.k8s.io/v1"
V1BETA1 = "client.authentication.k8s.io/v1beta1"


def plugin(**section: Any) -> c.ExecPlugin:
    base: dict[str, Any] = {"command": "get-token", "apiVersion": V1, "interactiveMode": "Never"}
    base.update(section)
    return c.exec_plugin(base, "dev", "/home/dev/.kube")


def test_exec_section_is_read_whole() -> None:
    got = plugin(
        args=["--cluster", "x"],
        env=[{"name": "A", "value": "1"}, {"name": "B", "value": 2}],
        installHint="brew install get-token\n  or apt-get install get-token",
        provideClusterInfo=True,
    )
    assert got == c.ExecPlugin(
        user="dev",
        command="get-token",
        args=("--cluster", "x"),
        env=(("A", "1"), ("B", "2")),
        api_version=V1,
        install_hint="brew install get-token\n  or apt-get install get-token",
        interactive_mode="Never",
        provide_cluster_info=True,
    )


def test_relative_command_is_relative_to_the_kubeconfig_and_bare_names_use_path() -> None:
    assert plugin(command="./bin/get-token").command == "/home/dev/.kube/./bin/get-token"
    assert plugin(command="/opt/get-token").command == "/opt/get-token"
    assert plugin(command="get-token").command == "get-token"


def test_interactive_mode_is_required_in_v1_and_defaulted_in_v1beta1() -> None:
    with pytest.raises(c.CredentialConfigError, match="needs interactiveMode"):
        c.exec_plugin({"command": "x", "apiVersion": V1}, "dev", "")
    assert c.exec_plugin({"command": "x", "apiVersion": V1BETA1}, "dev", "").interactive_mode == (
        "IfAvailable"
    )


@pytest.mark.parametrize(
    ("section", "reason"),
    [
        ("not a mapping", "not a mapping"),
        ({"apiVersion": V1, "interactiveMode": "Never"}, "has no command"),
        ({"command": "x", "apiVersion": "client.authentication.k8s.io/v1alpha1"}, "apiVersion"),
        ({"command": "x", "apiVersion": V1, "interactiveMode": "Sometimes"}, "interactiveMode"),
        ({"command": "x", "apiVersion": V1BETA1, "args": "--flag"}, "args must be a list"),
        ({"command": "x", "apiVersion": V1BETA1, "args": [1]}, "args must be a list"),
        ({"command": "x", "apiVersion": V1BETA1, "env": {"A": "1"}}, "env must be a list"),
        ({"command": "x", "apiVersion": V1BETA1, "env": [{"value": "1"}]}, "need a name"),
    ],
)
def test_bad_exec_sections_are_refused_with_the_reason(section: Any, reason: str) -> None:
    with pytest.raises(c.CredentialConfigError, match=reason) as caught:
        c.exec_plugin(section, "dev", "")
    assert "'dev'" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_user_auth_forms() -> None:
    assert c.user_auth(None, "u", "/k") is None
    assert c.user_auth({"token": "abc"}, "u", "/k") is None
    assert c.user_auth({"client-certificate-data": "x", "client-key-data": "y"}, "u", "/k") is None
    assert c.user_auth({"tokenFile": "tok"}, "u", "/k") == c.TokenFile("u", "/k/tok")
    assert c.user_auth({"tokenFile": "/abs/tok"}, "u", "/k") == c.TokenFile("u", "/abs/tok")
    # A literal token wins over the file, as in client-go.
    assert c.user_auth({"token": "abc", "tokenFile": "tok"}, "u", "/k") is None
    got = c.user_auth({"exec": {"command": "x", "apiVersion": V1BETA1}}, "u", "/k")
    assert isinstance(got, c.ExecPlugin)


def test_basic_auth_is_refused_in_one_line() -> None:
    with pytest.raises(c.CredentialConfigError) as caught:
        c.user_auth({"username": "admin", "password": "secret"}, "old", "")
    assert "removed in 1.19" in str(caught.value)
    assert "secret" not in str(caught.value)


def test_refusal_without_terminal_only_for_always() -> None:
    assert c.refusal_without_terminal(plugin(interactiveMode="Never")) is None
    assert c.refusal_without_terminal(plugin(interactiveMode="IfAvailable")) is None
    refusal = c.refusal_without_terminal(plugin(interactiveMode="Always"))
    assert refusal is not None
    assert "needs a terminal" in refusal


def test_exec_info_is_never_interactive_and_carries_cluster_info_when_asked() -> None:
    cluster = {
        "server": "https://10.0.0.1:6443",
        "certificate-authority-data": "Q0E=",
        "tls-server-name": "api",
        "extensions": [{"name": "client.authentication.k8s.io/exec", "extension": {"a": 1}}],
    }
    info = json.loads(c.exec_info(plugin(), cluster))
    assert info == {"apiVersion": V1, "kind": "ExecCredential", "spec": {"interactive": False}}
    info = json.loads(c.exec_info(plugin(provideClusterInfo=True), cluster))
    assert info["spec"]["cluster"] == {
        "server": "https://10.0.0.1:6443",
        "certificate-authority-data": "Q0E=",
        "tls-server-name": "api",
        "config": {"a": 1},
    }


def answer(status: dict[str, Any], api_version: str = V1, kind: str = "ExecCredential") -> bytes:
    return json.dumps({"apiVersion": api_version, "kind": kind, "status": status}).encode()


def test_token_answer_with_expiry() -> None:
    got = c.parse_exec_output(
        plugin(), answer({"token": "t0k", "expirationTimestamp": "2026-12-07T01:02:03Z"})
    )
    assert got.token == "t0k"
    assert got.expires_at == 1796605323.0


@pytest.mark.parametrize(
    ("stamp", "epoch"),
    [
        ("2026-12-07T01:02:03Z", 1796605323.0),
        ("2026-12-07T01:02:03.5Z", 1796605323.5),
        ("2026-12-07T02:02:03+01:00", 1796605323.0),
        ("2026-12-07T01:02:03", 1796605323.0),
    ],
)
def test_rfc3339_forms(stamp: str, epoch: float) -> None:
    assert c.parse_timestamp(stamp, "p") == epoch


def test_certificate_answer() -> None:
    got = c.parse_exec_output(
        plugin(), answer({"clientCertificateData": "C", "clientKeyData": "K"})
    )
    assert (got.token, got.client_certificate, got.client_key, got.expires_at) == (
        "",
        "C",
        "K",
        None,
    )


@pytest.mark.parametrize(
    ("stdout", "reason"),
    [
        (b"not json", "no ExecCredential JSON"),
        (b"[1]", "not an ExecCredential"),
        (answer({"token": "t"}, kind="Secret"), "kind 'Secret'"),
        (answer({"token": "t"}, api_version=V1BETA1), "answered in"),
        (json.dumps({"apiVersion": V1, "kind": "ExecCredential"}).encode(), "without status"),
        (answer({}), "neither a token nor"),
        (answer({"token": "t", "clientCertificateData": "C", "clientKeyData": "K"}), "both"),
        (answer({"clientCertificateData": "C"}), "without its key"),
        (answer({"token": "t", "expirationTimestamp": "tomorrow"}), "not RFC 3339"),
    ],
)
def test_malformed_answers_are_refused(stdout: bytes, reason: str) -> None:
    with pytest.raises(c.CredentialConfigError, match=reason) as caught:
        c.parse_exec_output(plugin(), stdout)
    assert "'get-token'" in str(caught.value)


def test_token_file_content() -> None:
    assert c.token_of_file(b"  abc.def\n", "/t") == "abc.def"
    with pytest.raises(c.CredentialConfigError, match="empty"):
        c.token_of_file(b"\n", "/t")


def test_cache_fetches_first_before_expiry_and_after_a_refusal() -> None:
    cache = c.CredentialCache()
    assert cache.needs_fetch(0.0)
    cache.store(c.Credential(token="a", expires_at=1000.0), now=0.0)
    assert not cache.needs_fetch(900.0)
    assert cache.needs_fetch(970.0)  # 30 s ahead of the expiry
    cache.store(c.Credential(token="b", expires_at=1010.0), now=1000.0)
    assert not cache.needs_fetch(1007.0)
    assert cache.needs_fetch(1007.5)  # a 10 s lifetime is refreshed 2.5 s ahead
    assert cache.invalidate()
    assert cache.needs_fetch(1001.0)
    assert not cache.invalidate()
    assert cache.fetches == 2


def test_cache_without_expiry_keeps_the_credential_unless_periodic() -> None:
    forever = c.CredentialCache()
    forever.store(c.Credential(token="a"), now=0.0)
    assert not forever.needs_fetch(1e9)
    periodic = c.CredentialCache(period=c.TOKEN_FILE_PERIOD)
    periodic.store(c.Credential(token="a"), now=0.0)
    assert not periodic.needs_fetch(59.0)
    assert periodic.needs_fetch(60.0)


@given(
    fetched=st.integers(min_value=0, max_value=10**9),
    lifetime=st.integers(min_value=0, max_value=10**6),
    later=st.integers(min_value=0, max_value=2 * 10**6),
)
def test_cache_never_keeps_an_expired_credential_and_uses_most_of_a_lifetime(
    fetched: int, lifetime: int, later: int
) -> None:
    cache = c.CredentialCache()
    cache.store(c.Credential(token="a", expires_at=fetched + lifetime), now=fetched)
    now = fetched + later
    if now >= fetched + lifetime:
        assert cache.needs_fetch(now)
    if later < lifetime * 0.75:
        assert not cache.needs_fetch(now)
