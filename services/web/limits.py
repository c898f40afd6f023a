"""Rate limits at the beacon: per visitor and per client network, so one flood never crowds out anyone else.

The tracking service's in-memory GCRA limiter, with the edge's own limits (per
edge process; the tracking service limits again, per view and across servers,
behind it). A beacon over either limit gets 429.
"""

from __future__ import annotations

from services.tracking.domain.ratelimit import Limit
from services.tracking.limits import RateLimiter

VISITOR_BEACONS = Limit(rate=1.0, burst=30)  # a page sends one per 10 s, plus flushes on hide and close
NETWORK_BEACONS = Limit(rate=200.0, burst=2_000)  # a /24 (a carrier NAT, an office) holds many readers


class EdgeLimiter:
    def __init__(self, visitor: Limit = VISITOR_BEACONS, network: Limit = NETWORK_BEACONS) -> None:
        self.visitor, self.network = visitor, network
        self._limiter = RateLimiter()

    def allow(self, visitor: str, network: str) -> bool:
        return self._limiter.allow([f"beacon:visitor:{visitor}", f"beacon:network:{network}"], [self.visitor, self.network])


def network_of(ip: str) -> str:
    """The client's /24 (IPv4) or /48 (IPv6), as the limit's key; the address itself is not kept."""
    if ":" in ip:
        return ":".join(ip.split(":")[:3])
    return ".".join(ip.split(".")[:3])
