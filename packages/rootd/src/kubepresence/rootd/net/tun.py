"""The TUN device: open it with plain ioctls, configure it with `ip`, read and write packets.

The device is opened with IFF_TUN | IFF_NO_PI | IFF_VNET_HDR, so every packet starts with a
10-byte virtio_net_hdr, and TUNSETOFFLOAD announces checksum offload (and TSO when asked):
the kernel then hands over packets whose checksums are only partial and TCP super-segments
of up to 64 KiB, and accepts the same from us. That is the 20-30x lever measured in
notes/python-stack.md §9. The descriptor is non-blocking; `read_batch` drains what is
queued, bounded by a packet count so one busy flow cannot starve the event loop.

Links, addresses and routes are set with the `ip` command (synchronously: call these from a
thread). pyroute2's async API fails under uvloop; `ip` needs no dependency and, with
`netns`, works inside a named network namespace.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import logging
import os
import struct
import subprocess
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from kubepresence.rootd.core.packets import VNET_HEADER_SIZE, Chunk

log = logging.getLogger(__name__)

TUNSETIFF = 0x400454CA
TUNSETOFFLOAD = 0x400454D0
TUNGETVNETHDRSZ = 0x800454D7
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
_CLONE_NEWNET = 0x40000000
_IFNAMSIZ = 16
# A GSO read carries at most 64 KiB of IP packet, plus the vnet header.
READ_SIZE = VNET_HEADER_SIZE + 65536
_IP_TIMEOUT = 10.0


class TunError(OSError):
    """The TUN device could not be opened or configured."""


@dataclass(frozen=True, slots=True)
class Offload:
    """What the device was opened with: the endpoint's output framing follows from it."""

    vnet_header: bool
    checksum: bool
    tso: bool


class TunDevice:
    """An open TUN device. Packets in and out include the vnet header when `offload` says so."""

    def __init__(self, fd: int, name: str, offload: Offload) -> None:
        self.fd = fd
        self.name = name
        self.offload = offload
        self.read_errors = 0
        self.write_errors = 0

    @classmethod
    def open(cls, name: str, vnet_header: bool = True, tso: bool = True) -> TunDevice:
        """Create (or attach to) TUN device `name` in the calling thread's network namespace."""
        if len(name.encode()) >= _IFNAMSIZ:
            raise TunError(errno.EINVAL, f"interface name {name!r} is too long")
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            flags = IFF_TUN | IFF_NO_PI | (IFF_VNET_HDR if vnet_header else 0)
            request = struct.pack("16sH22x", name.encode(), flags)
            answer = fcntl.ioctl(fd, TUNSETIFF, request)
            actual = answer[:_IFNAMSIZ].rstrip(b"\0").decode()
            checksum = tso_enabled = False
            if vnet_header:
                size = struct.unpack("i", fcntl.ioctl(fd, TUNGETVNETHDRSZ, b"\0" * 4))[0]
                if size != VNET_HEADER_SIZE:
                    raise TunError(errno.EINVAL, f"vnet header size {size}, expected 10")
                features = TUN_F_CSUM | (TUN_F_TSO4 | TUN_F_TSO6 if tso else 0)
                fcntl.ioctl(fd, TUNSETOFFLOAD, features)
                checksum, tso_enabled = True, tso
        except OSError:
            os.close(fd)
            raise
        log.info(
            "opened TUN %s (vnet header %s, checksum offload %s, TSO %s)",
            actual,
            vnet_header,
            checksum,
            tso_enabled,
        )
        return cls(fd, actual, Offload(vnet_header, checksum, tso_enabled))

    @classmethod
    def open_in_namespace(cls, netns: str, name: str, **options: bool) -> TunDevice:
        """Create the device inside the named network namespace (`ip netns add` made it).

        setns() changes only the calling thread, so a short-lived thread enters the
        namespace and creates the device there; the descriptor then works from any thread.
        """
        result: list[TunDevice | OSError] = []

        def create() -> None:
            try:
                with open(Path("/run/netns") / netns, "rb") as namespace:
                    _setns(namespace.fileno(), _CLONE_NEWNET)
                result.append(cls.open(name, **options))
            except OSError as error:  # handed to the caller's thread
                result.append(error)

        thread = threading.Thread(target=create, name=f"tun-in-{netns}")
        thread.start()
        thread.join()
        if not result:
            raise TunError(errno.EIO, f"creating {name} in {netns} failed (see the log)")
        outcome = result[0]
        if isinstance(outcome, OSError):
            raise outcome
        return outcome

    def read_batch(self, limit: int) -> list[bytes]:
        """Up to `limit` queued packets; empty when nothing is waiting.

        TunError when the device is gone or broken (readable but failing), so that the
        owner stops instead of spinning on a descriptor that stays readable.
        """
        packets: list[bytes] = []
        fd = self.fd
        read = os.read
        for _ in range(limit):
            try:
                packet = read(fd, READ_SIZE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as error:
                self.read_errors += 1
                if packets:
                    break  # hand over what we have; the error comes back on the next call
                raise TunError(error.errno, f"reading {self.name}: {error.strerror}") from error
            if not packet:  # end of file: the device (or a test's socket) is gone
                if packets:
                    break
                raise TunError(errno.EIO, f"reading {self.name}: end of file")
            packets.append(packet)
        return packets

    def write(self, packet: Sequence[Chunk]) -> bool:
        """Write one packet (a list of buffers); False if the kernel refused it.

        A refused packet is dropped like a lost one: TCP retransmits, UDP is unreliable.
        """
        try:
            os.writev(self.fd, packet)
        except OSError as error:
            self.write_errors += 1
            log.debug("TUN write failed: %s", error)
            return False
        return True

    def close(self) -> None:
        """Close the descriptor; the kernel removes the (non-persistent) device with it."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


# Packets the kernel holds for rootd to read. The default 500 overflowed when a thousand
# clients started at once (826 of their ~3,000 DNS questions and SYNs dropped, 5 s glibc
# retries, some lookups failed); the queue only fills while rootd is behind.
TX_QUEUE_LEN = 8192


def _setns(fd: int, kind: int) -> None:
    setns = getattr(os, "setns", None)  # Python 3.12+
    if setns is not None:
        setns(fd, kind)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, kind) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def _ip(netns: str | None, *args: str) -> None:
    command = ["ip", *(("-n", netns) if netns else ()), *args]
    try:
        subprocess.run(command, check=True, capture_output=True, timeout=_IP_TIMEOUT, text=True)
    except subprocess.CalledProcessError as error:
        raise TunError(
            errno.EIO, f"{' '.join(command)}: {error.stderr.strip() or error.returncode}"
        ) from None


def configure_link(
    name: str,
    mtu: int,
    addresses: Iterable[str],
    routes: Iterable[str],
    netns: str | None = None,
) -> None:
    """Bring the device up with `mtu`, add host addresses (CIDR) and routes through it.

    Blocking (runs `ip`): call it in a thread from async code.
    """
    _ip(netns, "link", "set", "dev", name, "mtu", str(mtu), "txqueuelen", str(TX_QUEUE_LEN), "up")
    for address in addresses:
        _ip(netns, "address", "add", address, "dev", name)
    for route in routes:
        _ip(netns, "route", "add", route, "dev", name)


def add_first_address(name: str, candidates: Iterable[str], netns: str | None = None) -> str:
    """Add the first of `candidates` (CIDRs) that the kernel takes to `name`; which one.

    TunError when none was taken (IPv6 disabled and the IPv4 one taken elsewhere, say)."""
    failures: list[str] = []
    for address in candidates:
        extra = ("nodad",) if ":" in address else ()  # no tentative state: usable at once
        try:
            _ip(netns, "address", "add", address, "dev", name, *extra)
        except TunError as error:
            failures.append(str(error))
            continue
        return address
    raise TunError(errno.EADDRNOTAVAIL, "; ".join(failures) or "no address to add")
