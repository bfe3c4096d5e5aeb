"""The lab's outputs: ``results.json``, a markdown table, and plots of percentiles (PNG, SVG)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

RESULTS_FILE = "results.json"
TABLE_FILE = "results.md"
PLOT_FILE = "percentiles.svg"
PNG_FILE = "percentiles.png"
REQUIRED_KEYS = (
    "dataset",
    "partition",
    "k",
    "strategy",
    "percentile_mean",
    "best_order_rate",
    "pct_of_centralized",
    "ci95",
    "order_noise_ratio",
)
"""Keys every record carries."""


def _clean(value: Any) -> Any:
    """NaN and infinities become null (JSON has no such numbers)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    return value


def _cell_key(r: Mapping[str, Any]) -> str:
    remedies = r.get("remedies", "none")
    metric = r.get("metric", "accuracy")
    ranked = (
        ""
        if metric == "accuracy"
        else f" by {metric}" + ("" if r.get("higher_is_better", True) else " (lower is better)")
    )
    return (
        f"{r['dataset']} {r['partition']} K={r['k']} "
        f"e={r.get('local_epochs', '?')} c={r.get('cycles', '?')}"
        + ("" if remedies == "none" else " +remedies")
        + ranked
    )


def _p(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.3f}" if value >= 0.001 else "<0.001"


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def _signed(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:+.1f}"


def _times(factor: float, value: Any) -> Any:
    return None if value is None else factor * value


def markdown_table(records: Sequence[Mapping[str, Any]]) -> str:
    """One row per record; cells where order does not beat noise are marked.

    Values are in each record's primary metric (accuracy unless the cell names another,
    with its direction; gains are positive when better). Gains and their p-values
    (paired across partition seeds) are against the expected value of a random order
    and against FedAvg; the leave-one-out oracle is what picking orders by their test
    value in the other repetitions reaches (how
    reproducibly the cell's best order can be found from that many runs of every order);
    the cost is the strategy's probe runs and their training time.
    """
    lines = [
        "| cell | strategy | percentile (95% CI) | regret | best order | % centralized "
        "| vs random (p) | vs FedAvg (p) | order/noise | gap vs noise gap "
        "| leave-one-out oracle: percentile, best order | extra runs (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        lo, hi = r["ci95"]
        sensitive = "" if r.get("order_sensitive") else " (order ~ noise)"
        lines.append(
            f"| {_cell_key(r)}{sensitive} | {r['strategy']} | {_fmt(r['percentile_mean'])} "
            f"({_fmt(lo)}-{_fmt(hi)}) | {_fmt(100 * r['regret_mean'])} pts "
            f"| {_fmt(100 * r['best_order_rate'], 0)}% | {_fmt(r['pct_of_centralized'])} "
            f"| {_signed(r.get('gain_vs_random_pts'))} ({_p(r.get('p_vs_random'))}) "
            f"| {_signed(r.get('vs_fedavg_pts'))} ({_p(r.get('p_vs_fedavg'))}) "
            f"| {_fmt(r['order_noise_ratio'], 2)} | {_fmt(100 * r['gap_best_worst'])} vs "
            f"{_fmt(100 * r['noise_gap'] if r['noise_gap'] is not None else None)} pts "
            f"| {_fmt(r.get('loo_oracle_percentile'))}, "
            f"{_fmt(_times(100, r.get('loo_oracle_best_order_rate')), 0)}% "
            f"| {r['extra_runs']} ({_fmt(r.get('extra_train_seconds'), 1)}) |"
        )
    return "\n".join(lines) + "\n"


def svg_plot(records: Sequence[Mapping[str, Any]]) -> str:
    """Mean percentile of each strategy, one row of bars per cell, as an SVG document."""
    cells: dict[str, list[Mapping[str, Any]]] = {}
    for r in records:
        cells.setdefault(_cell_key(r), []).append(r)
    strategies = list(dict.fromkeys(r["strategy"] for r in records))
    bar, gap, left, top = 12, 18, 150, 30
    row = len(strategies) * bar + gap
    width, height = left + 420, top + row * len(cells) + 20
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="sans-serif" font-size="10">',
        f'<text x="{left}" y="16" font-size="12">Percentile of the chosen order among all '
        "orders (dashed: 50th and 90th)</text>",
    ]
    for x in (50, 90):
        px = left + 4 * x
        parts.append(
            f'<line x1="{px}" y1="{top}" x2="{px}" y2="{height - 20}" stroke="#888" '
            'stroke-dasharray="3,3"/>'
        )
    for c, (key, rows) in enumerate(cells.items()):
        y0 = top + c * row
        parts.append(f'<text x="4" y="{y0 + 10}">{escape(key)}</text>')
        for r in rows:
            i = strategies.index(r["strategy"])
            y = y0 + i * bar
            value = r["percentile_mean"] if r["percentile_mean"] is not None else 0.0
            hue = (i * 360) // max(1, len(strategies))
            parts.append(
                f'<rect x="{left}" y="{y}" width="{4 * value:.1f}" height="{bar - 2}" '
                f'fill="hsl({hue},55%,55%)"/>'
                f'<text x="{left + 4 * value + 3:.1f}" y="{y + bar - 3}">'
                f"{escape(r['strategy'])} {value:.0f}</text>"
            )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def png_plot(records: Sequence[Mapping[str, Any]], path: Path) -> None:
    """Writes a heat map of mean percentiles, one row per cell and one column per strategy,
    as a PNG (matplotlib's Agg backend, no display needed).

    Each square carries its percentile; cells where order does not beat noise are marked
    ``(order ~ noise)`` in their row label.
    """
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cells: dict[str, dict[str, Any]] = {}
    sensitive: dict[str, bool] = {}
    for r in records:
        key = _cell_key(r)
        cells.setdefault(key, {})[r["strategy"]] = r["percentile_mean"]
        sensitive[key] = bool(r.get("order_sensitive"))
    strategies = list(dict.fromkeys(r["strategy"] for r in records))
    values = np.full((len(cells), len(strategies)), np.nan)
    for i, row in enumerate(cells.values()):
        for j, name in enumerate(strategies):
            if row.get(name) is not None:
                values[i, j] = row[name]
    labels = [k + ("" if sensitive[k] else " (order ~ noise)") for k in cells]
    label_width = 0.065 * max((len(label) for label in labels), default=0)
    # A figure on its own Agg canvas: no pyplot, no global backend, nothing to close.
    fig = Figure(
        figsize=(
            max(7.0, 2.0 + label_width + 0.6 * len(strategies)),
            max(3.0, 1.8 + 0.3 * len(cells)),
        ),
        layout="constrained",
    )
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(values), cmap="RdYlGn", vmin=0, vmax=100, aspect="auto")
    ax.set_xticks(range(len(strategies)), strategies, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            text = "n/a" if np.isnan(values[i, j]) else f"{values[i, j]:.0f}"
            ax.text(j, i, text, ha="center", va="center", fontsize=7)
    ax.set_title("Mean percentile of the chosen order among all orders", fontsize=10)
    fig.colorbar(image, ax=ax, label="percentile", shrink=0.8)
    fig.savefig(path, format="png", dpi=100)


def write_outputs(
    out_dir: Path, records: Sequence[Mapping[str, Any]], meta: Mapping[str, Any]
) -> list[Path]:
    """Writes ``results.json``, ``results.md``, ``percentiles.png`` and ``percentiles.svg``
    into ``out_dir``.

    Returns:
        The paths written.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    clean = [_clean(dict(r)) for r in records]
    payload = {"meta": _clean(dict(meta)), "records": clean}
    paths = [out_dir / RESULTS_FILE, out_dir / TABLE_FILE, out_dir / PNG_FILE, out_dir / PLOT_FILE]
    paths[0].write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    table = markdown_table(clean)
    left_out = meta.get("cells_left_out") or []
    if left_out:
        table += "\nCells left out (no partition seed could be drawn):\n\n" + "".join(
            f"- {c['dataset']} {c['partition']} K={c['k']} epochs={c['local_epochs']} "
            f"cycles={c['cycles']}: {c['reason']}\n"
            for c in left_out
        )
    paths[1].write_text(table, encoding="utf-8")
    png_plot(clean, paths[2])
    paths[3].write_text(svg_plot(clean), encoding="utf-8")
    return paths
