"""A run report as one self-contained HTML page: inline CSS, the plots embedded as data URIs."""

from __future__ import annotations

import base64
from html import escape
from pathlib import Path
from typing import Any

from owner.report import LOST_HOP_ACTIONS, lost_hops

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.5em; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f0f0f0; } td.l, th.l { text-align: left; }
tr.failed td { background: #fde8e8; }
img { max-width: 100%; border: 1px solid #eee; }
.note { color: #555; font-size: 0.9em; } code { font-size: 0.9em; }
"""

_TITLES = {
    "metric": "Validation metric of the travelling model, before and after each hop",
    "order": "Order per cycle",
    "timing": "Time per hop",
    "final": "Final model at each site",
}


def render_html(report: dict[str, Any], plots: dict[str, Path]) -> str:
    """The page of ``report`` with ``plots`` (PNG files by name) embedded in it."""
    metric = escape(report["metric"])
    direction = "higher is better" if report.get("higher_is_better", True) else "lower is better"
    done = sum(h["state"] == "completed" for h in report["hops"])
    seconds = report["seconds"]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Baton run {escape(report['run_id'])}</title><style>{_CSS}</style></head><body>",
        f"<h1>Run {escape(report['run_id'])} &lsquo;{escape(report['name'])}&rsquo;</h1>",
        f"<p><b>{escape(report['state'])}</b>"
        + (f": {escape(report['error'])}" if report["error"] else "")
        + f"; {done} of {report['total_hops']} hops{escape(lost_hops(report))}, "
        f"{report['cycles']} cycle(s), ordering "
        f"<code>{escape(report['strategy'])}</code>"
        + (f", {seconds:.1f} s" if seconds is not None else "")
        + f"; {report['bytes_relayed']} bytes relayed. Primary metric <code>{metric}</code> "
        f"({direction}).</p>",
        f'<p class="note">plan sha256 <code>{escape(report["plan_sha256"])}</code></p>',
    ]
    for name, path in plots.items():
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        parts += [
            f"<h2>{_TITLES[name]}</h2>",
            f'<img id="plot-{name}" alt="{_TITLES[name]}" src="data:image/png;base64,{data}">',
        ]
    parts += _hops_table(report), _faults_table(report), _final_table(report)
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _num(v: float | None, digits: int = 3) -> str:
    return "" if v is None else f"{v:.{digits}f}"


_HOPS_LEFT = (0, 2, 3)
"""The hops table's text columns (hop, site, state), aligned left."""


def _head(title: str, head: tuple[str, ...], left: tuple[int, ...]) -> str:
    """A section title and the start of its table, with the header row."""
    return (
        f"<h2>{title}</h2><table><tr>"
        + "".join(
            f'<th class="{"l" if i in left else ""}">{escape(h)}</th>' for i, h in enumerate(head)
        )
        + "</tr>"
    )


def _row(cells: list[str], left: tuple[int, ...], *, failed: bool) -> str:
    """A table row of ``cells`` (escaped here); ``failed`` rows show in red."""
    css = ' class="failed"' if failed else ""
    return (
        f"<tr{css}>"
        + "".join(
            f'<td class="{"l" if i in left else ""}">{escape(c)}</td>' for i, c in enumerate(cells)
        )
        + "</tr>"
    )


def _hops_table(report: dict[str, Any]) -> str:
    metric = report["metric"]
    head = (
        "hop", "cycle", "site", "state", f"{metric} before", f"{metric} after", "wait s",
        "receive s", "train s", "send s", "total s", "examples", "bytes in", "bytes out",
    )  # fmt: skip
    rows = [_head("Hops", head, _HOPS_LEFT)]
    for h in report["hops"]:
        cells = [
            f"hop {h['hop']}",
            str(h["cycle"]),
            h["site"],
            h["state"] + (f": {h['error']}" if h["error"] else ""),
            _num(h["metrics_before"].get(metric)),
            _num(h["metrics_after"].get(metric)),
            _num(h.get("wait_seconds"), 2),
            _num(h.get("receive_seconds"), 2),
            _num(h["train_seconds"], 2),
            _num(h.get("send_seconds"), 2),
            _num(h["seconds"], 2),
            str(h["num_examples"]),
            str(h["bytes_in"]),
            str(h["bytes_out"]),
        ]
        rows.append(_row(cells, _HOPS_LEFT, failed=h["state"] == "failed"))
    rows.append(
        '</table><p class="note">wait: from the previous hop\'s end to this assignment; '
        "receive: the site picking the hop up, downloading, verifying and scoring the model; "
        "send: scoring the trained model, sealing and uploading it.</p>"
    )
    return "\n".join(rows)


def _faults_table(report: dict[str, Any]) -> str:
    """The fault policy's decisions (empty when there were none); dropped hops in red."""
    if not report["faults"]:
        return ""
    left = (2, 3, 4)
    rows = [_head("Fault decisions", ("hop", "cycle", "site", "action", "reason"), left)]
    for f in report["faults"]:
        cells = ["" if f[k] is None else str(f[k]) for k in ("hop", "cycle")]
        cells += [f["site"], f["action"], f["reason"]]
        rows.append(_row(cells, left, failed=f["action"] in LOST_HOP_ACTIONS))
    rows.append(
        '</table><p class="note">Hop numbers as planned when the decision was made: a skip or '
        "reroute drops that hop and plans the ones after it one place earlier; a reseal has "
        "the last completed hop's site seal its output again for the new recipient.</p>"
    )
    return "\n".join(rows)


def _final_table(report: dict[str, Any]) -> str:
    if not report["final_evaluation"]:
        return (
            '<h2>Final evaluation</h2><p class="note">The plan did not ask the sites to evaluate '
            "the final model (<code>evaluate_at_sites</code>).</p>"
        )
    metric = report["metric"]
    names = [metric] if metric == "loss" else [metric, "loss"]
    rows = [
        '<h2>Final evaluation</h2><table><tr><th class="l">site</th>'
        + "".join(f"<th>val {escape(n)}</th>" for n in names)
        + "<th>examples</th></tr>"
    ]
    for e in report["final_evaluation"]:
        m = e["metrics"]
        rows.append(
            f'<tr><td class="l">{escape(e["site"])}</td>'
            + "".join(f"<td>{_num(m.get(n))}</td>" for n in names)
            + f"<td>{m.get('num_examples', 0):.0f}</td></tr>"
        )
    rows.append(
        '</table><p class="note">A run plan carries no baselines; compare with '
        "<code>baton lab</code> for centralised and single-site baselines.</p>"
    )
    return "\n".join(rows)


def write_report_dir(report: dict[str, Any], out_dir: Path) -> list[Path]:
    """Writes ``report.json``, the plots (PNG) and ``report.html`` into ``out_dir`` (created
    if missing); returns the files written.

    Raises:
        ConfigError: ``out_dir`` cannot be created or written.
    """
    import json

    from baton.errors import ConfigError
    from baton.io import atomic_write
    from owner.report_plots import write_plots

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        data = out_dir / "report.json"
        atomic_write(data, json.dumps(report, indent=2, sort_keys=True) + "\n", mode=0o644)
        plots = write_plots(report, out_dir)
        page = out_dir / "report.html"
        atomic_write(page, render_html(report, plots), mode=0o644)
    except OSError as exc:
        raise ConfigError(
            f"cannot write the report into {out_dir}: {exc.strerror or exc}"
        ) from None
    return [data, *plots.values(), page]
