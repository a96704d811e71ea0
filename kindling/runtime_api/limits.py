"""What one execution environment may take from the server through its Runtime API, and what happens past it.

The runtime, and anything it forks, is tenant code: it may open connections to its Runtime API (169.254.100.1:9001)
without end, send a request line or headers that never end, a body of any size, or half a request and then nothing.
Each environment therefore has its own caps (below). Past one, the offending connection is refused or closed and
the environment gets a strike; an environment that keeps at it is failed: its invoke ends with a runtime error, as
when a runtime crashes, and it is discarded. The server, and every other environment, never pays.

Real runtimes stay far inside these: Kindling's bootstrap keeps one keep-alive connection, awslambdaric one
or two, and extensions (which share the address) a few more each.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

log = logging.getLogger("kindling.runtime_api")

RESPONSE_LIMIT = 6291556  # Lambda's synchronous response limit (6 MB + 100 bytes)
MAX_CONNECTIONS = 16  # open at once; one more is accepted and reset at once
HEAD_LIMIT = 64 * 1024  # request line + headers of one request (also a chunked body's framing and trailers)
BODY_LIMIT = 16 * 1024 * 1024  # a body past this is not read to its end: 413 and the connection is closed
BUFFER_LIMIT = RESPONSE_LIMIT + 1024 * 1024  # body bytes held at once, over all of one environment's connections
REQUEST_TIMEOUT = 10.0  # seconds from a request's first byte to its last (the long-poll /next waits after that)
STRIKES = 32  # refused or closed connections, and requests that serve no invoke, after which the environment fails
ACCEPT_BATCH = 8  # connections accepted per turn of the event loop, so one flood cannot starve the others


class EnvironmentLimits:
    """One environment's account: open connections, body bytes held, strikes."""

    __slots__ = ("name", "connections", "buffered", "strikes", "failed", "_fail")

    def __init__(self, name: str, fail: Callable[[str], None]) -> None:
        self.name = name  # the environment, as the server's log names it
        self.connections = 0
        self.buffered = 0
        self.strikes = 0
        self.failed = False
        self._fail = fail  # called once, when the environment has had enough strikes

    def strike(self, reason: str) -> None:
        """Count one refusal (a connection or request); fail the environment at STRIKES."""
        self.strikes += 1
        if self.strikes == 1:
            log.warning("Runtime API of %s: refused %s (%d more refusals and the execution environment is "
                        "discarded)", self.name, reason, STRIKES - 1)
        if self.strikes >= STRIKES and not self.failed:
            self.failed = True
            log.warning("Runtime API of %s: refused %d times (last: %s); the execution environment is discarded",
                        self.name, self.strikes, reason)
            self._fail(reason)

    def hold(self, size: int) -> bool:
        """Take ``size`` body bytes from the environment's budget; False if that would pass BUFFER_LIMIT."""
        if self.buffered + size > BUFFER_LIMIT:
            return False
        self.buffered += size
        return True

    def release(self, size: int) -> None:
        self.buffered -= size
