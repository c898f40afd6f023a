"""Rate limits at the beacon: per visitor and per client network, so one flood never crowds out anyone else.

GCRA state in memory per edge process (the tracking service limits again, per
view and across servers, behind it); a beacon over either limit gets 429.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from services.tracking.domain import ratelimit


@dataclass(frozen=True)
class Limit:
    rate: float  # per second, sustained
    burst: int


VISITOR_BEACONS = Limit(rate=1.0, burst=30)  # a page sends one per 10 s, plus flushes on hide and close
NETWORK_BEACONS = Limit(rate=200.0, burst=2_000)  # a /24 (a carrier NAT, an office) holds many readers


class EdgeLimiter:
    def __init__(self, visitor: Limit = VISITOR_BEACONS, network: Limit = NETWORK_BEACONS) -> None:
        self.limits = {"visitor": visitor, "network": network}
        self._state: dict[str, float] = {}
        self._lock = threading.Lock()
        self._next_sweep = time.monotonic() + 60

    def allow(self, visitor: str, network: str) -> bool:
        keys = [("visitor", f"visitor:{visitor}"), ("network", f"network:{network}")]
        now = time.monotonic()
        with self._lock:
            if now > self._next_sweep:  # forget keys that are back to full
                self._state = {k: v for k, v in self._state.items() if v > now}
                self._next_sweep = now + 60
            results = [ratelimit.allow(self._state.get(key), now, self.limits[kind].rate, self.limits[kind].burst)
                       for kind, key in keys]
            if not all(ok for ok, _ in results):
                return False
            for (_, key), (_, state) in zip(keys, results, strict=True):
                assert state is not None
                self._state[key] = state
        return True


def network_of(ip: str) -> str:
    """The client's /24 (IPv4) or /48 (IPv6), as the limit's key; the address itself is not kept."""
    if ":" in ip:
        return ":".join(ip.split(":")[:3])
    return ".".join(ip.split(".")[:3])
