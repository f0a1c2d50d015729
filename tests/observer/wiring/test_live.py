"""The live view: rich rendering on a TTY, plain lines otherwise."""

from __future__ import annotations

import io

from rich.console import Console

from observer.wiring.live import LiveView, log_line, render

SAMPLE = {
    "scenario": "story",
    "phase": "prefill-burst",
    "elapsed": 120.0,
    "rps": 7.5,
    "tenants": [
        {
            "tenant": "tenant-a",
            "requests": 9,
            "hit_rate": 0.9,
            "tier_shares": {"hbm": 0.4, "dram": 0.6},
            "ttft_p90": 3.5,
        },
        {"tenant": "tenant-c", "requests": 40, "hit_rate": 0.7, "tier_shares": {"hbm": 1.0}, "ttft_p90": 0.1},
    ],
    "pools": [
        {
            "role": "decode",
            "ready": 6,
            "starting": 0,
            "draining": 0,
            "waiting": 0,
            "kv_usage": 0.2,
            "busy": 0.3,
            "starved": True,
        },
        {
            "role": "prefill",
            "ready": 2,
            "starting": 1,
            "draining": 0,
            "waiting": 14,
            "kv_usage": 0.5,
            "busy": 1.0,
            "starved": False,
        },
    ],
}


def test_render_shows_tenants_vs_slo_pools_and_events() -> None:
    buf = io.StringIO()
    Console(file=buf, width=160).print(render(SAMPLE, 2.0, ["t=+100s phase: prefill-burst"]))
    text = buf.getvalue()
    assert "tenant-a" in text
    assert "OVER" in text  # 3.5 s > 2 s SLO
    assert "60%" in text  # DRAM share of tenant-a
    assert "YES" in text  # decode starvation flag
    assert "prefill-burst" in text


def test_non_interactive_prints_plain_lines_at_most_every_interval() -> None:
    buf = io.StringIO()
    with LiveView(slo=2.0, interactive=False, stream=buf, log_every_seconds=3600) as view:
        view.update(SAMPLE)
        view.update(SAMPLE)  # throttled
        view.event("scale role=decode n=8")
    lines = buf.getvalue().splitlines()
    assert lines == [log_line(SAMPLE, 2.0), "[demo] scale role=decode n=8"]
    assert "over_slo=1" in lines[0]
    assert "decode=6!starved" in lines[0]
