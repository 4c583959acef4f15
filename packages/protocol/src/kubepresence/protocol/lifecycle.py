"""Process lifecycle: one uvloop event loop, one task group that owns every task.

A component's entry point is an `async def main(supervisor)`: it starts its servers and
long-lived tasks with `supervisor.spawn(...)`, waits for `supervisor.stopping`, then shuts
down in order (close servers, depart sessions) and returns. The supervisor

- sets `stopping` on the first SIGTERM/SIGINT (or `request_stop()`, e.g. a Quit RPC),
- gives `main` `grace` seconds to return, then logs the tasks that are still running and
  cancels them,
- cancels every spawned task once `main` has returned,
- exits the process at once on a second signal.

A task that fails takes the whole group down (asyncio.TaskGroup semantics): a daemon with
a dead part is worse than a daemon that exits and is restarted.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import uvloop

from kubepresence.protocol import version_of
from kubepresence.protocol.allocator import tune_allocator
from kubepresence.protocol.logs import LEVELS, setup_logging

log = logging.getLogger(__name__)

EXIT_NOW_CODE = 130
REPLY_FLUSH_DELAY = 0.2


class Supervisor:
    """Owner of a process's task group."""

    def __init__(self, group: asyncio.TaskGroup) -> None:
        self._group = group
        self._tasks: set[asyncio.Task[Any]] = set()
        self.stopping = asyncio.Event()
        self.stop_reason = ""
        self._signals = 0

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Start a long-lived task, owned by the group and named for shutdown logs."""
        task = self._group.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def request_stop(self, reason: str) -> None:
        if not self.stopping.is_set():
            log.info("stopping: %s", reason)
            self.stop_reason = reason
            self.stopping.set()

    def request_stop_after_reply(self, reason: str) -> None:
        """Stop once the RPC that asks for it has sent its reply.

        Closing the server cancels running calls, so stopping at once would drop the
        answer to a Quit; a short delay lets grpclib flush it first.
        """
        asyncio.get_running_loop().call_later(REPLY_FLUSH_DELAY, self.request_stop, reason)

    def running_tasks(self) -> list[str]:
        return sorted(t.get_name() for t in self._tasks if not t.done())

    def _on_signal(self, signum: int) -> None:
        self._signals += 1
        name = signal.Signals(signum).name
        if self._signals == 1:
            self.request_stop(f"received {name}")
        else:
            log.warning("received %s again: exiting now", name)
            logging.shutdown()
            os._exit(EXIT_NOW_CODE)

    async def _cancel_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()


async def supervise(
    main: Callable[[Supervisor], Awaitable[None]],
    *,
    grace: float = 5.0,
    handle_signals: bool = True,
) -> None:
    """Run `main` under a supervisor until it returns (see the module docstring)."""
    loop = asyncio.get_running_loop()
    async with asyncio.TaskGroup() as group:
        supervisor = Supervisor(group)
        if handle_signals:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, supervisor._on_signal, signum)
        try:
            main_task = group.create_task(_run_main(main, supervisor), name="main")
            stop_task = group.create_task(supervisor.stopping.wait(), name="stop-wait")
            await asyncio.wait({main_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
            if not main_task.done():
                done, _ = await asyncio.wait({main_task}, timeout=grace)
                if not done:
                    log.warning(
                        "shutdown took longer than %.1f s; cancelling: %s",
                        grace,
                        ", ".join(["main", *supervisor.running_tasks()]),
                    )
                    main_task.cancel()
            stop_task.cancel()
            await supervisor._cancel_all()
        finally:
            if handle_signals:
                for signum in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(signum)


async def _run_main(main: Callable[[Supervisor], Awaitable[None]], sup: Supervisor) -> None:
    await main(sup)
    # main returned: whatever it spawned has no owner any more.
    sup.request_stop(sup.stop_reason or "main returned")


def run(main: Callable[[Supervisor], Awaitable[None]], *, grace: float = 5.0) -> int:
    """Entry point of a daemon: run `main` on uvloop; 0 on a clean stop, 1 on a failure."""
    try:
        uvloop.run(supervise(main, grace=grace))
    except Exception:  # an ExceptionGroup from the task group: log it, exit non-zero
        log.exception("stopped by an error")
        return 1
    return 0


def daemon_parser(component: str, distribution: str, description: str) -> argparse.ArgumentParser:
    """The command line every daemon shares: --version and the logging options."""
    parser = argparse.ArgumentParser(prog=f"kubepresence-{component}", description=description)
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {version_of(distribution)}"
    )
    parser.add_argument("--log-level", default="info", choices=LEVELS)
    parser.add_argument("--log-format", default="text", choices=("text", "json"))
    parser.add_argument(
        "--log-file", type=Path, default=None, help="append logs here (default: stdout)"
    )
    return parser


def start_daemon(
    component: str,
    distribution: str,
    args: argparse.Namespace,
    main: Callable[[Supervisor], Awaitable[None]],
) -> int:
    """Set up logging from the shared options and run `main` until it stops."""
    setup_logging(component, level=args.log_level, file=args.log_file, log_format=args.log_format)
    tune_allocator()
    log.info(
        "kubepresence-%s %s starting (pid %d)", component, version_of(distribution), os.getpid()
    )
    code = run(main)
    log.info("kubepresence-%s stopped (exit %d)", component, code)
    return code
