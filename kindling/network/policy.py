"""The network policy of one server's environments, in nftables (``nft -j -f -``: its JSON API).

Two tables per server, named after its instance, removed with its bridge:

* ``bridge kindling-<instance>``: layer 2. Frames between two ports of the bridge are dropped (no east-west
  traffic at all), and a port may only send IPv4 and ARP from its slot's MAC and IP address (the set
  ``slots``, filled for every slot at start-up). A template holds CAP_NET_ADMIN over its clones' network
  namespaces, so nothing an environment configures is believed: the host end of its veth decides.
* ``inet kindling-<instance>``: layer 3. Input from the bridge to the host is refused except the ports DNATed
  from KINDLING_ADDRESS (Kindling's API); forwarding to 169.254.0.0/16 is refused, into environments dropped;
  an environment with egress rules (a VPC function) jumps to a chain of those rules (``egress``: a verdict
  map keyed by its address); ``kindling-only`` drops all other forwarding; outbound traffic is masqueraded.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import subprocess
from typing import Any

from kindling.network import KINDLING_ADDRESS

TABLE = "kindling-"
MAX_CONNECTIONS = 1024  # tracked outbound connections (and UDP flows) per environment: the host's conntrack
#                         table is shared, one environment must not fill it
NFT = "nft"


def table(instance: str) -> str:
    return TABLE + instance


def run(commands: list[dict[str, Any]]) -> None:
    """Apply ``commands`` in one transaction (all or nothing)."""
    done = subprocess.run([NFT, "-j", "-f", "-"], input=json.dumps({"nftables": commands}).encode(),
                          capture_output=True, timeout=10)
    if done.returncode:
        raise OSError(f"nft: {done.stderr.decode(errors='replace').strip()[:500]}")


def remove(instance: str) -> None:
    """Remove both tables of ``instance``, if they exist (and if nft does: without it there are none)."""
    for family in ("inet", "bridge"):
        try:
            subprocess.run([NFT, "delete", "table", family, table(instance)], capture_output=True, timeout=10)
        except OSError:
            return


def _m(left: Any, right: Any, op: str = "==") -> dict:
    return {"match": {"op": op, "left": left, "right": right}}


def _meta(key: str) -> dict:
    return {"meta": {"key": key}}


def _p(protocol: str, field: str) -> dict:
    return {"payload": {"protocol": protocol, "field": field}}


def _net(network: ipaddress.IPv4Network) -> dict:
    return {"prefix": {"addr": str(network.network_address), "len": network.prefixlen}}


def mac(slot: int) -> str:
    """The MAC address of slot ``slot``'s eth0 (locally administered)."""
    return f"02:6b:64:00:{slot >> 8 & 0xFF:02x}:{slot & 0xFF:02x}"


def install(instance: str, bridge: str, ports: str, block: ipaddress.IPv4Network,
            slots: list[tuple[str, int, str]], mode: str, exposed: dict[int, tuple[str, int]]) -> None:
    """Create both tables. ``ports``: the host veth ends' names, as a wildcard (``k<instance>-*``: the kernel
    here lacks ``meta ibrname``); ``slots``: (host veth name, slot, address) of every slot of the range."""
    t, b = table(instance), bridge
    here = _m(_meta("iifname"), b)

    def chain(family: str, name: str, **hook: Any) -> dict:
        return {"add": {"chain": {"family": family, "table": t, "name": name, **hook}}}

    def rule(family: str, chain_name: str, *expr: dict) -> dict:
        return {"add": {"rule": {"family": family, "table": t, "chain": chain_name, "expr": list(expr)}}}

    drop, accept = {"drop": None}, {"accept": None}
    # What the host refuses, it refuses at once, so that a client fails fast: an SDK looking for credentials at
    # 169.254.169.254 would otherwise wait seconds. TCP gets a reset (ECONNREFUSED): the kernel rate-limits the ICMP
    # errors it sends to one address (icmp_ratelimit), so under a burst an ICMP refusal would sometimes be a timeout.
    # Anything else gets an ICMP "administratively prohibited" (EHOSTUNREACH).
    def refusing(family: str, chain_name: str, *expr: dict) -> list[dict]:
        return [rule(family, chain_name, *expr, _m(_meta("l4proto"), "tcp"), {"reject": {"type": "tcp reset"}}),
                rule(family, chain_name, *expr, {"reject": {"type": "icmpx", "expr": "admin-prohibited"}})]
    cmds: list[dict[str, Any]] = [
        {"add": {"table": {"family": "bridge", "name": t}}},
        {"add": {"set": {"family": "bridge", "table": t, "name": "slots",
                         "type": ["ifname", "ether_addr", "ipv4_addr"]}}},
        chain("bridge", "pre", type="filter", hook="prerouting", prio=-200, policy="accept"),
        chain("bridge", "fwd", type="filter", hook="forward", prio=-200, policy="accept"),
        rule("bridge", "fwd", _m(_meta("iifname"), ports), drop),  # between two environments: never
        rule("bridge", "pre", _m(_meta("iifname"), ports, "!="), {"return": None}),
        rule("bridge", "pre", _m(_meta("protocol"), "ip"),
             _m({"concat": [_meta("iifname"), _p("ether", "saddr"), _p("ip", "saddr")]}, "@slots"), accept),
        rule("bridge", "pre", _m(_meta("protocol"), "arp"),
             _m({"concat": [_meta("iifname"), _p("ether", "saddr"), _p("arp", "saddr ip")]}, "@slots"), accept),
        rule("bridge", "pre", drop),  # anything else from a port: spoofed, IPv6, other protocols
    ]
    if slots:
        cmds.append({"add": {"element": {"family": "bridge", "table": t, "name": "slots",
                                         "elem": [{"concat": [name, mac(slot), address]}
                                                  for name, slot, address in slots]}}})
    cmds += [
        {"add": {"table": {"family": "inet", "name": t}}},
        {"add": {"map": {"family": "inet", "table": t, "name": "egress", "type": "ipv4_addr", "map": "verdict"}}},
        {"add": {"set": {"family": "inet", "table": t, "name": "conns", "type": "ipv4_addr",
                         "size": 65535}}},
        chain("inet", "pre", type="nat", hook="prerouting", prio=-100, policy="accept"),
        chain("inet", "in", type="filter", hook="input", prio=-10, policy="accept"),
        chain("inet", "fwd", type="filter", hook="forward", prio=-10, policy="accept"),
        chain("inet", "post", type="nat", hook="postrouting", prio=100, policy="accept"),
    ]
    for port, (host, host_port) in sorted(exposed.items()):
        cmds.append(rule("inet", "pre", here, _m(_p("ip", "daddr"), KINDLING_ADDRESS),
                         _m(_p("tcp", "dport"), port), {"dnat": {"family": "ip", "addr": host, "port": host_port}}))
    link_local = {"prefix": {"addr": "169.254.0.0", "len": 16}}
    cmds += [
        rule("inet", "in", here, _m({"ct": {"key": "status"}}, "dnat", "in"), accept),
        *refusing("inet", "in", here),  # the host itself: its loopback services, its addresses, the bridge's
        rule("inet", "fwd", _m(_meta("oifname"), b), _m({"ct": {"key": "state"}}, ["established", "related"], "in"),
             accept),
        rule("inet", "fwd", _m(_meta("oifname"), b), drop),  # nothing new into an environment
        rule("inet", "fwd", here, _m(_meta("nfproto"), "ipv6"), drop),
        *refusing("inet", "fwd", here, _m(_p("ip", "daddr"), link_local)),  # e.g. 169.254.169.254
        rule("inet", "fwd", here, _m({"ct": {"key": "state"}}, "new", "in"),
             {"set": {"op": "add", "elem": _p("ip", "saddr"), "set": "@conns",
                      "stmt": [{"ct count": {"val": MAX_CONNECTIONS, "inv": True}}]}}, drop),
        rule("inet", "fwd", here, {"vmap": {"key": _p("ip", "saddr"), "data": "@egress"}}),
    ]
    if mode != "internet":
        cmds += refusing("inet", "fwd", here)
    cmds.append(rule("inet", "post", _m(_p("ip", "saddr"), _net(block)), _m(_meta("oifname"), b, "!="),
                     {"masquerade": None}))
    run(cmds)


def egress_chain(rules: list[dict[str, Any]]) -> str:
    return "egress-" + hashlib.sha256(json.dumps(rules, sort_keys=True).encode()).hexdigest()[:12]


def egress_commands(instance: str, rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The chain of one set of egress rules (idempotent: added again for each environment that uses it)."""
    t, name = table(instance), egress_chain(rules)
    cmds: list[dict[str, Any]] = [{"add": {"chain": {"family": "inet", "table": t, "name": name}}},
                                  {"flush": {"chain": {"family": "inet", "table": t, "name": name}}}]
    for r in rules:
        net = ipaddress.ip_network(str(r["cidr"]), strict=False)
        if net.version != 4:
            continue
        expr: list[dict] = [_m(_p("ip", "daddr"), _net(net))]
        proto = str(r.get("protocol", "-1")).lower()
        if proto in ("tcp", "udp", "6", "17"):
            proto = {"6": "tcp", "17": "udp"}.get(proto, proto)
            lo, hi = int(r.get("from_port", -1)), int(r.get("to_port", -1))
            expr.append(_m(_meta("l4proto"), proto))
            if lo >= 0:
                expr.append(_m(_p(proto, "dport"), lo if hi <= lo else {"range": [lo, hi]}))
        elif proto in ("icmp", "1"):
            expr.append(_m(_meta("l4proto"), "icmp"))
        elif proto not in ("-1", "all"):
            continue
        cmds.append({"add": {"rule": {"family": "inet", "table": t, "chain": name, "expr": expr + [{"accept": None}]}}})
    cmds.append({"add": {"rule": {"family": "inet", "table": t, "chain": name, "expr": [{"drop": None}]}}})
    return cmds


def bind_commands(instance: str, address: str, rules: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """Point ``address`` at its egress chain (``rules``), or remove its entry (None)."""
    elem = {"family": "inet", "table": table(instance), "name": "egress", "elem": [address]}
    if rules is None:
        return [{"delete": {"element": elem}}]
    cmds = egress_commands(instance, rules)
    cmds.append({"add": {"element": {**elem, "elem": [[address, {"jump": {"target": egress_chain(rules)}}]]}}})
    return cmds
