"""The Connector service the CLI talks to."""

from __future__ import annotations

import logging

from kubepresence.protocol import version_of
from kubepresence.protocol.errors import UserError
from kubepresence.protocol.gen import common, connector
from kubepresence.protocol.gen.google import protobuf
from kubepresence.protocol.lifecycle import Supervisor
from kubepresence.protocol.logs import set_level
from kubepresence.userd.core.session import Phase, SessionState

log = logging.getLogger(__name__)

_STATE = {
    Phase.DISCONNECTED: connector.ConnectState.DISCONNECTED,
    Phase.CONNECTING: connector.ConnectState.CONNECTING,
    Phase.CONNECTED: connector.ConnectState.CONNECTED,
}


class ConnectorService(connector.ConnectorBase):
    def __init__(self, state: SessionState, supervisor: Supervisor) -> None:
        self._state = state
        self._supervisor = supervisor

    async def version(self, message: protobuf.Empty) -> common.VersionInfo:
        return common.VersionInfo(name="userd", version=version_of("kubepresence-userd"))

    async def status(self, message: protobuf.Empty) -> connector.ConnectInfo:
        return connector.ConnectInfo(
            state=_STATE[self._state.phase],
            context=self._state.context,
            namespace=self._state.namespace,
        )

    async def set_log_level(self, message: common.LogLevelRequest) -> protobuf.Empty:
        try:
            set_level(message.level)
        except ValueError as error:
            raise UserError(str(error)) from error
        log.info("log level set to %s", message.level)
        return protobuf.Empty()

    async def quit(self, message: protobuf.Empty) -> protobuf.Empty:
        self._supervisor.request_stop_after_reply("quit requested by the CLI")
        return protobuf.Empty()
