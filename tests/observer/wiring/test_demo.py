"""`pd-observer demo`'s settings: the user's `--config` with the demo's own address, store and
alert routing (docs/demo.md: every receiver replaced by the demo webhook)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from alerts.export import export
from observer.wiring.demo import demo_settings

CONFIG = """\
alerts:
  receivers:
    oncall: {webhook_url: http://pager.example/hook}
    tickets: {webhook_url: http://tickets.example/hook}
  default_receiver: oncall
  page_receiver: oncall
  ticket_receiver: tickets
  teams:
    serving: {pools: [llama-8b], tenants: [tenant-a], receiver: oncall, ticket_receiver: tickets}
  group_wait: 1s
"""


def test_every_alert_of_the_demo_goes_to_its_webhook_never_to_the_configs_receivers(tmp_path: Path) -> None:
    cfg = tmp_path / "observer.yaml"
    cfg.write_text(CONFIG)
    hook = "http://127.0.0.1:9/alerts"
    settings = demo_settings(cfg, host="127.0.0.1", port=18080, db=tmp_path / "d.db", webhook=hook)
    assert (settings.server.host, settings.server.port) == ("127.0.0.1", 18080)
    assert settings.store.url == f"sqlite:///{tmp_path / 'd.db'}"
    export(tmp_path / "alerts", settings)
    am = yaml.safe_load((tmp_path / "alerts" / "alertmanager.yml").read_text())
    urls = [w["url"] for r in am["receivers"] for w in r.get("webhook_configs", [])]
    assert urls == [hook]  # the twin's pool and tenant are the team's: they must not page it

    def receivers(route: dict[str, Any]) -> set[str]:
        return {route["receiver"]}.union(*(receivers(r) for r in route.get("routes", [])))

    assert receivers(am["route"]) == {"demo"}
    assert am["route"]["group_wait"] == "1s"  # the rest of the section is the config's
