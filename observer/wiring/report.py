"""The demo's HTML report: one self-contained page with inline SVG line charts (no JS, no CDN).

`render_report(data)` is pure: it takes the JSON-able dict the demo also writes as data.json.
Keys used: scenario, seed, duration, speed, slo_ttft_seconds, samples (see `observer.wiring.demo`),
events, alerts, summary, prometheus.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from typing import Any

Point = tuple[float, float | None]
PALETTE = (
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#ff7f0e",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 1:
        return f"{v:.2f}".rstrip("0").rstrip(".")
    return f"{v:.3g}"


def line_chart(
    title: str,
    series: Mapping[str, Sequence[Point]],
    *,
    y_label: str = "",
    x_label: str = "simulated seconds",
    hlines: Sequence[tuple[float, str]] = (),
    markers: Sequence[tuple[float, str]] = (),
    width: int = 760,
    height: int = 260,
    y_min: float | None = 0.0,
) -> str:
    """An SVG line chart; a None y breaks the line. `markers` are labelled vertical lines."""
    left, right, top, bottom = 64, 150, 28, 40
    pw, ph = width - left - right, height - top - bottom
    xs = [x for pts in series.values() for x, _ in pts] + [x for x, _ in markers]
    ys = [y for pts in series.values() for _, y in pts if y is not None] + [v for v, _ in hlines]
    x0, x1 = (min(xs), max(xs)) if xs else (0.0, 1.0)
    lo = min(ys) if ys else 0.0
    y0 = min(lo, y_min) if y_min is not None else lo
    y1 = max(ys) if ys else 1.0
    if x1 <= x0:
        x1 = x0 + 1.0
    if y1 <= y0:
        y1 = y0 + 1.0
    y1 += (y1 - y0) * 0.05

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * pw

    def sy(y: float) -> float:
        return top + ph - (y - y0) / (y1 - y0) * ph

    out = [
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{html.escape(title)}">',
        f'<text x="{left}" y="16" class="title">{html.escape(title)}</text>',
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>',
    ]
    for i in range(5):
        yv = y0 + (y1 - y0) * i / 4
        yy = sy(yv)
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="#eee"/>')
        out.append(f'<text x="{left - 6}" y="{yy + 4:.1f}" text-anchor="end" class="tick">{_fmt(yv)}</text>')
        xv = x0 + (x1 - x0) * i / 4
        xx = sx(xv)
        out.append(
            f'<text x="{xx:.1f}" y="{top + ph + 16}" text-anchor="middle" class="tick">{_fmt(xv)}</text>'
        )
    out.append(
        f'<text x="{left + pw / 2:.1f}" y="{height - 6}" text-anchor="middle" class="axis">'
        f"{html.escape(x_label)}</text>"
    )
    if y_label:
        out.append(
            f'<text x="14" y="{top + ph / 2:.1f}" transform="rotate(-90 14 {top + ph / 2:.1f})" '
            f'text-anchor="middle" class="axis">{html.escape(y_label)}</text>'
        )
    for x, label in markers:
        xx = sx(x)
        out.append(
            f'<line class="marker" x1="{xx:.1f}" x2="{xx:.1f}" y1="{top}" y2="{top + ph}" '
            f'stroke="#888" stroke-dasharray="3,3"/>'
        )
        out.append(f'<text x="{xx + 3:.1f}" y="{top + 10}" class="tick">{html.escape(label)}</text>')
    for value, label in hlines:
        yy = sy(value)
        out.append(
            f'<line class="threshold" x1="{left}" x2="{left + pw}" y1="{yy:.1f}" y2="{yy:.1f}" '
            f'stroke="#d00" stroke-dasharray="6,4"/>'
        )
        out.append(
            f'<text x="{left + pw - 4}" y="{yy - 4:.1f}" text-anchor="end" class="tick">'
            f"{html.escape(label)}</text>"
        )
    for i, (name, pts) in enumerate(series.items()):
        color = PALETTE[i % len(PALETTE)]
        runs: list[list[str]] = [[]]
        for x, y in pts:
            if y is None:
                if runs[-1]:
                    runs.append([])
                continue
            runs[-1].append(f"{sx(x):.1f},{sy(y):.1f}")
        for run in runs:
            if len(run) == 1:
                cx, cy = run[0].split(",")
                out.append(f'<circle cx="{cx}" cy="{cy}" r="2" fill="{color}"/>')
            elif run:
                out.append(
                    f'<polyline fill="none" stroke="{color}" stroke-width="1.6" points="{" ".join(run)}"/>'
                )
        ly = top + 12 + i * 15
        out.append(
            f'<rect x="{left + pw + 10}" y="{ly - 8}" width="10" height="10" fill="{color}"/>'
            f'<text x="{left + pw + 24}" y="{ly + 1}" class="legend">{html.escape(name)}</text>'
        )
    out.append("</svg>")
    return "".join(out)


def _series(samples: Sequence[Mapping[str, Any]], pick: str) -> dict[str, list[Point]]:
    """Per-tenant series of one tenant field over the samples (None where the tenant was absent)."""
    names = sorted({t["tenant"] for s in samples for t in s.get("tenants", [])})
    out: dict[str, list[Point]] = {n: [] for n in names}
    for s in samples:
        rows = {t["tenant"]: t for t in s.get("tenants", [])}
        for n in names:
            row = rows.get(n)
            out[n].append((s["elapsed"], None if row is None else row.get(pick)))
    return out


def charts(data: Mapping[str, Any]) -> dict[str, str]:
    """Chart id -> SVG."""
    samples: Sequence[Mapping[str, Any]] = data.get("samples", [])
    phases = [(e["elapsed"], e["text"]) for e in data.get("events", []) if e.get("kind") == "phase"]
    load = {"completed req/s": [(s["elapsed"], s["rps"]) for s in samples]}
    roles = sorted({p["role"] for s in samples for p in s.get("pools", [])})
    replicas: dict[str, list[Point]] = {f"{r} {k}": [] for r in roles for k in ("ready", "desired")}
    for s in samples:
        pools = {p["role"]: p for p in s.get("pools", [])}
        for r in roles:
            for k in ("ready", "desired"):
                replicas[f"{r} {k}"].append((s["elapsed"], pools[r].get(k) if r in pools else None))
    slo = data.get("slo_ttft_seconds")
    hl = [(float(slo), f"SLO {slo:g} s")] if slo else []
    alert_rows: dict[str, list[Point]] = {}
    for a in data.get("alerts", []):
        alert_rows.setdefault(a["name"], []).append((a["elapsed"], 1.0 if a["state"] == "firing" else 0.5))
    event_rows: dict[str, list[Point]] = {}
    for e in data.get("events", []):
        if e.get("kind") != "phase":
            event_rows.setdefault(f"event: {e['kind']}", []).append((e["elapsed"], 0.25))
    timeline = {**alert_rows, **event_rows}
    # each alert/event is a short run of dots: break lines between separate occurrences
    dotted = {k: [p for pt in v for p in (pt, (pt[0], None))] for k, v in timeline.items()}
    return {
        "load": line_chart("Load (completed requests per second)", load, y_label="req/s", markers=phases),
        "replicas": line_chart("Replicas per role", replicas, y_label="pods", markers=phases),
        "ttft": line_chart(
            "TTFT p90 per tenant vs SLO (observer, 60 s window)",
            _series(samples, "ttft_p90"),
            y_label="seconds",
            hlines=hl,
            markers=phases,
        ),
        "hit_rate": line_chart(
            "Prefix-cache hit rate per tenant (observer, 60 s window)",
            _series(samples, "hit_rate"),
            y_label="cached / prompt tokens",
            markers=phases,
        ),
        "alerts": line_chart(
            "Alerts (firing = 1, pending = 0.5) and fleet events",
            dotted or {"(none)": []},
            y_label="",
            markers=phases,
            y_min=0.0,
        ),
    }


_CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:20px} h2{font-size:16px;margin-top:28px}
table{border-collapse:collapse;font-size:13px} td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f4f4f4} td:first-child,th:first-child{text-align:left}
.chart text{font-size:11px} .chart .title{font-size:13px;font-weight:600} .muted{color:#777}
"""


def _table(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label in columns)
    body = []
    for r in rows:
        cells = []
        for key, _ in columns:
            v = r.get(key)
            if isinstance(v, float):
                v = f"{v:.3f}"
            cells.append(f"<td>{html.escape('—' if v is None else str(v))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def render_report(data: Mapping[str, Any]) -> str:
    """The whole report page."""
    title = f"pd-observer demo — {data.get('scenario', '?')}"
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<p class='muted'>"
        + html.escape(
            f"seed {data.get('seed')} · {data.get('duration')} simulated s at {data.get('speed')}× · "
            f"{len(data.get('samples', []))} samples · generated {data.get('generated_at', '')}"
        )
        + "</p>",
    ]
    summary = data.get("summary", {})
    rows = summary.get("tenants", [])
    if rows:
        parts.append("<h2>Per tenant (observer API, whole run)</h2>")
        parts.append(
            _table(
                rows,
                [
                    ("tenant", "tenant"),
                    ("requests", "requests"),
                    ("hit_rate", "hit rate"),
                    ("hbm_share", "HBM share"),
                    ("dram_share", "DRAM share"),
                    ("disk_share", "disk share"),
                    ("ttft_p50", "TTFT p50 s"),
                    ("ttft_p90", "TTFT p90 s"),
                    ("ttft_p99", "TTFT p99 s"),
                    ("slo_attainment", "TTFT SLO attainment"),
                ],
            )
        )
    for cid, svg in charts(data).items():
        parts.append(f"<h2 id='{cid}'>{html.escape(cid.replace('_', ' ').title())}</h2>{svg}")
    auto = data.get("autoscaler") or {}
    if auto.get("enabled"):
        rows = auto.get("decisions", [])
        parts.append(
            f"<h2 id='decisions'>Autoscaler decisions that changed the fleet ({len(rows)}, "
            f"mode {html.escape(str(auto.get('mode')))})</h2>"
        )
        if rows:
            parts.append(
                _table(
                    rows, [("elapsed", "sim s"), ("pool", "pool"), ("text", "change (reasons)"), ("ok", "ok")]
                )
            )
    prom = data.get("prometheus")
    if prom:
        parts.append("<h2>Prometheus and Alertmanager</h2><pre>")
        parts.append(html.escape(json.dumps(prom, indent=2, sort_keys=True)))
        parts.append("</pre>")
    notes = data.get("alert_notifications", [])
    parts.append(f"<h2>Alert notifications received by the demo webhook ({len(notes)})</h2>")
    if notes:
        parts.append(_table(notes, [("elapsed", "sim s"), ("status", "status"), ("alerts", "alerts")]))
    parts.append("</body></html>")
    return "".join(parts)
