"""The operator's VPCs, subnets and security groups, and the egress rules a function in a VPC gets.

An operator defines them in one file (``--vpc-file``, TOML or JSON, read once at server start; see docs/vpc.md)::

    [vpcs.vpc-0a1b2c3d]
    cidr = "10.0.0.0/16"                       # the VPC's own range: always routed ("local" route)

    [subnets.subnet-0a1b2c3d]
    vpc = "vpc-0a1b2c3d"
    cidr = "10.0.1.0/24"                       # inside the VPC's range
    routes = ["198.18.0.0/15"]                 # what else it routes to; "0.0.0.0/0": the internet

    [security_groups.sg-0a1b2c3d]
    vpc = "vpc-0a1b2c3d"
    egress = [{cidr = "198.18.0.0/15", protocol = "tcp", from_port = 5432, to_port = 5432}]

A function's ``VpcConfig`` names subnets and security groups of one VPC (checked as Lambda checks them, with
its messages). Its environments may then reach exactly ``egress(...)``: the union of its security groups' egress
rules, each cut down to the destinations that every one of its subnets routes to (so the rules do not depend on
the subnet an environment lands in). IPv6 rules and routes count only with ``Ipv6AllowedForDualStack``.
"""

from __future__ import annotations

import ipaddress
import json
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kindling import errors

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

PROTOCOLS = ("tcp", "udp", "icmp", "-1")  # EC2's names; "-1" is all traffic ("all" is read as "-1")
MAX_FILE_BYTES = 1 << 20
MAX_RULES = 60  # egress rules per security group (EC2's default quota)
MAX_ROUTES = 50  # routes per subnet (EC2's default route table quota)
MAX_ITEMS = 1000  # VPCs, subnets, security groups, each
ID_PATTERNS = {"vpc": r"vpc-[0-9a-z]{1,64}", "subnet": r"subnet-[0-9a-z]{1,64}", "sg": r"sg-[0-9a-zA-Z]{1,64}"}

SUBNETS_AND_GROUPS = "SubnetIds and SecurityIds must coexist or be both empty list."
GROUPS_SAME_VPC = "Security Groups are required to be in the same VPC."
SUBNETS_SAME_VPC = "Subnets are required to be in the same VPC."


class VpcFileError(ValueError):
    """The operator's VPC file cannot be used; the message says where and why."""


@dataclass(frozen=True)
class Rule:
    """One egress rule: destination CIDR, protocol, destination ports (inclusive; -1 for icmp and all traffic)."""

    cidr: Network
    protocol: str
    from_port: int
    to_port: int

    def as_dict(self) -> dict[str, Any]:
        return {"cidr": str(self.cidr), "protocol": self.protocol, "from_port": self.from_port,
                "to_port": self.to_port}


@dataclass(frozen=True)
class Subnet:
    id: str
    vpc: str
    cidr: Network
    routes: tuple[Network, ...]  # with the VPC's own range


@dataclass(frozen=True)
class SecurityGroup:
    id: str
    vpc: str
    egress: tuple[Rule, ...]


@dataclass(frozen=True)
class Vpcs:
    """The operator's definitions, as loaded at start (empty when there is no file)."""

    cidrs: dict[str, Network]
    subnets: dict[str, Subnet]
    groups: dict[str, SecurityGroup]

    @classmethod
    def load(cls, path: str) -> Vpcs:
        if not path:
            return cls({}, {}, {})
        file = Path(path)
        try:
            with file.open("rb") as f:
                raw = f.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            raise VpcFileError(f"VPC file {path}: cannot be read: {exc.strerror}") from None
        if len(raw) > MAX_FILE_BYTES:
            raise VpcFileError(f"VPC file {path}: larger than {MAX_FILE_BYTES} bytes")
        try:
            text = raw.decode()
            data = json.loads(text) if file.suffix == ".json" else tomllib.loads(text)
        except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError and TOMLDecodeError are ValueErrors
            raise VpcFileError(f"VPC file {path}: not valid {'JSON' if file.suffix == '.json' else 'TOML'}: {exc}") \
                from None
        try:
            return cls.parse(data)
        except VpcFileError as exc:
            raise VpcFileError(f"VPC file {path}: {exc}") from None

    @classmethod
    def parse(cls, data: Any) -> Vpcs:
        _only(data, "the file", {"vpcs", "subnets", "security_groups"})
        vpcs = {i: _cidr(_only(v, i, {"cidr"}).get("cidr"), f"{i}.cidr")
                for i, v in _table(data, "vpcs", "vpc")}
        subnets: dict[str, Subnet] = {}
        for i, v in _table(data, "subnets", "subnet"):
            _only(v, i, {"vpc", "cidr", "routes"})
            vpc = _vpc_of(v, i, vpcs)
            cidr = _cidr(v.get("cidr"), f"{i}.cidr")
            if cidr.version != vpcs[vpc].version or not cidr.subnet_of(vpcs[vpc]):  # type: ignore[arg-type]
                raise VpcFileError(f"{i}.cidr: {cidr} is not inside {vpc}'s range {vpcs[vpc]}")
            routes = _list(v.get("routes", []), f"{i}.routes", MAX_ROUTES)
            subnets[i] = Subnet(i, vpc, cidr, (vpcs[vpc], *(_cidr(r, f"{i}.routes") for r in routes)))
        groups: dict[str, SecurityGroup] = {}
        for i, v in _table(data, "security_groups", "sg"):
            _only(v, i, {"vpc", "egress"})
            rules = _list(v.get("egress", []), f"{i}.egress", MAX_RULES)
            groups[i] = SecurityGroup(i, _vpc_of(v, i, vpcs),
                                      tuple(_rule(r, f"{i}.egress[{n}]") for n, r in enumerate(rules)))
        return cls(vpcs, subnets, groups)

    # -- a function's VpcConfig ---------------------------------------------------------------------
    def vpc_config(self, given: dict[str, Any]) -> dict[str, Any]:
        """VpcConfig as Lambda answers it (with VpcId) for a request's VpcConfig, checked as Lambda checks it.

        Empty lists (or none) take the function out of its VPC: answered with empty lists and VpcId "", as AWS
        does. Repeated ids count once."""
        subnet_ids = _ids(given.get("SubnetIds"))
        group_ids = _ids(given.get("SecurityGroupIds"))
        out = {"SubnetIds": subnet_ids, "SecurityGroupIds": group_ids,
               "Ipv6AllowedForDualStack": bool(given.get("Ipv6AllowedForDualStack", False)), "VpcId": ""}
        if not subnet_ids and not group_ids:
            return out
        if not subnet_ids or not group_ids:
            raise errors.InvalidParameterValueException(SUBNETS_AND_GROUPS)
        for i in subnet_ids:
            if i not in self.subnets:
                raise errors.InvalidParameterValueException(
                    "Error occurred while DescribeSubnets. EC2 Error Code: InvalidSubnetID.NotFound. EC2 Error "
                    f"Message: The subnet ID '{i}' does not exist")
        for i in group_ids:
            if i not in self.groups:
                raise errors.InvalidParameterValueException(
                    "Error occurred while DescribeSecurityGroups. EC2 Error Code: InvalidGroup.NotFound. EC2 Error "
                    f"Message: The security group '{i}' does not exist")
        vpc = self.subnets[subnet_ids[0]].vpc
        if any(self.subnets[i].vpc != vpc for i in subnet_ids):
            raise errors.InvalidParameterValueException(SUBNETS_SAME_VPC)
        if any(self.groups[i].vpc != vpc for i in group_ids):
            raise errors.InvalidParameterValueException(GROUPS_SAME_VPC)
        out["VpcId"] = vpc
        return out

    def egress(self, vpc_config: dict[str, Any] | None) -> list[dict[str, Any]] | None:
        """What a function with this (stored) VpcConfig may reach: None when it is in no VPC (the server's
        default policy applies), else its rules (``[]``: nothing but Kindling's own API).

        A subnet or security group the operator has since removed answers Lambda's 502 errors for it: the
        function never runs with rules other than the ones it names."""
        subnet_ids = (vpc_config or {}).get("SubnetIds") or []
        if not subnet_ids:
            return None
        ipv6 = bool(vpc_config and vpc_config.get("Ipv6AllowedForDualStack"))
        subnets = [self.subnets.get(i) for i in subnet_ids]
        groups = [self.groups.get(i) for i in (vpc_config or {}).get("SecurityGroupIds") or []]
        if None in subnets:
            raise errors.InvalidSubnetIDException(
                "Lambda was unable to configure access to your VPC: a subnet of the function's VPC configuration "
                "no longer exists on this Kindling host.")
        if None in groups or not groups:
            raise errors.InvalidSecurityGroupIDException(
                "Lambda was unable to configure access to your VPC: a security group of the function's VPC "
                "configuration no longer exists on this Kindling host.")
        routed: list[Network] = list(subnets[0].routes)  # type: ignore[union-attr]
        for subnet in subnets[1:]:
            routed = [c for r in subnet.routes for d in routed if (c := _overlap(r, d))]  # type: ignore[union-attr]
        kinds: dict[tuple[str, int, int, int], list[Network]] = {}  # (protocol, ports, IP version) → CIDRs
        for group in groups:
            for rule in group.egress:  # type: ignore[union-attr]
                for route in routed:
                    if (c := _overlap(rule.cidr, route)) and (ipv6 or c.version == 4):
                        kinds.setdefault((rule.protocol, rule.from_port, rule.to_port, c.version), []).append(c)
        rules = [Rule(c, *kind[:3]) for kind, cidrs in kinds.items()
                 for c in ipaddress.collapse_addresses(cidrs)]  # type: ignore[type-var]
        rules.sort(key=lambda r: (r.cidr.version, r.cidr, r.protocol, r.from_port, r.to_port))
        return [r.as_dict() for r in rules]


def _ids(given: list[str | None] | None) -> list[str]:
    """Ids in their order, each once; a null (the model lets it through) is the id 'null', as Java prints it."""
    return list(dict.fromkeys("null" if i is None else i for i in given or ()))


def _overlap(a: Network, b: Network) -> Network | None:
    """The intersection of two CIDRs: the smaller one when one holds the other, else none."""
    if a.version != b.version:
        return None
    if a.subnet_of(b):  # type: ignore[arg-type]
        return a
    if b.subnet_of(a):  # type: ignore[arg-type]
        return b
    return None


# -- reading the file ---------------------------------------------------------------------------------
def _only(value: Any, where: str, keys: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise VpcFileError(f"{where}: expected a table of {', '.join(sorted(keys))}")
    unknown = sorted(set(value) - keys)
    if unknown:
        raise VpcFileError(f"{where}: unknown key {unknown[0]!r} (expected {', '.join(sorted(keys))})")
    return value


def _table(data: dict[str, Any], key: str, kind: str) -> Iterable[tuple[str, Any]]:
    table = data.get(key, {})
    if not isinstance(table, dict):
        raise VpcFileError(f"{key}: expected a table of {kind} ids")
    if len(table) > MAX_ITEMS:
        raise VpcFileError(f"{key}: more than {MAX_ITEMS}")
    for i in table:
        if not re.fullmatch(ID_PATTERNS[kind], i):
            raise VpcFileError(f"{key}: {i[:80]!r} is not a {kind} id ({ID_PATTERNS[kind]})")
    return table.items()


def _vpc_of(value: dict[str, Any], where: str, vpcs: dict[str, Network]) -> str:
    vpc = value.get("vpc")
    if not isinstance(vpc, str) or vpc not in vpcs:
        raise VpcFileError(f"{where}.vpc: {str(vpc)[:80]!r} is not a VPC of the file")
    return str(vpc)


def _list(value: Any, where: str, limit: int) -> list[Any]:
    if not isinstance(value, list):
        raise VpcFileError(f"{where}: expected a list")
    if len(value) > limit:
        raise VpcFileError(f"{where}: more than {limit} entries")
    return value


def _cidr(value: Any, where: str) -> Network:
    if not isinstance(value, str):
        raise VpcFileError(f"{where}: expected a CIDR such as 10.0.0.0/16")
    try:
        return ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        raise VpcFileError(f"{where}: {value[:80]!r} is not a CIDR ({exc})") from None


def _rule(value: Any, where: str) -> Rule:
    _only(value, where, {"cidr", "protocol", "from_port", "to_port"})
    cidr = _cidr(value.get("cidr"), f"{where}.cidr")
    protocol = value.get("protocol")
    protocol = "-1" if protocol == "all" else protocol
    if protocol not in PROTOCOLS:
        raise VpcFileError(f"{where}.protocol: {str(protocol)[:80]!r} is not one of tcp, udp, icmp, -1 (all)")
    ports = [value.get("from_port"), value.get("to_port", value.get("from_port"))]
    if protocol in ("icmp", "-1"):  # every ICMP type / every port
        if any(p not in (None, -1) for p in ports):
            raise VpcFileError(f"{where}: protocol {protocol} takes no ports (it allows all of them)")
        return Rule(cidr, protocol, -1, -1)
    if not all(isinstance(p, int) and not isinstance(p, bool) and 0 <= p <= 65535 for p in ports):
        raise VpcFileError(f"{where}: from_port and to_port must be ports, 0 to 65535")
    if ports[0] > ports[1]:
        raise VpcFileError(f"{where}: from_port {ports[0]} is above to_port {ports[1]}")
    return Rule(cidr, protocol, ports[0], ports[1])
