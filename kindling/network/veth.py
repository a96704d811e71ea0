"""One environment's network interface, made by the trusted spawner from outside the environment.

The host end goes on the server's bridge; the peer is created straight into the environment's network
namespace as ``eth0``, with the slot's address and MAC and a default route via the bridge; the environment's
loopback also gets 169.254.100.1/32, where its Runtime API listens (the listener was bound before, with
IP_FREEBIND). The configuration inside is done through a netlink socket opened after setns(2) into the
environment's namespace (the spawner is single-threaded; it returns to its own namespace at once).
None of this is done by the environment, and none of it is trusted afterwards (kindling.network.policy).
A slot is free again when its host end is gone: the kernel deletes the pair with the namespace.
"""

from __future__ import annotations

import ctypes
import os

from pyroute2 import IPRoute

from kindling.network import RUNTIME_API_ADDRESS

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


class Inside:
    """A netlink socket in another process's network namespace (opened there, used from here)."""

    def __init__(self, pid: int, home: int) -> None:
        self.fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            setns(self.fd)
            try:
                self.ipr = IPRoute()
            finally:
                setns(home)
        except BaseException:
            os.close(self.fd)
            raise

    def close(self) -> None:
        self.ipr.close()
        os.close(self.fd)


def runtime_api_address(inside: Inside) -> None:
    inside.ipr.addr("add", index=1, address=RUNTIME_API_ADDRESS, prefixlen=32)  # index 1: lo, in every namespace


def attach(ipr: IPRoute, inside: Inside, bridge: int, host_name: str, mac: str, address: str, prefix: int,
           gateway: str) -> None:
    """Create the pair and configure both ends."""
    ipr.link("add", ifname=host_name, kind="veth", peer={"ifname": "eth0", "net_ns_fd": inside.fd, "address": mac})
    index = ipr.link_lookup(ifname=host_name)[0]
    with open(f"/proc/sys/net/ipv6/conf/{host_name}/disable_ipv6", "w") as f:
        f.write("1")  # the host end has no address at all
    ipr.link("set", index=index, master=bridge, state="up")
    eth0 = inside.ipr.link_lookup(ifname="eth0")[0]
    inside.ipr.addr("add", index=eth0, address=address, prefixlen=prefix)
    inside.ipr.link("set", index=eth0, state="up")
    inside.ipr.route("add", dst="0.0.0.0/0", gateway=gateway)
