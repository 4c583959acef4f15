"""The user credentials of a kubeconfig, as kubectl (client-go) reads and refreshes them.

Model. A kubeconfig user authenticates in one of these ways; kubernetes-asyncio reads the
static ones (client certificate file or data, bearer `token`), and this module owns the
ones that change while a session lives:

- `exec`: a credential plugin (EKS, GKE, AKS, OIDC helpers) prints an `ExecCredential`
  with a token (or a client certificate) and, usually, an `expirationTimestamp`. The answer
  is kept until shortly before that time, then the plugin runs again; a 401 from the API
  server drops it at once (the token was revoked or the clock is off).
- `tokenFile`: a token on disk that something else rotates; read again at least once a
  minute (client-go's period) and after a 401.
- `username`/`password`: basic auth, which Kubernetes removed in 1.19; refused in one line.

Everything here is plain data and decisions: no process is started, no file read, no
clock read. `k8s/credentials.py` is the shell that runs plugins and reads files.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

EXEC_API_VERSIONS = (
    "client.authentication.k8s.io/v1",
    "client.authentication.k8s.io/v1beta1",
)
INTERACTIVE_MODES = ("Never", "IfAvailable", "Always")
# client-go re-reads a tokenFile this often (cachingTokenSource).
TOKEN_FILE_PERIOD = 60.0
# Refresh an expiring credential this long before its expiry (at most a quarter of its
# lifetime, so a short-lived one is still used for most of it).
REFRESH_AHEAD = 30.0


class CredentialConfigError(ValueError):
    """The kubeconfig's user section or a plugin's answer cannot be used; the text says why."""


@dataclass(frozen=True)
class ExecPlugin:
    """A kubeconfig `exec` section, validated."""

    user: str
    command: str
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    api_version: str = EXEC_API_VERSIONS[0]
    install_hint: str = ""
    interactive_mode: str = "IfAvailable"
    provide_cluster_info: bool = False


@dataclass(frozen=True)
class TokenFile:
    """A kubeconfig `tokenFile`, as an absolute path."""

    user: str
    path: str


UserAuth = ExecPlugin | TokenFile


@dataclass(frozen=True)
class Credential:
    """What a plugin or token file gave: a bearer token, or a client certificate and key."""

    token: str = ""
    client_certificate: str = ""  # PEM
    client_key: str = ""  # PEM
    expires_at: float | None = None  # seconds since the epoch; None: until refused


def user_auth(user: Mapping[str, Any] | None, user_name: str, base_dir: str) -> UserAuth | None:
    """The changing credential a kubeconfig user uses, or None for a static one.

    `base_dir` is the directory of the kubeconfig file that defines the user: relative
    paths (tokenFile, a plugin's command with a slash) are relative to it, as in kubectl.
    """
    user = user or {}
    if "exec" in user and user["exec"] is not None:
        return exec_plugin(user["exec"], user_name, base_dir)
    if user.get("username") is not None or user.get("password") is not None:
        raise CredentialConfigError(
            f"user {user_name!r} of the kubeconfig uses a username and password (basic auth),"
            " which Kubernetes removed in 1.19: use a token, a client certificate or an exec"
            " plugin"
        )
    token_file = user.get("tokenFile")
    if token_file and not user.get("token"):
        if not isinstance(token_file, str):
            raise CredentialConfigError(f"user {user_name!r}: tokenFile must be a path")
        return TokenFile(user_name, _resolve(token_file, base_dir))
    return None


def _resolve(path: str, base_dir: str) -> str:
    if path.startswith("/") or not base_dir:
        return path
    return f"{base_dir.rstrip('/')}/{path}"


def exec_plugin(section: Any, user_name: str, base_dir: str) -> ExecPlugin:
    """Validate an `exec` section the way client-go does."""

    def bad(reason: str) -> CredentialConfigError:
        return CredentialConfigError(f"user {user_name!r}: the exec plugin {reason}")

    if not isinstance(section, Mapping):
        raise bad("section is not a mapping")
    command = section.get("command")
    if not isinstance(command, str) or not command:
        raise bad("has no command")
    api_version = section.get("apiVersion")
    if api_version not in EXEC_API_VERSIONS:
        known = " or ".join(EXEC_API_VERSIONS)
        raise bad(f"apiVersion {api_version!r} is not supported (use {known})")
    args = section.get("args") or []
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise bad("args must be a list of strings")
    env_items = section.get("env") or []
    env: list[tuple[str, str]] = []
    if not isinstance(env_items, list):
        raise bad("env must be a list of name/value entries")
    for item in env_items:
        if not (isinstance(item, Mapping) and isinstance(item.get("name"), str)):
            raise bad("env entries need a name and a value")
        env.append((item["name"], str(item.get("value", ""))))
    mode = section.get("interactiveMode")
    if mode is None:
        if api_version.endswith("/v1"):
            raise bad("needs interactiveMode (Never, IfAvailable or Always) in apiVersion v1")
        mode = "IfAvailable"
    if mode not in INTERACTIVE_MODES:
        raise bad(f"interactiveMode {mode!r} is not one of {', '.join(INTERACTIVE_MODES)}")
    hint = section.get("installHint") or ""
    # kubectl resolves a command with a slash relative to the kubeconfig; a bare name on PATH.
    resolved = _resolve(command, base_dir) if "/" in command else command
    return ExecPlugin(
        user=user_name,
        command=resolved,
        args=tuple(args),
        env=tuple(env),
        api_version=api_version,
        install_hint=str(hint).strip(),
        interactive_mode=mode,
        provide_cluster_info=bool(section.get("provideClusterInfo")),
    )


def refusal_without_terminal(plugin: ExecPlugin) -> str | None:
    """Why the plugin cannot run from the daemon (no terminal there), or None."""
    if plugin.interactive_mode == "Always":
        return (
            f"the exec plugin {plugin.command!r} of user {plugin.user!r} needs a terminal"
            " (interactiveMode: Always) and the kubepresence daemon has none: log in with"
            " the plugin first (e.g. run any kubectl command), or set interactiveMode to"
            " IfAvailable"
        )
    return None


def exec_info(plugin: ExecPlugin, cluster: Mapping[str, Any] | None) -> str:
    """The KUBERNETES_EXEC_INFO the plugin gets: never interactive (a daemon runs it)."""
    spec: dict[str, Any] = {"interactive": False}
    if plugin.provide_cluster_info and cluster is not None:
        spec["cluster"] = cluster_info(cluster)
    return json.dumps({"apiVersion": plugin.api_version, "kind": "ExecCredential", "spec": spec})


def cluster_info(cluster: Mapping[str, Any]) -> dict[str, Any]:
    """The `spec.cluster` of an ExecCredential, from a kubeconfig cluster section."""
    info: dict[str, Any] = {"server": cluster.get("server", "")}
    for source, target in (
        ("tls-server-name", "tls-server-name"),
        ("insecure-skip-tls-verify", "insecure-skip-tls-verify"),
        ("proxy-url", "proxy-url"),
        ("certificate-authority-data", "certificate-authority-data"),
    ):
        if cluster.get(source) is not None:
            info[target] = cluster[source]
    extensions = cluster.get("extensions") or []
    for extension in extensions if isinstance(extensions, list) else []:
        if isinstance(extension, Mapping) and extension.get("name") == (
            "client.authentication.k8s.io/exec"
        ):
            info["config"] = extension.get("extension")
    return info


def parse_exec_output(plugin: ExecPlugin, stdout: bytes) -> Credential:
    """The credential in a plugin's answer, checked as client-go checks it."""
    who = f"the exec plugin {plugin.command!r} of user {plugin.user!r}"
    try:
        answer = json.loads(stdout)
    except ValueError as error:
        raise CredentialConfigError(f"{who} printed no ExecCredential JSON: {error}") from None
    if not isinstance(answer, Mapping):
        raise CredentialConfigError(f"{who} printed JSON that is not an ExecCredential")
    if answer.get("kind") != "ExecCredential":
        raise CredentialConfigError(
            f"{who} printed kind {answer.get('kind')!r}, not ExecCredential"
        )
    if answer.get("apiVersion") != plugin.api_version:
        raise CredentialConfigError(
            f"{who} answered in {answer.get('apiVersion')!r}, the kubeconfig asks for"
            f" {plugin.api_version!r}"
        )
    status = answer.get("status")
    if not isinstance(status, Mapping):
        raise CredentialConfigError(f"{who} printed an ExecCredential without status")
    expires_at = None
    if status.get("expirationTimestamp"):
        expires_at = parse_timestamp(str(status["expirationTimestamp"]), who)
    token = status.get("token") or ""
    certificate = status.get("clientCertificateData") or ""
    key = status.get("clientKeyData") or ""
    if token and (certificate or key):
        raise CredentialConfigError(f"{who} gave both a token and a client certificate")
    if bool(certificate) != bool(key):
        raise CredentialConfigError(
            f"{who} gave a client certificate without its key, or a key alone"
        )
    if not token and not certificate:
        raise CredentialConfigError(f"{who} gave neither a token nor a client certificate")
    return Credential(
        token=str(token),
        client_certificate=str(certificate),
        client_key=str(key),
        expires_at=expires_at,
    )


def parse_timestamp(text: str, who: str) -> float:
    """RFC 3339 (what client-go writes: 2026-12-07T01:02:03Z, fractions and offsets too)."""
    try:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise CredentialConfigError(
            f"{who} gave expirationTimestamp {text!r}, not RFC 3339"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


def token_of_file(content: bytes, path: str) -> str:
    """A token file's token: its content without surrounding whitespace, as client-go."""
    token = content.decode("utf-8", errors="replace").strip()
    if not token:
        raise CredentialConfigError(f"the tokenFile {path} is empty")
    return token


@dataclass
class CredentialCache:
    """When to fetch a credential again: before expiry, after a refusal, or periodically.

    `period` is for sources without an expiry that may change behind our back (a token
    file); None keeps such a credential until a 401 drops it.
    """

    period: float | None = None
    current: Credential | None = None
    fetched_at: float = 0.0
    fetches: int = field(default=0)

    def needs_fetch(self, now: float) -> bool:
        if self.current is None:
            return True
        expires_at = self.current.expires_at
        if expires_at is not None:
            lifetime = max(0.0, expires_at - self.fetched_at)
            ahead = min(REFRESH_AHEAD, lifetime / 4)
            if now >= expires_at - ahead:
                return True
        return self.period is not None and now - self.fetched_at >= self.period

    def store(self, credential: Credential, now: float) -> None:
        self.current = credential
        self.fetched_at = now
        self.fetches += 1

    def invalidate(self) -> bool:
        """Forget the credential (the server refused it); False if there was none."""
        had = self.current is not None
        self.current = None
        return had
