"""Host networking for the cluster: the nft guard, the bridges, the workstation namespace.

Safety model (notes §9): the guard table goes in before anything turns on ip_forward and is
deleted last; it drops every packet that would leave eth0 with a lab address or come from the
pod or lab bridges, and lets the lab LAN reach only the API server port. Pods get no default
route (CNI config), the service CIDR routes into a port-less bridge, and the workstation
namespace has no default route: it reaches 10.77.0.1:6443 and nothing else.
"""

from __future__ import annotations

import json
import logging
import shlex
from pathlib import Path

from . import layout, mounts
from .commands import run

log = logging.getLogger(__name__)

_LAB = f"{layout.POD_CIDR}, {layout.SERVICE_CIDR}, {layout.LAN_CIDR}"
_BRIDGES = f'"{layout.POD_BRIDGE}", "{layout.LAN_BRIDGE}"'
GUARD_RULES = f"""\
table {layout.GUARD_FAMILY} {layout.GUARD_TABLE} {{
  set lab4 {{ type ipv4_addr; flags interval; elements = {{ {_LAB} }} }}
  chain guard_forward {{
    type filter hook forward priority raw; policy accept;
    iifname {{ {_BRIDGES} }} oifname "{layout.HOST_UPLINK}" counter drop
    iifname "{layout.LAN_BRIDGE}" counter drop
    oifname "{layout.LAN_BRIDGE}" counter drop
    oifname "{layout.HOST_UPLINK}" ip saddr @lab4 counter drop
    oifname "{layout.HOST_UPLINK}" ip daddr @lab4 counter drop
    iifname "{layout.HOST_UPLINK}" ip daddr @lab4 counter drop
  }}
  chain guard_postrouting {{
    type filter hook postrouting priority 300; policy accept;
    oifname "{layout.HOST_UPLINK}" ct original ip saddr @lab4 counter drop
    oifname "{layout.HOST_UPLINK}" ip daddr @lab4 counter drop
  }}
  chain lan_input {{
    type filter hook input priority 0; policy accept;
    iifname "{layout.LAN_BRIDGE}" ct state established,related accept
    iifname "{layout.LAN_BRIDGE}" tcp dport {layout.API_PORT} accept
    iifname "{layout.LAN_BRIDGE}" icmp type echo-request accept
    iifname "{layout.LAN_BRIDGE}" counter drop
  }}
}}
"""
# Chains whose drops would mean a packet tried to leave the machine or cross the lab LAN.
LEAK_CHAINS = ("guard_forward", "guard_postrouting")

# Sysctls bring-up changes (directly, or kubelet's setupKernelTunables, or the CNI bridge).
TOUCHED_SYSCTLS = (
    "net.ipv4.ip_forward",
    "kernel.panic",
    "kernel.panic_on_oops",
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
    "net.bridge.bridge-nf-call-iptables",
    "net.bridge.bridge-nf-call-ip6tables",
)


# --- sysctl ------------------------------------------------------------------------------


def _sysctl_path(name: str) -> Path:
    return Path("/proc/sys") / name.replace(".", "/")


def read_sysctl(name: str) -> str | None:
    try:
        return _sysctl_path(name).read_text().strip()
    except FileNotFoundError:
        return None


def write_sysctl(name: str, value: str) -> None:
    _sysctl_path(name).write_text(value + "\n")


def sysctl_snapshot() -> dict[str, str]:
    return {n: v for n in TOUCHED_SYSCTLS if (v := read_sysctl(n)) is not None}


# --- nft guard ---------------------------------------------------------------------------


def guard_present() -> bool:
    return (
        run(
            ["nft", "list", "table", layout.GUARD_FAMILY, layout.GUARD_TABLE], check=False
        ).returncode
        == 0
    )


def install_guard() -> None:
    rules = layout.CONFIG / "guard.nft"
    rules.parent.mkdir(parents=True, exist_ok=True)
    rules.write_text(GUARD_RULES)
    run(["nft", "-c", "-f", rules])
    if guard_present():
        run(["nft", "delete", "table", layout.GUARD_FAMILY, layout.GUARD_TABLE])
    run(["nft", "-f", rules])
    log.info("guard table %s %s installed", layout.GUARD_FAMILY, layout.GUARD_TABLE)


def remove_guard() -> None:
    if guard_present():
        run(["nft", "delete", "table", layout.GUARD_FAMILY, layout.GUARD_TABLE])


def guard_counters() -> dict[str, int]:
    """Packets counted by each drop rule of the guard, keyed 'chain#n: rule text'."""
    out = run(["nft", "-j", "list", "table", layout.GUARD_FAMILY, layout.GUARD_TABLE]).stdout
    counters: dict[str, int] = {}
    index: dict[str, int] = {}
    for item in json.loads(out)["nftables"]:
        rule = item.get("rule")
        if not rule:
            continue
        exprs = rule.get("expr", [])
        counter = next((e["counter"] for e in exprs if "counter" in e), None)
        if counter is None or not any("drop" in e for e in exprs):
            continue
        chain = rule["chain"]
        index[chain] = index.get(chain, 0) + 1
        counters[f"{chain}#{index[chain]}"] = int(counter["packets"])
    return counters


def leak_drops(counters: dict[str, int]) -> dict[str, int]:
    """Non-zero drop counters in the chains that catch traffic trying to leave the machine."""
    return {k: v for k, v in counters.items() if v and k.split("#")[0] in LEAK_CHAINS}


# --- links -------------------------------------------------------------------------------


def link_exists(name: str, netns: str | None = None) -> bool:
    prefix = ["ip", "-n", netns] if netns else ["ip"]
    return run([*prefix, "link", "show", "dev", name], check=False).returncode == 0


def create_bridges() -> None:
    """The lab LAN bridge (node IP) and the port-less service sink bridge."""
    if not link_exists(layout.LAN_BRIDGE):
        run(["ip", "link", "add", layout.LAN_BRIDGE, "type", "bridge"])
    run(["ip", "addr", "replace", f"{layout.NODE_IP}/24", "dev", layout.LAN_BRIDGE])
    run(["ip", "link", "set", layout.LAN_BRIDGE, "up"])
    if not link_exists(layout.SERVICE_SINK):
        run(["ip", "link", "add", layout.SERVICE_SINK, "type", "bridge"])
    run(["ip", "link", "set", layout.SERVICE_SINK, "up"])
    # ClusterIP traffic kube-proxy did not DNAT dies here instead of following the default route.
    run(["ip", "route", "replace", layout.SERVICE_CIDR, "dev", layout.SERVICE_SINK])


def enable_forwarding() -> None:
    if not guard_present():
        raise RuntimeError("refusing to enable ip_forward without the guard table")
    write_sysctl("net.ipv4.ip_forward", "1")


def delete_link(name: str) -> None:
    if link_exists(name):
        run(["ip", "link", "del", name])


# --- workstation namespace ---------------------------------------------------------------


def netns_list() -> list[str]:
    out = run(["ip", "-j", "netns", "list"], check=False).stdout.strip()
    return [entry["name"] for entry in json.loads(out)] if out else []


def prepare_netns_dir() -> None:
    """Make /run/netns a shared mount point before containerd creates the first pod.

    Otherwise the first `ip netns add` (the workstation's) bind-mounts /run/netns over
    itself after the CoreDNS pod's namespace was mounted on the plain directory: that mount
    is hidden from then on, containerd's teardown finds an empty file, and `down` can
    neither unmount nor remove it (issue 21).
    """
    mounts.make_shared_mount_point(layout.NETNS_DIR)


def _nsfs_mounts(names: set[str]) -> list[str]:
    return [
        p
        for p in mounts.mount_points()
        if Path(p).parent == layout.NETNS_DIR and Path(p).name in names
    ]


def remove_namespaces(names: set[str]) -> None:
    """Delete these named network namespaces, including ones an earlier run left shadowed.

    `ip netns del` handles the normal case. A namespace mounted on /run/netns/NAME before
    /run/netns became a mount point (a run from before prepare_netns_dir, or another tool's
    order of events) sits under that bind mount: unreachable until the bind goes. Then,
    if nothing but ours is in the directory, the bind is unmounted, the uncovered mounts
    with it, the files removed, and the mount point made again if it was one before.
    """
    for name in sorted(names & set(netns_list())):
        run(["ip", "netns", "del", name], check=False)
    if not _nsfs_mounts(names):
        _remove_files(names)
        return
    entries = {p.name for p in layout.NETNS_DIR.iterdir()} if layout.NETNS_DIR.is_dir() else set()
    foreign = entries - names
    if foreign:
        log.warning(
            "namespaces %s are shadowed under %s, which also holds %s: left alone",
            ", ".join(sorted(entries & names)),
            layout.NETNS_DIR,
            ", ".join(sorted(foreign)),
        )
        return
    was_mount_point = mounts.is_mount_point(layout.NETNS_DIR)
    log.info("removing shadowed namespace mounts under %s", layout.NETNS_DIR)
    for _ in range(5):  # bounded: each round uncovers one layer of stacked mounts
        found = mounts.mounts_under(layout.NETNS_DIR)
        if not found:
            break
        for point in reversed(found):  # newest first: the bind before what it covers
            try:
                mounts.unmount(point)
            except OSError as exc:
                log.debug("not yet: %s", exc)
    _remove_files(names)
    if was_mount_point:
        prepare_netns_dir()
    left = _nsfs_mounts(names)
    if left:
        log.warning("could not remove namespace mounts %s", ", ".join(left))


def _remove_files(names: set[str]) -> None:
    for name in names:
        path = layout.NETNS_DIR / name
        if path.exists() and not mounts.is_mount_point(path):
            path.unlink()


def create_workstation() -> None:
    ns = layout.WORKSTATION_NETNS
    etc = layout.WORKSTATION_NETNS_ETC
    etc.mkdir(parents=True, exist_ok=True)
    # `ip netns exec` bind-mounts this over /etc/resolv.conf: no resolver the namespace could
    # reach, so names fail fast instead of leaking a query (kubepresence adds cluster DNS).
    (etc / "resolv.conf").write_text(
        "# kubepresence workstation: no resolver outside the tunnel\nnameserver 127.0.0.1\n"
    )
    if ns not in netns_list():
        run(["ip", "netns", "add", ns])
    if not link_exists(layout.WORKSTATION_HOST_VETH):
        run(
            [
                "ip",
                "link",
                "add",
                layout.WORKSTATION_HOST_VETH,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                ns,
            ]
        )
    run(["ip", "link", "set", layout.WORKSTATION_HOST_VETH, "master", layout.LAN_BRIDGE, "up"])
    run(["ip", "-n", ns, "addr", "replace", f"{layout.WORKSTATION_IP}/24", "dev", "eth0"])
    run(["ip", "-n", ns, "link", "set", "eth0", "up"])
    run(["ip", "-n", ns, "link", "set", "lo", "up"])


# --- iptables leftovers ------------------------------------------------------------------

OWN_CHAIN_PREFIXES = ("KUBE-", "CNI-")


def own_iptables_chains(family: str = "ip") -> dict[str, list[str]]:
    """Chains named KUBE-*/CNI-* (kubelet canaries, kube-proxy, portmap), by table."""
    save = "iptables-save" if family == "ip" else "ip6tables-save"
    out = run([save], check=False).stdout
    chains: dict[str, list[str]] = {}
    table = ""
    for line in out.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(":") and line[1:].startswith(OWN_CHAIN_PREFIXES):
            chains.setdefault(table, []).append(line[1:].split()[0])
    return chains


def remove_iptables_leftovers() -> None:
    """Delete rules jumping to our chains, then the chains (after kube-proxy --cleanup)."""
    for family, binary in (("ip", "iptables"), ("ip6", "ip6tables")):
        save = "iptables-save" if family == "ip" else "ip6tables-save"
        for table, chains in own_iptables_chains(family).items():
            own = set(chains)
            # Remove jumps from built-in chains into ours, e.g. "-A INPUT -j KUBE-FIREWALL".
            out = run([save, "-t", table], check=False).stdout
            for line in out.splitlines():
                words = shlex.split(line)
                if (
                    len(words) > 2
                    and words[0] == "-A"
                    and words[1] not in own
                    and any(w in own for w in words)
                ):
                    run([binary, "-t", table, "-D", *words[1:]], check=False)
            for chain in chains:
                run([binary, "-t", table, "-F", chain], check=False)
            for chain in chains:
                run([binary, "-t", table, "-X", chain], check=False)


def nft_tables() -> list[str]:
    out = run(["nft", "-j", "list", "tables"], check=False).stdout
    if not out.strip():
        return []
    return [
        f"{i['table']['family']} {i['table']['name']}"
        for i in json.loads(out)["nftables"]
        if "table" in i
    ]


def remove_nft_tables(keep: list[str]) -> None:
    """Delete tables iptables-nft and kube-proxy created (absent before `up`), guard excluded."""
    guard = f"{layout.GUARD_FAMILY} {layout.GUARD_TABLE}"
    for table in nft_tables():
        if table != guard and table not in keep:
            family, name = table.split()
            if name in ("filter", "nat", "mangle", "raw", "security", "kube-proxy"):
                run(["nft", "delete", "table", family, name], check=False)
