"""The network plane of one server, run by its sandbox spawner (root): bridge, policy, each environment's veth.

Modes (the ``network`` setting): ``internet`` (outbound allowed, as on Lambda without a VPC), ``kindling-only``
(only KINDLING_ADDRESS), ``none`` (no interface: loopback and the Runtime API only). Whatever the mode, an
environment never reaches another environment, the host (its loopback services, Kindling's internal sockets,
its addresses, the bridge's) or 169.254.0.0/16 (instance metadata), only Kindling's API at KINDLING_ADDRESS.
See docs/network.md.
"""

from __future__ import annotations

import os
import shutil
import sys
from typing import Any

from kindling.network import bridge, policy, veth

MODES = ("internet", "kindling-only", "none")


def unavailable() -> str:
    """Why this host cannot give environments a network interface ('' when it can)."""
    if os.geteuid() != 0:
        return "not running as root"
    if shutil.which(policy.NFT) is None:
        return "the nft tool (Debian's package nftables) is not installed"
    return ""


def nameservers(path: str = "/etc/resolv.conf") -> list[str]:
    """The host's nameservers an environment can reach (IPv4, not on loopback or in 169.254.0.0/16: environments
    reach neither)."""
    out = []
    try:
        with open(path) as f:
            for line in f:
                words = line.split()
                if len(words) >= 2 and words[0] == "nameserver" and ":" not in words[1] \
                        and not words[1].startswith(("127.", "169.254.")):
                    out.append(words[1])
    except OSError:
        pass
    return out[:3]


class Plane:
    def __init__(self, instance: str, mode: str, exposed: dict[int, tuple[str, int]]) -> None:
        from pyroute2 import IPRoute

        self.instance = instance
        self.mode = mode
        self.ipr = IPRoute()
        self.home = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        self.index = 0
        self.cursor = 0
        self.bound: dict[int, int] = {}  # host PID of an environment with egress rules → its slot
        self.pids: dict[int, int] = {}  # host PID → slot
        bridge.remove_leftovers(self.ipr, instance)
        bridge.remove(self.ipr, instance)  # whatever part of this instance's plane is left, e.g. tables alone
        if mode == "none":
            return
        self.index, self.block = bridge.create(self.ipr, instance)
        self.gateway = str(self.block[1])
        self.slots = self.block.num_addresses - 3  # not the network, the gateway or the broadcast address
        try:
            policy.install(instance, bridge.bridge_name(instance), bridge.veth_name(instance, 0)[:-1] + "*", self.block,
                           [(bridge.veth_name(instance, s), s, self.address(s)) for s in range(self.slots)],
                           mode, exposed)
        except BaseException:
            self.close()
            raise

    def address(self, slot: int) -> str:
        return str(self.block[2 + slot])

    def _free_slot(self) -> int:
        for i in range(self.slots):
            slot = (self.cursor + i) % self.slots  # round robin: an address is reused as late as possible
            if not os.path.exists(f"/sys/class/net/{bridge.veth_name(self.instance, slot)}"):
                self.cursor = slot + 1
                return slot
        raise OSError("every network slot of this server is in use")

    def attach(self, pid: int) -> str:
        """Give the environment whose first process is ``pid`` its network (off the cold-start path); returns
        the namespace configured, as /proc/PID/ns/net names it (every task of the environment must be in it)."""
        inside = veth.Inside(pid, self.home)
        try:
            net = f"net:[{os.fstat(inside.fd).st_ino}]"
            veth.runtime_api_address(inside)
            if self.mode == "none":
                return net
            slot = self._free_slot()
            for stale in [p for p, s in self.pids.items() if s == slot]:  # an exit not seen (a discarded spare)
                self.gone(stale)
            veth.attach(self.ipr, inside, self.index, bridge.veth_name(self.instance, slot), policy.mac(slot),
                        self.address(slot), self.block.prefixlen, self.gateway)
            self.pids[pid] = slot
            return net
        finally:
            inside.close()

    def restrict(self, pid: int, rules: list[dict[str, Any]] | None) -> None:
        """Hold the environment to its function's egress rules (None: the server's default)."""
        slot = self.pids.get(pid)
        if rules is None or slot is None:
            return
        policy.run(policy.bind_commands(self.instance, self.address(slot), rules))
        self.bound[pid] = slot

    def gone(self, pid: int) -> None:
        """The environment has exited (its veth goes with its namespace)."""
        self.pids.pop(pid, None)
        slot = self.bound.pop(pid, None)
        if slot is not None and slot not in self.bound.values():
            try:
                policy.run(policy.bind_commands(self.instance, self.address(slot), None))
            except OSError as exc:
                print(f"kindling spawner: {exc}", file=sys.stderr)

    def close(self) -> None:
        if self.home < 0:
            return
        bridge.remove(self.ipr, self.instance)
        self.ipr.close()
        os.close(self.home)
        self.home = -1
