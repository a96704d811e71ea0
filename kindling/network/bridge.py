"""Each server's own Linux bridge: its name, its address range, and what a dead server left behind.

A server (its sandbox spawner, which lives exactly as long as its environments) makes one bridge named
after its instance id, with a /22 from 169.254.0.0/16 that no interface or route of the host uses yet, so
several Kindling servers on one host never collide. The choice is made under a host-wide lock. The bridge's
alias names its owner (the spawner's PID and start time): a bridge whose owner is gone is a leftover, removed
at the next start of any Kindling server, with its nftables tables (kindling.network.policy).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import os
from collections.abc import Iterator

from pyroute2 import IPRoute

from kindling.network import policy

LINK_LOCAL = ipaddress.IPv4Network("169.254.0.0/16")
PREFIX = 22  # 1,021 environments per server
NEVER = (ipaddress.ip_network("169.254.0.0/24"), ipaddress.ip_network("169.254.100.0/24"),  # 100: the fixed
         ipaddress.ip_network("169.254.169.0/24"), ipaddress.ip_network("169.254.255.0/24"))  # addresses, 169: IMDS
BLOCKS: list[ipaddress.IPv4Network] = [b for b in LINK_LOCAL.subnets(new_prefix=PREFIX)
                                       if not any(b.overlaps(n) for n in NEVER)]
LOCK = "/run/kindling-network.lock"
ALIAS = "kindling spawner "


def bridge_name(instance: str) -> str:
    return f"kd{instance}"[:15]


def veth_name(instance: str, slot: int) -> str:
    """The host end of an environment's veth (<= 15 characters)."""
    return f"k{instance[:8]}-{slot}"


def _start_time(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def owner_alias() -> str:
    return f"{ALIAS}{os.getpid()} {_start_time(os.getpid())}"


def _owner_alive(alias: str) -> bool:
    try:
        pid, started = alias[len(ALIAS):].split()
        return _start_time(int(pid)) == started
    except ValueError:
        return False


@contextlib.contextmanager
def host_lock() -> Iterator[None]:
    fd = os.open(LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _used(ipr: IPRoute) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """Every IPv4 network the host has an address or a route in."""
    out = [ipaddress.ip_interface(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}").network
           for a in ipr.get_addr(family=2)]
    for r in ipr.get_routes(family=2, table=254) + ipr.get_routes(family=2, table=255):
        dst = r.get_attr("RTA_DST")
        if dst:
            out.append(ipaddress.ip_network(f"{dst}/{r['dst_len']}", strict=False))
    return [n for n in out if n.overlaps(LINK_LOCAL) and n.prefixlen > 0]


def choose_block(ipr: IPRoute, instance: str) -> ipaddress.IPv4Network:
    used = _used(ipr)
    start = int(hashlib.sha256(instance.encode()).hexdigest(), 16) % len(BLOCKS)
    for i in range(len(BLOCKS)):
        block = BLOCKS[(start + i) % len(BLOCKS)]
        if not any(block.overlaps(n) for n in used):
            return block
    raise OSError("no free /22 left in 169.254.0.0/16 for this server's bridge")


def remove_leftovers(ipr: IPRoute, instance: str) -> None:
    """Remove this instance's bridge and tables (a server on the same data dir that was killed), and those of
    any server whose spawner is gone."""
    for link in ipr.get_links():
        name = link.get_attr("IFLA_IFNAME") or ""
        if link.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") != "bridge" or not name.startswith("kd"):
            continue
        alias = link.get_attr("IFLA_IFALIAS") or ""
        if not alias.startswith(ALIAS):
            continue  # not one of ours
        if name == bridge_name(instance) or not _owner_alive(alias):
            remove(ipr, name[2:])


def remove(ipr: IPRoute, instance: str) -> None:
    """Remove the bridge, host veth ends and nftables tables of ``instance`` (whatever of them exists)."""
    policy.remove(instance)
    prefix = veth_name(instance, 0)[:-1]
    for link in ipr.get_links():
        name = link.get_attr("IFLA_IFNAME") or ""
        if name == bridge_name(instance) or name.startswith(prefix):
            with contextlib.suppress(Exception):
                ipr.link("del", index=link["index"])


def _sysctl(path: str, value: str) -> None:
    with open("/proc/sys/net/" + path, "w") as f:
        f.write(value)


def create(ipr: IPRoute, instance: str) -> tuple[int, ipaddress.IPv4Network]:
    """Make the bridge with its gateway address (the range's first); returns its index and range."""
    name = bridge_name(instance)
    with host_lock():
        block = choose_block(ipr, instance)
        ipr.link("add", ifname=name, kind="bridge")
        index = ipr.link_lookup(ifname=name)[0]
        ipr.link("set", index=index, ifalias=owner_alias())
        ipr.addr("add", index=index, address=str(block[1]), prefixlen=PREFIX)  # others see the range as used
    _sysctl(f"ipv6/conf/{name}/disable_ipv6", "1")  # no link-local IPv6 address for environments to reach
    ipr.link("set", index=index, state="up")
    _sysctl(f"ipv4/conf/{name}/route_localnet", "1")  # Kindling's API at 169.254.100.2 is DNATed to 127.0.0.1
    _sysctl("ipv4/ip_forward", "1")  # host-wide, as every container runtime does; never turned off again
    return index, block
