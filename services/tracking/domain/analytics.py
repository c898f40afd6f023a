"""Post analytics for editors: reach, engaged-time distribution, variants, and the forward tree.

Aggregates only (editors never see who). Bot views are counted apart and left out of
everything else. Percentiles are nearest-rank (always an observed value; the median of an
even count is the lower middle), so they are exact integers and need no interpolation.

The forward tree: every share (a rep's link, or a viewer's forward of it) points at the share
it was forwarded from. A share's *downstream views* are the views of all its descendants, not
its own: how much reach that person's forwarding created. A parent that is not among the
shares makes its child a root; cycles (impossible with signed tokens, but the data is not
trusted) are broken at their smallest share id. Everything is iterative: a 10,000-long chain
of forwards is fine.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# Engaged-time histogram: (label, lower bound ms inclusive, upper bound ms exclusive or None).
BUCKETS: tuple[tuple[str, int, int | None], ...] = (
    ("<10s", 0, 10_000),
    ("10-30s", 10_000, 30_000),
    ("30-60s", 30_000, 60_000),
    ("1-3min", 60_000, 180_000),
    ("3-10min", 180_000, 600_000),
    (">10min", 600_000, None),
)
PERCENTILES = (50, 75, 90, 99)


@dataclass(frozen=True)
class ViewRecord:
    view_id: str
    viewer_id: str  # visitor (or contact) id: what "unique viewers" counts
    copy_id: str
    rep_id: str
    engaged_ms: int
    is_bot: bool = False
    share_id: str = ""


@dataclass(frozen=True)
class Distribution:
    count: int
    mean_ms: float
    percentiles_ms: dict[int, int]  # {50: ..., 75: ..., 90: ..., 99: ...}; empty without views
    buckets: tuple[tuple[str, int], ...]  # (label, views) for every bucket, in BUCKETS order

    @property
    def median_ms(self) -> int:
        return self.percentiles_ms.get(50, 0)


@dataclass(frozen=True)
class VariantStats:
    key: str  # copy id or rep id, as grouped
    rep_id: str
    copy_id: str  # "" when grouped by rep and the rep's views span several copies
    views: int
    unique_viewers: int
    median_ms: int
    mean_ms: float


@dataclass(frozen=True)
class PostAnalytics:
    views: int
    unique_viewers: int
    bot_views: int
    engaged: Distribution
    variants: tuple[VariantStats, ...]  # most views first, then key


def percentile(sorted_values: Sequence[int], p: float) -> int:
    """Nearest-rank percentile of ascending values (0 for none)."""
    if not sorted_values:
        return 0
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def bucket_of(engaged_ms: int) -> str:
    for label, low, high in BUCKETS:
        if engaged_ms >= low and (high is None or engaged_ms < high):
            return label
    return BUCKETS[0][0]  # negative: not possible for stored views, counted as the shortest


def distribution(engaged_ms: Iterable[int]) -> Distribution:
    values = sorted(max(0, v) for v in engaged_ms)
    counts = dict.fromkeys((label for label, _, _ in BUCKETS), 0)
    for v in values:
        counts[bucket_of(v)] += 1
    mean = sum(values) / len(values) if values else 0.0
    pcts = {p: percentile(values, p) for p in PERCENTILES} if values else {}
    return Distribution(len(values), mean, pcts, tuple(counts.items()))


def post_analytics(views: Iterable[ViewRecord], by: str = "copy") -> PostAnalytics:
    """Views, unique viewers, engaged-time distribution and the per-variant comparison (``by`` "copy" or "rep")."""
    if by not in ("copy", "rep"):
        raise ValueError("by: expected 'copy' or 'rep'")
    human: list[ViewRecord] = []
    bots = 0
    for v in views:
        if v.is_bot:
            bots += 1
        else:
            human.append(v)
    groups: dict[str, list[ViewRecord]] = {}
    for v in human:
        groups.setdefault(v.copy_id if by == "copy" else v.rep_id, []).append(v)
    variants = []
    for key, members in groups.items():
        d = distribution(m.engaged_ms for m in members)
        copies = {m.copy_id for m in members}
        rep_id = key if by == "rep" else min(m.rep_id for m in members)
        copy_id = key if by == "copy" else (copies.pop() if len(copies) == 1 else "")
        variants.append(VariantStats(key, rep_id, copy_id, d.count, len({m.viewer_id for m in members}), d.median_ms, d.mean_ms))
    variants.sort(key=lambda s: (-s.views, s.key))
    return PostAnalytics(len(human), len({v.viewer_id for v in human}), bots, distribution(v.engaged_ms for v in human),
                         tuple(variants))


# ---- forward tree -----------------------------------------------------------------------


@dataclass(frozen=True)
class Share:
    share_id: str
    parent_share_id: str  # "" for a rep's own link
    rep_id: str
    views: int  # human views opened through this share


@dataclass(frozen=True)
class Spreader:
    share_id: str
    rep_id: str
    downstream_views: int  # views of all descendants (not its own)
    descendants: int  # shares below it
    own_views: int
    depth: int  # 0 for a root


@dataclass(frozen=True)
class ForwardTree:
    parent: dict[str, str]  # share -> resolved parent ("" for roots)
    children: dict[str, tuple[str, ...]]  # share -> children, sorted
    roots: tuple[str, ...]  # sorted
    shares: dict[str, Share]
    downstream: dict[str, int]
    descendants: dict[str, int]
    depth: dict[str, int]


def _merge(shares: Iterable[Share]) -> dict[str, Share]:
    """One entry per share id: views summed, the smallest non-empty parent and rep kept (order-free)."""
    merged: dict[str, Share] = {}
    for s in shares:
        if s.share_id in merged:
            old = merged[s.share_id]
            parents = [p for p in (old.parent_share_id, s.parent_share_id) if p]
            reps = [r for r in (old.rep_id, s.rep_id) if r]
            merged[s.share_id] = Share(s.share_id, min(parents, default=""), min(reps, default=""), old.views + s.views)
        else:
            merged[s.share_id] = s
    return merged


def build_forward_tree(shares: Iterable[Share]) -> ForwardTree:
    nodes = _merge(s for s in shares if s.share_id)
    parent = {sid: (s.parent_share_id if s.parent_share_id in nodes and s.parent_share_id != sid else "")
              for sid, s in nodes.items()}
    children: dict[str, list[str]] = {sid: [] for sid in nodes}
    for sid, p in parent.items():
        if p:
            children[p].append(sid)
    order: list[str] = []  # pre-order: every node after its parent
    depth: dict[str, int] = {}

    def walk(root: str) -> None:
        depth[root] = 0
        stack = [root]
        while stack:
            node = stack.pop()
            order.append(node)
            for child in children[node]:
                if child not in depth:
                    depth[child] = depth[node] + 1
                    stack.append(child)

    for sid in sorted(nodes):
        if not parent[sid]:
            walk(sid)
    # Whatever is left hangs on a cycle: cut each cycle at its smallest id, which becomes a root.
    for sid in sorted(nodes):
        if sid in depth:
            continue
        seen: dict[str, int] = {}  # node -> position on the walk up
        node = sid
        while node not in seen and node not in depth:
            seen[node] = len(seen)
            node = parent[node]
        if node in depth:  # reached a node a previous cut made reachable: nothing to cut here
            continue
        cycle = list(seen)[seen[node]:]
        cut = min(cycle)
        children[parent[cut]].remove(cut)
        parent[cut] = ""
        walk(cut)
    subtree = {sid: nodes[sid].views for sid in nodes}
    count = dict.fromkeys(nodes, 0)
    for node in reversed(order):
        p = parent[node]
        if p:
            subtree[p] += subtree[node]
            count[p] += count[node] + 1
    return ForwardTree(parent, {k: tuple(sorted(v)) for k, v in children.items()},
                       tuple(sorted(s for s in nodes if not parent[s])), nodes,
                       {s: subtree[s] - nodes[s].views for s in nodes}, count, depth)


def top_spreaders(tree: ForwardTree, n: int = 10) -> list[Spreader]:
    """Shares whose forwards drew views, most downstream views first (then more descendants, then id)."""
    ranked = sorted((s for s in tree.shares if tree.downstream[s] > 0),
                    key=lambda s: (-tree.downstream[s], -tree.descendants[s], s))
    return [Spreader(s, tree.shares[s].rep_id, tree.downstream[s], tree.descendants[s], tree.shares[s].views, tree.depth[s])
            for s in ranked[: max(0, n)]]
