"""bench/results.png: every figure that has a numeric target, as headroom against it, with its floor beside it."""

from __future__ import annotations

from pathlib import Path

from .common import Score

MET, MISSED, FLOOR = "#2e7d32", "#c62828", "#616161"


def plot(scores: list[Score], path: Path, title: str) -> None:
    """One line per figure on a log axis: 1 is the target, right of it met. A grey tick marks where the figure
    would sit at its floor (the best this machine allows for it, measured in the same run)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(11, 0.45 * len(scores) + 1.8))
    ys = list(range(len(scores)))[::-1]  # first score at the top
    for y, s in zip(ys, scores, strict=True):
        colour = MET if s.met else MISSED
        ax.hlines(y, 1, s.headroom, colors=colour, linewidth=4)
        ax.plot(s.headroom, y, "o", color=colour, markersize=6)
        if (floor := s.floor_headroom) is not None:
            ax.plot(floor, y, "|", color=FLOOR, markersize=14, markeredgewidth=2)
        ax.annotate(f"{s.show(s.value)}  (target {s.target_text})", (max(s.headroom, 1, s.floor_headroom or 0), y),
                    xytext=(8, -3), textcoords="offset points", fontsize=8)
    ax.axvline(1, color="black", linewidth=1)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:g}×"))
    values = [v for s in scores for v in (s.headroom, s.floor_headroom) if v]
    ax.set_xlim(min(0.5, min(values) / 1.5), max(values) * 12)
    ax.set_yticks(ys, [s.name for s in scores], fontsize=8)
    ax.set_xlabel("headroom against the target (target ÷ measured; for rates, measured ÷ target): right of 1 is met;\n"
                  " grey tick: the same figure at its floor measured in the same run", fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", which="both", alpha=0.25)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
