"""The function network plane: what an execution environment sees of the network (issue "9. A way out").

Every environment has its own network namespace. Inside it, as on Lambda, the Runtime API answers at
169.254.100.1:9001 (an address on the environment's own loopback); Kindling's public API (and the
operator's loopback service endpoints, see kindling.network.endpoints) answer at KINDLING_ADDRESS,
reached through the environment's veth and translated by nftables on the host. The addresses below are
the same in every environment and on every server.
"""

from __future__ import annotations

RUNTIME_API_ADDRESS = "169.254.100.1"
RUNTIME_API_PORT = 9001
RUNTIME_API = f"{RUNTIME_API_ADDRESS}:{RUNTIME_API_PORT}"
KINDLING_ADDRESS = "169.254.100.2"  # Kindling's API inside every environment: http://169.254.100.2 (port 80)
KINDLING_API_PORT = 80


def exposed_ports(host: str, port: int) -> dict[int, tuple[str, int]]:
    """Host services every environment may reach at KINDLING_ADDRESS: {port inside: (host address, port)}.

    Kindling's API (listening on ``host``:``port``) answers on port 80; an address the server listens on every
    interface with is reached on loopback."""
    target = "127.0.0.1" if host in ("0.0.0.0", "::", "localhost", "") else host
    return {KINDLING_API_PORT: (target, port)}
