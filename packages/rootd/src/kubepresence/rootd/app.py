"""Composition root of the root daemon."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from kubepresence.protocol.errors import ConfigError, KubepresenceError, UserError
from kubepresence.protocol.jsoncalls import ROOTD_CALLS
from kubepresence.protocol.jsonserving import close_json_calls, serve_json_calls
from kubepresence.protocol.lifecycle import Supervisor
from kubepresence.protocol.paths import json_calls_socket
from kubepresence.protocol.transport import close_server, serve_unix
from kubepresence.rootd.core.network import NetworkRequest, PlanError, plan
from kubepresence.rootd.rpc.daemon import DaemonService
from kubepresence.rootd.vif import VifSession, VifSettings, VifStatus, recover

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 60.0
DISCONNECT_TIMEOUT = 4.0  # within the supervisor's 5 s grace


class RootDaemon:
    def __init__(
        self, socket_path: Path, allowed_uid: int, settings: VifSettings | None = None
    ) -> None:
        self.socket_path = socket_path
        self.allowed_uid = allowed_uid
        self.settings = settings or VifSettings()
        self._supervisor: Supervisor | None = None
        self._session: VifSession | None = None
        self._lock = asyncio.Lock()

    async def run(self, supervisor: Supervisor) -> None:
        self._supervisor = supervisor
        # A crashed run may have left resolv.conf rewritten: put it back before serving.
        await asyncio.to_thread(recover, self.settings)
        service = DaemonService(self, supervisor)
        # Only the invoking user may call; the socket belongs to them so that their
        # userd can connect, and mode 0600 keeps everyone else out at the file level too.
        json_socket = json_calls_socket(self.socket_path)
        json_server = await serve_json_calls(
            [service],
            ROOTD_CALLS,
            json_socket,
            allowed_uids={self.allowed_uid},
            owner_uid=self.allowed_uid,
        )
        try:
            server = await serve_unix(
                [service],
                self.socket_path,
                mode=0o600,
                allowed_uids={self.allowed_uid},
                owner_uid=self.allowed_uid,
            )
        except BaseException:
            await close_json_calls(json_server, json_socket)
            raise
        try:
            await supervisor.stopping.wait()
        finally:
            await self.disconnect(supervisor.stop_reason or "rootd is stopping")
            await close_server(server)
            self.socket_path.unlink(missing_ok=True)
            await close_json_calls(json_server, json_socket)

    async def connect(self, request: NetworkRequest) -> VifStatus:
        """Bring up the VIF for a session; UserError when one is up already."""
        assert self._supervisor is not None
        async with self._lock:
            if self._session is not None and not self._session.done.is_set():
                raise UserError("already connected: disconnect first")
            try:
                network_plan = plan(request)
            except PlanError as error:
                raise UserError(str(error)) from None
            session = VifSession(network_plan, self.settings)
            ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._supervisor.spawn(session.run(ready), name="vif")
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    await ready
            except asyncio.CancelledError:
                # userd gave up on this Connect: it will not Disconnect what it never saw.
                session.request_stop("the Connect call was cancelled")
                raise
            except KubepresenceError:
                raise
            except TimeoutError:
                session.request_stop("bringing the VIF up took too long")
                raise ConfigError("bringing the VIF up took too long") from None
            except OSError as error:
                raise ConfigError(f"cannot bring the VIF up: {error}") from None
            self._session = session
            return session.status()

    async def disconnect(self, reason: str) -> bool:
        """Take the VIF down and undo every change; False when none was up."""
        session = self._session
        if session is None:
            return False
        self._session = None
        session.request_stop(reason)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DISCONNECT_TIMEOUT):
                await session.done.wait()
        if not session.done.is_set():
            log.warning("the VIF did not stop within %.0f s", DISCONNECT_TIMEOUT)
        return True

    def update_session(self, session_id: str) -> None:
        """userd arrived again as `session_id`: the VIF's flows name it from now on."""
        session = self._session
        if session is None:
            raise UserError("not connected")
        session.session_id = session_id
        log.info("the session is now %s", session_id)

    def status(self) -> VifStatus:
        session = self._session
        return session.status() if session is not None else VifStatus(connected=False)
