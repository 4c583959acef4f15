"""Malformed packets written straight into kp0 from ws1 (an AF_PACKET socket bound to the
device: nothing can leave through another interface).

Sources are ws1's own address on the path to the Service and destinations the echo
Service, so any answer rootd writes back stays on this machine; the version nibble stays
4 so no byte becomes an address. The packets come from a seeded generator: every run
sends the same ones.

Usage: malformed_flood.py SERVICE_IP PORT COUNT SECONDS. Prints {"sent", "seconds"}.
"""

from __future__ import annotations

import contextlib
import json
import random
import socket
import struct
import sys
import time

ETH_P_IP = 0x0800


def checksum(data: bytes) -> int:
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def main() -> None:
    service, port = sys.argv[1], int(sys.argv[2])
    count, seconds = int(sys.argv[3]), float(sys.argv[4])
    assert service.startswith("10.96."), service
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.connect((service, port))
    source = socket.inet_aton(probe.getsockname()[0])
    destination = socket.inet_aton(service)
    out = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP))
    rng = random.Random(1858)

    def ipv4(protocol: int, payload: bytes, ident: int = 0, flags: int = 0x4000) -> bytes:
        header = bytearray(
            struct.pack(
                "!BBHHHBBH4s4s",
                0x45,
                0,
                20 + len(payload),
                ident,
                flags,
                64,
                protocol,
                0,
                source,
                destination,
            )
        )
        header[10:12] = struct.pack("!H", checksum(bytes(header)))
        return bytes(header) + payload

    def fragment_flood() -> bytes:
        length = rng.choice([0, 1, 8, 16, 512, 1480])
        flags = (0x2000 if rng.random() < 0.8 else 0) | rng.randrange(8192)
        return ipv4(rng.choice([1, 6, 17, 47]), rng.randbytes(length), rng.randrange(65536), flags)

    seeds = [
        ipv4(17, struct.pack("!HHHH", 40000, port, 8 + 64, 0) + rng.randbytes(64)),
        ipv4(6, struct.pack("!HHIIBBHHH", 40001, port, 1, 0, 0x50, 0x02, 65535, 0, 0)),
        ipv4(1, bytes([8, 0, 0, 0, 0, 1, 0, 1]) + b"ping"),
    ]

    def mutate(packet: bytes) -> bytes:
        data = bytearray(packet)
        choice = rng.randrange(6)
        if choice == 0:
            return bytes(data[: rng.randrange(len(data))])  # truncated
        if choice == 1:
            data[2:4] = struct.pack("!H", rng.randrange(65536))  # bad total length
        elif choice == 2:
            data[10] ^= 0xFF  # bad header checksum
        elif choice == 3:
            data[0] = 0x40 | rng.randrange(16)  # odd header length
        elif choice == 4 and len(data) >= 34:
            data[33] = rng.randrange(256)  # odd TCP flags / UDP checksum
            data[32] = rng.randrange(256)
        else:
            for _ in range(rng.randrange(1, 4)):  # flipped bytes, never version or addresses
                index = rng.choice([i for i in range(1, len(data)) if not 12 <= i < 20])
                data[index] = rng.randrange(256)
        return bytes(data)

    started = time.monotonic()
    sent = 0
    while sent < count and time.monotonic() - started < seconds:
        kind = rng.random()
        if kind < 0.5:
            packet = fragment_flood()
        elif kind < 0.95:
            packet = mutate(rng.choice(seeds))
        else:
            packet = bytes([0x45]) + rng.randbytes(rng.randrange(19))
        # A full device queue loses that packet, as on a wire.
        with contextlib.suppress(OSError):
            out.sendto(packet, ("kp0", ETH_P_IP))
        sent += 1
        if sent % 1000 == 0:
            time.sleep(0.02)  # let rootd drain: the point is bad packets, not queue overflow
    print(json.dumps({"sent": sent, "seconds": round(time.monotonic() - started, 1)}))


if __name__ == "__main__":
    main()
