"""kubepresence-agent init container: redirect numeric app ports to the agent.

    python3 -m kubepresence.agent.net.redirecting APP_PORT:AGENT_PORT ...

Adds one iptables nat PREROUTING REDIRECT rule per argument (unless it is there already)
in the pod's network namespace. Needs NET_ADMIN; the webhook's init container has it.
"""

from __future__ import annotations

import subprocess
import sys

from kubepresence.agent.core.redirects import BadRedirectError, parse

TIMEOUT = 20


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print("usage: redirecting APP_PORT:AGENT_PORT ...", file=sys.stderr)
        return 2
    try:
        redirects = [parse(arg) for arg in args]
    except BadRedirectError as error:
        print(f"redirecting: {error}", file=sys.stderr)
        return 2
    for redirect in redirects:
        try:
            present = (
                subprocess.run(
                    redirect.check_argv(), capture_output=True, timeout=TIMEOUT, check=False
                ).returncode
                == 0
            )
            if present:
                print(f"tcp port {redirect.app_port} → {redirect.agent_port}: already there")
                continue
            done = subprocess.run(
                redirect.append_argv(), capture_output=True, text=True, timeout=TIMEOUT
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            print(f"redirecting: cannot run iptables: {error}", file=sys.stderr)
            return 1
        if done.returncode != 0:
            said = (done.stderr or done.stdout).strip().splitlines()
            print(
                f"redirecting: iptables failed: {said[-1] if said else done.returncode}",
                file=sys.stderr,
            )
            return 1
        print(f"tcp port {redirect.app_port} → {redirect.agent_port}: redirected")
    return 0


if __name__ == "__main__":
    sys.exit(main())
