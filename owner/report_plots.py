"""A run report's PNG plots: metric over hops, order per cycle, time per hop, final scores."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

PLOTS = ("metric", "order", "timing", "final")
"""The plots a report may hold, each written as ``<name>.png``."""

_PHASES = (
    ("wait_seconds", "waiting (for assignment)", "#bbbbbb"),
    ("receive_seconds", "receive (pick up, download, verify, score)", "#4c72b0"),
    ("train_seconds", "training", "#55a868"),
    ("send_seconds", "send (score, seal, upload)", "#dd8452"),
)


def write_plots(report: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """Draws the report's plots as PNG files in ``out_dir``; returns them by name.

    A plot with nothing to show (no hops, no final evaluation) is left out.
    """
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from baton.io import atomic_write

    drawers = {"metric": _metric, "order": _order, "timing": _timing, "final": _final}
    written: dict[str, Path] = {}
    for name in PLOTS:
        fig = plt.figure(figsize=(8, 4), dpi=100)
        try:
            if not drawers[name](fig, report):
                continue
            fig.tight_layout()
            path = out_dir / f"{name}.png"
            png = io.BytesIO()
            fig.savefig(png, format="png", facecolor="white")
            atomic_write(path, png.getvalue(), mode=0o644)
            written[name] = path
        finally:
            plt.close(fig)
    return written


def _colours(report: dict[str, Any]) -> dict[str, Any]:
    """One colour per site, in the order the sites first appear."""
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    sites = list(dict.fromkeys(h["site"] for h in report["hops"]))
    sites += [e["site"] for e in report["final_evaluation"] if e["site"] not in sites]
    return {s: cmap(i % 10) for i, s in enumerate(sites)}


def _direction(report: dict[str, Any]) -> str:
    return "higher is better" if report.get("higher_is_better", True) else "lower is better"


def _metric(fig: Figure, report: dict[str, Any]) -> bool:
    """The travelling model's validation metric at each hop's site, before and after training."""
    metric = report["metric"]
    points = [
        (h, x, h[key].get(metric))
        for h in report["hops"]
        for x, key in ((h["hop"] - 0.2, "metrics_before"), (h["hop"] + 0.2, "metrics_after"))
    ]
    points = [(h, x, y) for h, x, y in points if y is not None]
    if not points:
        return False
    ax: Axes = fig.add_subplot()
    colours = _colours(report)
    ax.plot([x for _, x, _ in points], [y for _, _, y in points], color="#999999", zorder=1)
    seen: set[str] = set()
    for h, x, y in points:
        after = x > h["hop"]
        ax.scatter(
            [x], [y], s=40, zorder=2, edgecolors=colours[h["site"]],
            facecolors=colours[h["site"]] if after else "white",
            label=h["site"] if after and h["site"] not in seen else None,
        )  # fmt: skip
        if after:
            seen.add(h["site"])
    ax.set_xlabel("hop (hollow: before training, filled: after)")
    ax.set_ylabel(f"validation {metric} ({_direction(report)})")
    ax.set_xticks([h["hop"] for h in report["hops"]])
    ax.set_title(f"run {report['run_id']}: {metric} of the travelling model at each site")
    ax.legend(title="site", fontsize="small")
    return True


def _order(fig: Figure, report: dict[str, Any]) -> bool:
    """The sites in the order they trained, one row per cycle."""
    hops = report["hops"]
    if not hops:
        return False
    ax: Axes = fig.add_subplot()
    colours = _colours(report)
    positions: dict[int, int] = {}
    for h in hops:
        pos = positions.get(h["cycle"], 0)
        positions[h["cycle"]] = pos + 1
        ax.barh(h["cycle"], 0.9, left=pos + 0.05, color=colours[h["site"]], alpha=0.8)
        ax.text(pos + 0.5, h["cycle"], f"{h['site']}\nhop {h['hop']}", ha="center", va="center")
    fig.set_size_inches(8, 1.4 + 0.7 * len(positions))
    ax.set_yticks(sorted(positions), [f"cycle {c}" for c in sorted(positions)])
    ax.invert_yaxis()
    ax.set_xlim(0, max(positions.values()))
    ax.set_xticks([])
    ax.set_xlabel("position in the cycle")
    ax.set_title("order per cycle")
    return True


def _timing(fig: Figure, report: dict[str, Any]) -> bool:
    """Each hop's wall time stacked as waiting, receiving, training and sending."""
    hops = report["hops"]
    if not hops:
        return False
    ax: Axes = fig.add_subplot()
    xs = [h["hop"] for h in hops]
    bottom = [0.0] * len(hops)
    for key, label, colour in _PHASES:
        heights = [h.get(key) or 0.0 for h in hops]
        ax.bar(xs, heights, bottom=bottom, label=label, color=colour)
        bottom = [b + v for b, v in zip(bottom, heights, strict=True)]
    ax.set_xticks(xs, [f"{h['hop']}\n{h['site']}" for h in hops], fontsize="small")
    ax.set_xlabel("hop and site")
    ax.set_ylabel("seconds")
    ax.set_title("time per hop")
    ax.legend(fontsize="small")
    return True


def _final(fig: Figure, report: dict[str, Any]) -> bool:
    """The final model's metric at each site that evaluated it."""
    metric = report["metric"]
    scores = [
        (e["site"], e["metrics"][metric])
        for e in report["final_evaluation"]
        if metric in e["metrics"]
    ]
    if not scores:
        return False
    ax: Axes = fig.add_subplot()
    colours = _colours(report)
    sites = [s for s, _ in scores]
    ax.bar(sites, [v for _, v in scores], color=[colours[s] for s in sites])
    for i, (_, v) in enumerate(scores):
        ax.text(i, v, f"{v:.3f}", ha="center", va="bottom")
    ax.set_ylabel(f"validation {metric} ({_direction(report)})")
    ax.set_title("final model at each site")
    return True
