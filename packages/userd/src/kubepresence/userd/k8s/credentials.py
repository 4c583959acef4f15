"""Credentials that change while a session lives: exec plugins and token files.

A `CredentialSource` is attached to a kubernetes-asyncio `Configuration` as its
`refresh_api_key_hook`, which the client calls before every request, REST or WebSocket,
and which the SPDY port-forward calls through `auth_settings()`: so every API call and
every port-forward (re)connect carries a current token. The decisions (when to fetch
again, what a plugin's answer means) are in `core.credentials`; this shell runs the
plugin, as the user userd runs as, and reads the token file. A 401 anywhere calls
`invalidate(configuration)`, and the next request fetches anew.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import tempfile
import time
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client

from kubepresence.protocol.errors import ConfigError
from kubepresence.userd.core.credentials import (
    TOKEN_FILE_PERIOD,
    Credential,
    CredentialCache,
    CredentialConfigError,
    ExecPlugin,
    TokenFile,
    UserAuth,
    exec_info,
    parse_exec_output,
    refusal_without_terminal,
    token_of_file,
)

log = logging.getLogger(__name__)

# Wall-clock time: expirationTimestamp is wall-clock time too. A name tests can replace.
clock: Callable[[], float] = time.time
PLUGIN_TIMEOUT = 120.0  # a plugin may open a browser or ask an IdP; kubectl has no limit
_sources: weakref.WeakKeyDictionary[client.Configuration, CredentialSource] = (
    weakref.WeakKeyDictionary()
)


class CredentialSource:
    """One kubeconfig user's changing credential, fetched when the cache says so."""

    def __init__(self, auth: UserAuth, cluster: Mapping[str, Any] | None = None) -> None:
        self.auth = auth
        self.cluster = dict(cluster or {})
        period = TOKEN_FILE_PERIOD if isinstance(auth, TokenFile) else None
        self.cache = CredentialCache(period=period)
        self._lock = asyncio.Lock()
        self._cert_dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def fetches(self) -> int:
        return self.cache.fetches

    async def current(self) -> Credential:
        """The credential to use now, fetched first if it expired or was refused."""
        if not self.cache.needs_fetch(clock()):
            assert self.cache.current is not None
            return self.cache.current
        async with self._lock:
            if self.cache.needs_fetch(clock()):
                credential = await self._fetch()
                self.cache.store(credential, clock())
                log.info("credential of user %s fetched%s", self.auth.user, _expiry(credential))
            assert self.cache.current is not None
            return self.cache.current

    def invalidate(self) -> bool:
        dropped = self.cache.invalidate()
        if dropped:
            log.info(
                "the API server refused user %s's credential: fetching it again", self.auth.user
            )
        return dropped

    async def apply(self, configuration: client.Configuration) -> None:
        """Put the current credential into the configuration (the refresh hook's body)."""
        credential = await self.current()
        if credential.token:
            configuration.api_key["BearerToken"] = f"Bearer {credential.token}"
        elif credential.client_certificate:
            if configuration.cert_file and self._cert_dir is not None:
                # The HTTP clients keep the TLS context they were built with; a rotated
                # certificate would need new clients. Plugins that rotate certificates
                # also keep the old one valid until its expiry.
                return
            configuration.cert_file, configuration.key_file = self._write_certificate(credential)

    def _write_certificate(self, credential: Credential) -> tuple[str, str]:
        self._cert_dir = tempfile.TemporaryDirectory(prefix="kubepresence-cred-")
        atexit.register(self._cert_dir.cleanup)
        paths = []
        for name, pem in (
            ("client.crt", credential.client_certificate),
            ("client.key", credential.client_key),
        ):
            path = Path(self._cert_dir.name) / name
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(pem)
            paths.append(str(path))
        return paths[0], paths[1]

    async def _fetch(self) -> Credential:
        try:
            if isinstance(self.auth, TokenFile):
                return await self._read_token_file(self.auth)
            return await self._run_plugin(self.auth)
        except CredentialConfigError as error:
            raise ConfigError(str(error)) from error

    async def _read_token_file(self, auth: TokenFile) -> Credential:
        try:
            content = await asyncio.to_thread(Path(auth.path).read_bytes)
        except OSError as error:
            raise ConfigError(
                f"cannot read the tokenFile of user {auth.user!r}: {error.strerror}: {auth.path}"
            ) from error
        return Credential(token=token_of_file(content, auth.path))

    async def _run_plugin(self, plugin: ExecPlugin) -> Credential:
        refusal = refusal_without_terminal(plugin)
        if refusal:
            raise ConfigError(refusal)
        env = {
            **os.environ,
            **dict(plugin.env),
            "KUBERNETES_EXEC_INFO": exec_info(plugin, self.cluster),
        }
        try:
            process = await asyncio.create_subprocess_exec(
                plugin.command,
                *plugin.args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
            )
        except (FileNotFoundError, PermissionError) as error:
            hint = plugin.install_hint or "install it, or fix its path in the kubeconfig"
            raise ConfigError(
                f"the exec plugin {plugin.command!r} of user {plugin.user!r} cannot be run"
                f" ({error.strerror}): {' '.join(hint.split())}"
            ) from error
        try:
            async with asyncio.timeout(PLUGIN_TIMEOUT):
                stdout, stderr = await process.communicate()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            raise ConfigError(
                f"the exec plugin {plugin.command!r} of user {plugin.user!r} gave no answer"
                f" within {PLUGIN_TIMEOUT:.0f} s"
            ) from None
        if process.returncode != 0:
            last = stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
            raise ConfigError(
                f"the exec plugin {plugin.command!r} of user {plugin.user!r} failed"
                f" (exit {process.returncode}): {last[0]}"
            )
        return parse_exec_output(plugin, stdout)


def _expiry(credential: Credential) -> str:
    if credential.expires_at is None:
        return ""
    return f", valid for {credential.expires_at - clock():.0f} s"


async def attach(
    configuration: client.Configuration, auth: UserAuth, cluster: Mapping[str, Any] | None
) -> CredentialSource:
    """Make `configuration` fetch this credential before every request; fetch it once now
    (a missing plugin or unreadable token file fails the connect, not a later call)."""
    source = CredentialSource(auth, cluster)
    await source.apply(configuration)

    async def refresh(conf: client.Configuration) -> None:
        await source.apply(conf)

    configuration.refresh_api_key_hook = refresh
    _sources[configuration] = source
    return source


def source_of(configuration: client.Configuration) -> CredentialSource | None:
    return _sources.get(configuration)


def invalidate(configuration: client.Configuration) -> bool:
    """The server answered 401: drop the cached credential. False if there is nothing to
    fetch again (a static credential: retrying would be refused the same way)."""
    source = _sources.get(configuration)
    return source.invalidate() if source is not None else False
