"""Rate limiting as a pure decision (GCRA), so the state can live anywhere.

The generic cell rate algorithm is a token bucket whose whole state is one number, the
*theoretical arrival time* (TAT): when the bucket would be full again. ``allow`` takes the
stored TAT (None for a key never seen) and returns the decision and the TAT to store; an
adapter keeps one TAT per key ("visitor:<id>", "ip:<hash>") in Redis (with a TTL of
``idle_seconds``) or in memory. Keys are independent, so a flood from one visitor or address
only ever exhausts its own bucket.

``rate`` is the sustained rate (events per second), ``burst`` how many may come at once from
rest; a request of ``cost`` events (a heartbeat batch) is allowed whole or not at all. A
clock that steps back never grants more than ``burst``.
"""

from __future__ import annotations

from dataclasses import dataclass

# A request fits when it is at most this fraction of one interval early: it absorbs the float
# rounding of epoch-second clocks (about 1e-7 s) yet can never let a whole extra event through.
SLACK_INTERVALS = 0.01


@dataclass(frozen=True)
class Limit:
    rate: float  # events per second, sustained
    burst: int  # events allowed at once from rest

    def idle_seconds(self) -> float:
        """After this long without events a key's state is back to full and may be dropped."""
        return self.burst / self.rate


# Defaults for the tracking API (the adapter may override them from settings). A browser sends
# one heartbeat per 10 s per open view; a visitor with a few tabs and a flush after a network
# blip stays far below the visitor limit. An address may be a whole office or a carrier NAT.
VISITOR_HEARTBEATS = Limit(rate=2.0, burst=120)
IP_HEARTBEATS = Limit(rate=200.0, burst=2_000)
VISITOR_VIEWS = Limit(rate=0.5, burst=30)  # StartView per visitor
IP_VIEWS = Limit(rate=20.0, burst=300)


def _check(rate: float, burst: int, cost: int) -> None:
    if not rate > 0:
        raise ValueError("rate: must be > 0")
    if burst < 1:
        raise ValueError("burst: must be >= 1")
    if cost < 0:
        raise ValueError("cost: must be >= 0")


def allow(state: float | None, now: float, rate: float, burst: int, cost: int = 1) -> tuple[bool, float | None]:
    """(allowed, state to store). A denied request leaves the state as it was (it is not charged)."""
    _check(rate, burst, cost)
    interval = 1.0 / rate
    tat = now if state is None else max(state, now)
    new_tat = tat + cost * interval
    if new_tat - now > (burst + SLACK_INTERVALS) * interval:
        return False, state
    return True, new_tat


def retry_after(state: float | None, now: float, rate: float, burst: int, cost: int = 1) -> float:
    """Seconds until a request of ``cost`` would be allowed (0 when it would be now; inf if never)."""
    _check(rate, burst, cost)
    if cost > burst:
        return float("inf")
    interval = 1.0 / rate
    tat = now if state is None else max(state, now)
    return max(0.0, tat + cost * interval - (burst + SLACK_INTERVALS) * interval - now)
