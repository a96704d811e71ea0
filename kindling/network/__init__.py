"""The function network plane: what an execution environment sees of the network (issue "9. A way out").

Every environment has its own network namespace. Inside it, as on Lambda, the Runtime API answers at
169.254.100.1:9001 (an address on the environment's own loopback); Kindling's public API (and the
operator's loopback service endpoints, see kindling.network.endpoints) answer at KINDLING_ADDRESS,
reached through the environment's veth and translated by nftables on the host. The addresses below are
the same in every environment and on every server.
"""

from __future__ import annotations

from collections.abc import Mapping

RUNTIME_API_ADDRESS = "169.254.100.1"
RUNTIME_API_PORT = 9001
RUNTIME_API = f"{RUNTIME_API_ADDRESS}:{RUNTIME_API_PORT}"
KINDLING_ADDRESS = "169.254.100.2"  # Kindling's API inside every environment: http://169.254.100.2 (port 80)
KINDLING_API_PORT = 80


def exposed_ports(host: str, port: int,
                  service_endpoints: Mapping[str, str] | None = None) -> dict[int, tuple[str, int]]:
    """Host services every environment may reach at KINDLING_ADDRESS: {port inside: (host address, port)}.

    Kindling's API (listening on ``host``:``port``) answers on port 80; an address the server listens on every
    interface with is reached on loopback. Each operator endpoint on the host's loopback (``service_endpoints``,
    as kindling.network.endpoints.parse returns them, e.g. {"s3": "http://127.0.0.1:5000"}) answers on its own
    port: {5000: ("127.0.0.1", 5000)}; other endpoints are reached by their own address."""
    target = "127.0.0.1" if host in ("0.0.0.0", "::", "localhost", "") else host
    ports = {KINDLING_API_PORT: (target, port)}
    if service_endpoints:
        from kindling.network import endpoints

        ports.update(endpoints.exposed_ports(service_endpoints))  # parse() refused port 80 and clashes
    return ports
