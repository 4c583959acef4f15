"""The iptables rules the init container adds for numeric port takeover.

`APP:AGENT` on the command line becomes a nat PREROUTING rule that redirects inbound TCP
for the app's port to the agent's port. Inbound only: the agent's own connections to the
app on 127.0.0.1 go through OUTPUT and are not redirected. The init container checks
(`-C`) before it appends (`-A`), so running it twice adds nothing.
"""

from __future__ import annotations

from dataclasses import dataclass


class BadRedirectError(ValueError):
    """A command-line redirect is not `APP:AGENT` with two port numbers."""


@dataclass(frozen=True)
class Redirect:
    app_port: int
    agent_port: int

    def rule(self) -> list[str]:
        return [
            "PREROUTING",
            "-p",
            "tcp",
            "--dport",
            str(self.app_port),
            "-j",
            "REDIRECT",
            "--to-ports",
            str(self.agent_port),
        ]

    def check_argv(self) -> list[str]:
        return ["iptables", "-w", "5", "-t", "nat", "-C", *self.rule()]

    def append_argv(self) -> list[str]:
        return ["iptables", "-w", "5", "-t", "nat", "-A", *self.rule()]


def parse(text: str) -> Redirect:
    app, sep, agent = text.partition(":")
    ports = [app, agent]
    if not sep or not all(p.isdigit() and 0 < int(p) < 65536 for p in ports):
        raise BadRedirectError(f"{text!r} is not APP_PORT:AGENT_PORT (two numbers, 1-65535)")
    if app == agent:
        raise BadRedirectError(f"{text!r} redirects a port to itself")
    return Redirect(int(app), int(agent))
