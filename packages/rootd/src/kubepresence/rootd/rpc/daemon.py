"""The Daemon service the user daemon talks to."""

from __future__ import annotations

import logging

from kubepresence.protocol import version_of
from kubepresence.protocol.errors import UserError
from kubepresence.protocol.gen import common, daemon
from kubepresence.protocol.gen.google import protobuf
from kubepresence.protocol.lifecycle import Supervisor
from kubepresence.protocol.logs import set_level

log = logging.getLogger(__name__)


class DaemonService(daemon.DaemonBase):
    def __init__(self, supervisor: Supervisor) -> None:
        self._supervisor = supervisor

    async def version(self, message: protobuf.Empty) -> common.VersionInfo:
        return common.VersionInfo(name="rootd", version=version_of("kubepresence-rootd"))

    async def status(self, message: protobuf.Empty) -> daemon.DaemonStatus:
        return daemon.DaemonStatus(connected=False)

    async def set_log_level(self, message: common.LogLevelRequest) -> protobuf.Empty:
        try:
            set_level(message.level)
        except ValueError as error:
            raise UserError(str(error)) from error
        return protobuf.Empty()

    async def quit(self, message: protobuf.Empty) -> protobuf.Empty:
        self._supervisor.request_stop_after_reply("quit requested by userd")
        return protobuf.Empty()
