"""A root process that undoes rootd's changes the moment rootd dies (sshuttle's model).

rootd restores resolv.conf (or reverts its systemd-resolved link) itself when it stops,
and the kernel removes the TUN device and its routes with rootd's last file descriptor. A
rootd killed with SIGKILL (or by the OOM killer) restores nothing: the workstation's
lookups would all go to a cluster DNS address nobody serves until the next rootd starts
(resolved forgets a link's settings with the link, but a TUN that outlives rootd keeps
them). So at start-up rootd starts this guardian: it blocks on a pipe whose only write
end rootd holds, and when that read returns end-of-file (rootd is gone, however it went)
it runs the recovery a new rootd runs at start-up (`vif.recover`), then exits. After a
clean stop there is nothing left to recover and it exits at once.

The waiting is done by `/bin/sh` (about 1 MiB resident), which then becomes this module's
Python `main` (`exec`): an idle Python interpreter would hold some 13 MiB for the whole
session to run a few milliseconds of recovery at its end.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

log = logging.getLogger(__name__)

_keep: list[int] = []  # the pipe's write end: open as long as rootd lives
# Ignore SIGINT (as main does), wait for the pipe's end, then run `main` in its place.
# (`read` returns at end-of-file, or at a line nobody writes.)
WAIT_THEN_RECOVER = 'trap "" INT; while read -r _; do :; done; exec "$@"'


def start(*, tun_name: str, state_dir: Path, log_file: Path | None) -> int:
    """Start the guardian of this process; its pid.

    The write end of the pipe is close-on-exec (os.pipe), so the programs rootd runs do not
    hold it: only the end of this process closes it.
    """
    read_end, write_end = os.pipe()
    recovering = [
        sys.executable,
        "-m",
        "kubepresence.rootd.guardian",
        "--fd=0",  # the pipe, as the shell's standard input: at end-of-file already
        f"--rootd={os.getpid()}",
        f"--tun-name={tun_name}",
        f"--state-dir={state_dir}",
    ]
    if log_file is not None:
        recovering.append(f"--log-file={log_file}")
    try:
        process = subprocess.Popen(
            ["/bin/sh", "-c", WAIT_THEN_RECOVER, "kp-guardian", *recovering],
            stdin=read_end,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # no terminal's or process group's signals
        )
    finally:
        os.close(read_end)
    _keep.append(write_end)
    log.info("guardian pid %d restores what this rootd changed if it dies", process.pid)
    return process.pid


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kubepresence-rootd-guardian")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--rootd", type=int, required=True)
    parser.add_argument("--tun-name", required=True)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--log-file", type=Path, default=None)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _set_name(b"kp-guardian")
    if args.log_file is not None:
        logging.basicConfig(
            filename=args.log_file,
            level=logging.INFO,
            format="%(asctime)s %(levelname)-7s rootd-guardian %(name)s: %(message)s",
        )
    while os.read(args.fd, 1):
        pass
    try:
        from kubepresence.rootd.vif import VifSettings, recover

        # rootd may linger a moment as a zombie, which looks alive: name it dead.
        recover(VifSettings(tun_name=args.tun_name, state_dir=args.state_dir), args.rootd)
    except Exception:
        log.exception("recovering after rootd %d failed", args.rootd)
        return 1
    return 0


def _set_name(name: bytes) -> None:
    """The process's name (ps, /proc/PID/comm): tells the guardian from rootd, whose
    command line it shares the start of."""
    try:
        Path("/proc/self/comm").write_bytes(name)
    except OSError:
        return


if __name__ == "__main__":
    sys.exit(main())
