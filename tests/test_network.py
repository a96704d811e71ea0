"""The function network plane (issue 12, "A way out"): what an execution environment can and cannot reach.

Traffic goes only to loopback and to a network namespace this module makes (a veth pair with addresses from
198.19.0.0/16, a test range): a small TCP service runs there, standing for "the internet". Everything the
module makes (namespace, links, the servers' bridges and nftables tables) is removed even when a test fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import ROLE, Server, make_zip, unique

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/usr/sbin/nft"),
                                reason="the network plane needs root and nft")

SERVICE = r'''
import socket, sys, threading
def serve(port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((sys.argv[1], port))
    s.listen(512)
    while True:
        c, _ = s.accept()
        try:
            c.recv(1024); c.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 7\r\n\r\noutside")
        finally:
            c.close()
for p in sys.argv[2:]:
    threading.Thread(target=serve, args=(int(p),), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
'''

PROBE = r'''
import ctypes, errno, fcntl, json, os, socket, struct, threading, time, urllib.request
from concurrent.futures import ThreadPoolExecutor

LISTENER = None

def address():
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            raw = fcntl.ioctl(s, 0x8915, struct.pack("256s", b"eth0"))  # SIOCGIFADDR
        return socket.inet_ntoa(raw[20:24])
    except OSError:
        return None

def gateway():
    for line in open("/proc/net/route").read().splitlines()[1:]:
        f = line.split()
        if f[1] == "00000000":
            return socket.inet_ntoa(struct.pack("<I", int(f[2], 16)))
    return None

def connect(host, port, timeout):
    s = socket.socket()
    s.settimeout(timeout)
    start = time.monotonic()
    try:
        s.connect((host, port))
        return "ok"
    except socket.timeout:
        return "timeout"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
    finally:
        s.close()

def ioctl_errno(request, payload):
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            fcntl.ioctl(s, request, payload)
        return "allowed"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))

def hostile():
    sin = struct.pack("16sHH4s8x", b"eth0", socket.AF_INET, 0, socket.inet_aton("169.254.200.200"))
    alias = struct.pack("16sHH4s8x", b"eth0:1", socket.AF_INET, 0, socket.inet_aton("169.254.200.201"))
    out = {"set_address": ioctl_errno(0x8916, sin), "add_address": ioctl_errno(0x8916, alias),
           "link_down": ioctl_errno(0x8914, struct.pack("16sH", b"eth0", 0))}
    try:
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW).close()
        out["packet_socket"] = "allowed"
    except OSError as e:
        out["packet_socket"] = errno.errorcode.get(e.errno, str(e.errno))
    out["address_after"] = address()
    return out

def flood(n, hold):
    socks, failed = [], 0
    for _ in range(n):
        s = socket.socket()
        s.settimeout(0.5)
        try:
            s.connect(("169.254.100.2", 80))
            socks.append(s)
        except OSError:
            failed += 1
            s.close()
    time.sleep(hold)
    for s in socks:
        s.close()
    return {"opened": len(socks), "failed": failed}

def handler(event, context):
    global LISTENER
    if event.get("listen") and LISTENER is None:
        LISTENER = socket.socket()
        LISTENER.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        LISTENER.bind(("0.0.0.0", 8080))
        LISTENER.listen(16)
    time.sleep(event.get("sleep", 0))
    out = {"type": os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE"), "address": address(), "gateway": gateway(),
           "api": os.environ["AWS_LAMBDA_RUNTIME_API"], "resolv": open("/etc/resolv.conf").read()}
    probes = event.get("probes", {})
    if "@gateway" in json.dumps(probes) and out["gateway"] is None:
        probes = {k: v for k, v in probes.items() if v[0] != "@gateway"}
    with ThreadPoolExecutor(max(1, len(probes))) as pool:
        futures = {k: pool.submit(connect, out["gateway"] if h == "@gateway" else h, p, event.get("timeout", 0.5))
                   for k, (h, p) in probes.items()}
        out["probes"] = {k: f.result() for k, f in futures.items()}
    if event.get("http"):
        try:
            with urllib.request.urlopen(event["http"], timeout=2) as r:
                out["http"] = [r.status, r.read().decode()[:200]]
        except Exception as e:
            out["http"] = repr(e)
    if event.get("hostile"):
        out["hostile"] = hostile()
    if event.get("flood"):
        out["flood"] = flood(*event["flood"])
    if event.get("udp"):  # one datagram to each of many ports: each a new flow the host's conntrack tracks
        host, first, n = event["udp"]
        sent = 0
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for port in range(first, first + n):
                sent += 1 if s.sendto(b"x", (host, port)) else 0
                if port % 100 == 0:  # paced a little: a burst past the kernel's backlog (1,000) loses datagrams
                    time.sleep(0.002)  # on a busy host before they reach the host's conntrack at all
        out["udp_sent"] = sent
    return out
'''


class Outside:
    """A network namespace the test made, with a veth to the host and a TCP service on two ports."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.ns, self.host_if = f"ktest-{tag}", f"kt{tag}h"
        self.net = f"198.19.{random.randrange(256)}"
        self.host, self.address = f"{self.net}.1", f"{self.net}.2"
        self.open_port, self.closed_port = 8000, 8001  # a VPC rule allows only the first
        self.service: subprocess.Popen[bytes] | None = None

    def nft(self, commands: str) -> str:
        """nftables in the test's own namespace (its own rule set)."""
        return subprocess.run(["ip", "netns", "exec", self.ns, "nft", commands], check=True, capture_output=True,
                              text=True).stdout

    def start(self) -> Outside:
        def ip(*args: str) -> None:
            subprocess.run(["ip", *args], check=True, capture_output=True)
        ip("netns", "add", self.ns)
        ip("link", "add", self.host_if, "type", "veth", "peer", "name", "eth0", "netns", self.ns)
        ip("addr", "add", f"{self.host}/24", "dev", self.host_if)
        ip("link", "set", self.host_if, "up")
        ip("-n", self.ns, "addr", "add", f"{self.address}/24", "dev", "eth0")
        ip("-n", self.ns, "link", "set", "eth0", "up")
        ip("-n", self.ns, "link", "set", "lo", "up")
        self.service = subprocess.Popen(["ip", "netns", "exec", self.ns, sys.executable, "-c", SERVICE, self.address,
                                         str(self.open_port), str(self.closed_port)], stdout=subprocess.PIPE)
        assert self.service.stdout is not None and self.service.stdout.readline() == b"ready\n"
        return self

    def stop(self) -> None:
        if self.service is not None:
            self.service.kill()
            self.service.wait()
            assert self.service.stdout is not None
            self.service.stdout.close()
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)


@pytest.fixture(scope="module")
def outside() -> Iterator[Outside]:
    out = Outside()
    try:
        yield out.start()
    finally:
        out.stop()


@pytest.fixture(scope="module")
def host_listeners(outside: Outside) -> Iterator[dict[str, int]]:
    """Listeners on the host that no environment may reach: one on loopback, one on a host address."""
    loop, other = socket.socket(), socket.socket()
    try:
        loop.bind(("127.0.0.1", 0))
        other.bind((outside.host, 0))
        for s in (loop, other):
            s.listen(16)
        yield {"loopback": loop.getsockname()[1], "host_address": other.getsockname()[1]}
    finally:
        loop.close()
        other.close()


def _function(server: Server, **kwargs: object) -> str:
    name = unique("net")
    server.client().create_function(FunctionName=name, Runtime="python3.12", Role=ROLE, Handler="app.handler",
                                    Code={"ZipFile": make_zip({"app.py": PROBE})}, Timeout=15, **kwargs)
    return name


def _invoke(server: Server, name: str, **event: object) -> dict:
    out = server.client().invoke(FunctionName=name, Payload=json.dumps(event).encode())
    body = json.loads(out["Payload"].read())
    assert "FunctionError" not in out, body
    return body


def _bridge_of(server: Server) -> str:
    from kindling.network.bridge import bridge_name
    from kindling.sandbox.isolated import instance_of
    return bridge_name(instance_of(server.data_dir))


def _exists(link: str) -> bool:
    return os.path.exists(f"/sys/class/net/{link}")


def _tables() -> str:
    return subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout


# -- the default policy (internet) -------------------------------------------------------------------------
def test_an_environment_reaches_outside_and_kindling_but_not_the_host(hostile_server, outside, host_listeners):
    """Given a function with the default policy, when it probes, then it reaches the test's service and Kindling's
    API at 169.254.100.2, and nothing of the host: loopback services, the server's port, the bridge's address,
    the host's other addresses, instance metadata."""
    srv = hostile_server
    name = _function(srv)
    got = _invoke(srv, name, http="http://169.254.100.2/_kindling/health", probes={
        "outside": [outside.address, outside.open_port],
        "host_loopback_via_gateway": ["@gateway", host_listeners["loopback"]],
        "server_via_gateway": ["@gateway", srv.port],
        "server_on_own_loopback": ["127.0.0.1", srv.port],
        "host_address": [outside.host, host_listeners["host_address"]],
        "kindling_address_other_port": ["169.254.100.2", srv.port],
        "metadata": ["169.254.169.254", 80],
    })
    assert got["api"] == "169.254.100.1:9001"
    assert got["address"] and got["address"].startswith("169.254.") and got["gateway"]
    assert got["http"][0] == 200 and "ok" in got["http"][1].lower()
    p = got["probes"]
    assert p["outside"] == "ok", p
    for blocked in ("host_loopback_via_gateway", "server_via_gateway", "host_address", "kindling_address_other_port",
                    "metadata"):
        assert p[blocked] == "ECONNREFUSED", (blocked, p)  # refused at once (a TCP reset)
    assert p["server_on_own_loopback"] == "ECONNREFUSED"  # its loopback is its own
    assert "nameserver 127." not in got["resolv"]


def _snap_start(srv: Server, name: str, **event: object) -> dict:
    """Invoke in growing bursts until an environment cloned from the function's template answers."""
    deadline, n = time.monotonic() + 30, 2
    while time.monotonic() < deadline:
        with ThreadPoolExecutor(n) as pool:
            got = list(pool.map(lambda _: _invoke(srv, name, sleep=0.4, **event), range(n)))
        clones = [g for g in got if g["type"] == "snap-start"]
        if clones:
            return clones[0]
        n += 1
    raise AssertionError("no environment was cloned from a template")


def test_no_east_west_traffic_from_a_plain_environment_or_a_clone(hostile_server):
    """Given a victim environment listening on 8080, when another environment (fresh, then cloned from a
    template) connects to its address, its listener or its Runtime API, then the packets are dropped."""
    srv = hostile_server
    victim = _function(srv)
    v = _invoke(srv, victim, listen=True)
    assert v["address"]
    attacker = _function(srv)
    probes = {"victim_listener": [v["address"], 8080], "victim_runtime_api": [v["address"], 9001],
              "victim_ping_port": [v["address"], 80]}
    first = _invoke(srv, attacker, probes=probes)
    assert first["address"] != v["address"]
    assert set(first["probes"].values()) == {"timeout"}, first["probes"]
    clone = _snap_start(srv, attacker, probes=probes)
    assert clone["address"] not in (v["address"], first["address"])
    assert set(clone["probes"].values()) == {"timeout"}, clone["probes"]
    assert clone["api"] == "169.254.100.1:9001"


def test_an_environment_cannot_change_its_address_and_a_flood_costs_only_itself(hostile_server, bystander):
    """Hostile: a function tries to re-address its interface (no capability: EPERM, and the host would not
    believe it anyway), then floods Kindling's API with connections; a bystander keeps its latency."""
    srv = hostile_server
    name = _function(srv)
    got = _invoke(srv, name, hostile=True)
    h = got["hostile"]
    assert h["set_address"] == h["add_address"] == h["link_down"] == "EPERM", h
    assert h["packet_socket"] == "EPERM" and h["address_after"] == got["address"]
    with ThreadPoolExecutor(1) as pool:
        flood = pool.submit(_invoke, srv, name, flood=[300, 4])
        time.sleep(1.0)
        bystander.check()
        result = flood.result(timeout=30)["flood"]
    assert result["opened"] + result["failed"] == 300
    bystander.check()


# -- the other modes -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mode_server(request: pytest.FixtureRequest) -> Iterator[Server]:
    """A server started with ``network=<param>`` (no templates: lighter); on exit its plane must be gone."""
    with tempfile.TemporaryDirectory(prefix="kindling-net-") as tmp:
        srv = Server(Path(tmp) / "data", network=request.param, templates="off").start()
        bridge = _bridge_of(srv)
        try:
            yield srv
        finally:
            srv.stop()
        assert not _exists(bridge) and f"kindling-{bridge[2:]}" not in _tables()


@pytest.mark.parametrize("mode_server", ["kindling-only"], indirect=True)
def test_kindling_only_reaches_only_kindling(mode_server, outside):
    name = _function(mode_server)
    got = _invoke(mode_server, name, http="http://169.254.100.2/_kindling/health",
                  probes={"outside": [outside.address, outside.open_port], "metadata": ["169.254.169.254", 80]})
    assert got["http"][0] == 200
    assert got["probes"] == {"outside": "ECONNREFUSED", "metadata": "ECONNREFUSED"}
    assert got["resolv"] == ""


@pytest.mark.parametrize("mode_server", ["none"], indirect=True)
def test_none_has_loopback_and_its_runtime_api_only(mode_server, outside):
    name = _function(mode_server)
    got = _invoke(mode_server, name, probes={"outside": [outside.address, outside.open_port],
                                             "kindling": ["169.254.100.2", 80]})
    assert got["address"] is None and got["gateway"] is None and got["api"] == "169.254.100.1:9001"
    assert got["probes"] == {"outside": "ENETUNREACH", "kindling": "ENETUNREACH"}


# -- a VPC function's egress rules, at the backend ---------------------------------------------------------
EGRESS_PROBE = """
import socket, sys
for port in (int(sys.argv[2]), int(sys.argv[3])):
    s = socket.socket(); s.settimeout(0.5)
    try:
        s.connect((sys.argv[1], port)); print(port, "ok", flush=True)
    except OSError as e:
        print(port, type(e).__name__, flush=True)
    s.close()
"""


def test_egress_rules_hold_an_environment_to_what_they_allow(outside, tmp_path):
    """Given an environment spawned with one egress rule (tcp to the service's first port), it reaches that
    port and not the other; one spawned without rules reaches both."""
    from kindling.sandbox.isolated import IsolatedBackend

    tmp_path.chmod(0o755)
    task = tmp_path / "task"
    task.mkdir()
    task.chmod(0o755)  # not mkdir's mode: an in-process Kindling earlier in the session left the umask at 077
    rule = [{"cidr": f"{outside.address}/32", "protocol": "tcp", "from_port": outside.open_port,
             "to_port": outside.open_port}]
    argv = ["/usr/bin/python3", "-c", EGRESS_PROBE, outside.address, str(outside.open_port), str(outside.closed_port)]

    async def run(backend: IsolatedBackend, egress: list[dict] | None) -> str:
        box = await backend.spawn("e", argv, {}, str(task), 128, 16, egress=egress)
        loop, out = asyncio.get_running_loop(), b""
        exited = loop.create_future()
        box.watch(loop, exited.set_result)
        code = await asyncio.wait_for(exited, 10)
        os.set_blocking(box.output_fd, True)
        while chunk := os.read(box.output_fd, 4096):
            out += chunk
        box.close()
        return out.decode() + ("" if code == 0 else f"\nexit code {code}")

    async def main() -> tuple[str, str]:
        backend = IsolatedBackend(tmp_path / "data", str(task), [], 993, 990, pool=0, network_mode="internet")
        try:
            return await run(backend, rule), await run(backend, None)
        finally:
            backend.close()

    (tmp_path / "data").mkdir(mode=0o700)
    restricted, free = asyncio.run(main())
    assert restricted.split("\n")[:2] == [f"{outside.open_port} ok", f"{outside.closed_port} TimeoutError"], restricted
    assert free.split("\n")[:2] == [f"{outside.open_port} ok", f"{outside.closed_port} ok"], free


def test_a_dead_servers_bridge_and_tables_are_removed_at_start():
    """Given the bridge and tables of a server whose spawner is gone (killed outright), when any server starts,
    then they are removed; a bridge that is not Kindling's is left alone."""
    from kindling.network import bridge, policy

    dead, foreign = uuid.uuid4().hex[:8], f"kd{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "link", "add", bridge.bridge_name(dead), "type", "bridge"], check=True)
    subprocess.run(["ip", "link", "set", bridge.bridge_name(dead), "alias", f"{bridge.ALIAS}999999999 1"], check=True)
    subprocess.run(["ip", "link", "add", foreign, "type", "bridge"], check=True)
    try:
        policy.run([{"add": {"table": {"family": f, "name": policy.table(dead)}}} for f in ("inet", "bridge")])
        with tempfile.TemporaryDirectory(prefix="kindling-net-") as tmp:
            srv = Server(Path(tmp) / "data", network="none", templates="off").start()
            srv.stop()
        assert not _exists(bridge.bridge_name(dead)) and policy.table(dead) not in _tables()
        assert _exists(foreign)
    finally:
        for link in (bridge.bridge_name(dead), foreign):
            subprocess.run(["ip", "link", "del", link], capture_output=True)
        policy.remove(dead)


def test_an_environment_cannot_fill_the_hosts_connection_tracking(hostile_server, outside):
    """Hostile: a function sends one UDP datagram to each of 1,500 ports (1,500 new flows for the host's shared
    conntrack table); past 1,024 flows of its own the rest are dropped, and another environment still gets out."""
    srv = hostile_server
    outside.nft("add table inet count; add chain inet count c { type filter hook input priority 0; }; "
                "add rule inet count c udp dport 20000-21499 counter")
    try:
        flooder, other = _function(srv), _function(srv)
        got = _invoke(srv, flooder, udp=[outside.address, 20000, 1500])
        assert got["udp_sent"] == 1500
        time.sleep(0.2)
        counted = int(outside.nft("list chain inet count c").split("packets ")[1].split()[0])
        assert 1000 <= counted <= 1024, counted
        assert _invoke(srv, other, probes={"outside": [outside.address, outside.open_port]})["probes"] == {
            "outside": "ok"}
    finally:
        outside.nft("delete table inet count")


def test_environments_get_only_nameservers_they_can_reach(tmp_path):
    from kindling.network.plane import nameservers

    conf = tmp_path / "resolv.conf"
    conf.write_text("# host\nnameserver 127.0.0.53\nnameserver 169.254.169.253\nnameserver ::1\n"
                    "nameserver 10.0.0.2\nsearch example.internal\n")
    assert nameservers(str(conf)) == ["10.0.0.2"]
    assert nameservers(str(tmp_path / "missing")) == []


def test_without_nft_environments_get_loopback_only_with_one_warning(tmp_path, monkeypatch, caplog):
    """Given a host without the nft tool, the isolated backend starts with network=none and says so once."""
    from kindling.sandbox import make_backend

    monkeypatch.setenv("PATH", str(tmp_path))  # no nft on it
    caplog.set_level("WARNING", logger="kindling.sandbox")
    backend = make_backend("isolated", tmp_path / "data", str(tmp_path), [], 993, 990, 0, "internet",
                           {80: ("127.0.0.1", 9)})
    try:
        warnings = [r.getMessage() for r in caplog.records if "network=internet is not possible" in r.getMessage()]
        assert len(warnings) == 1 and "nft" in warnings[0] and "network=none" in warnings[0]
        time.sleep(1.0)  # the spawner has read its configuration and set up (no) network plane
        assert backend.process.poll() is None, "the spawner exited"
    finally:
        backend.close()
