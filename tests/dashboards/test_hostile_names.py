"""Hostile values from the `dashboards` settings: the files hold exactly what was configured.

Tags, folder and the datasource regex are free text that ends up in the dashboard JSON, the
provisioning YAML and the ConfigMaps. A YAML line break other than "\\n" (NEL U+0085, LS, PS, CR)
in a value was written raw into a literal block, and read back (by PyYAML, as by any YAML 1.1
reader) as a newline: the dashboard JSON inside the ConfigMaps no longer parsed ("Invalid control
character"), the provider's folder changed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from dashboards.export import CONFIGMAPS_FILE, PROVISIONING_FILE, export
from observer.config import load_settings

HOSTILE = [
    "pd\x85x",
    "a\x85\nb",
    "l\u2028s\u2029p",
    "c\rr",
    '"quoted" \\ {{ $labels.x }} ${__all_variables} %s',
    "\u202ertl \u200f\U0001f600",
    "x" * 5000,
]


@pytest.mark.parametrize("text", HOSTILE, ids=range(len(HOSTILE)))
def test_configmaps_and_provisioning_hold_exactly_the_values(tmp_path: Path, text: str) -> None:
    cfg = tmp_path / "c.yaml"
    # double-quoted, every non-ASCII character escaped: each survives the config file itself
    section = {"tags": [text], "folder": text, "datasource_regex": text}
    cfg.write_text(
        yaml.safe_dump({"dashboards": section}, default_style='"', allow_unicode=False, width=10**6)
    )
    settings = load_settings(cfg, env={})
    assert settings.dashboards == section
    out = tmp_path / "out"
    export(out, settings)
    files: dict[str, Any] = {p.name: json.loads(p.read_text("utf-8")) for p in out.glob("*.json")}
    assert len(files) == 5
    for doc in yaml.safe_load_all((out / CONFIGMAPS_FILE).read_text("utf-8")):
        ((name, body),) = doc["data"].items()
        assert json.loads(body) == files[name]  # was: Invalid control character (NEL read as "\n")
        assert files[name]["tags"] == [text]
        assert doc["metadata"]["annotations"]["grafana_folder"] == text
    provider = yaml.safe_load((out / PROVISIONING_FILE).read_text("utf-8"))["providers"][0]
    assert provider["folder"] == text


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"burn_windows": ["5m5m"]}, "is not a duration"),  # a PromQL range: every burn panel broke
        ({"burn_windows": ["0s"]}, "longer than 0"),
        ({"top_tenants": True}, "not true/false"),  # was 1
    ],
)
def test_values_no_query_can_use_are_refused(tmp_path: Path, section: dict[str, Any], message: str) -> None:
    from dashboards.settings import parse_dashboards_settings
    from observer.config import ConfigError

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"dashboards": section}))
    with pytest.raises(ConfigError, match=message):
        parse_dashboards_settings(load_settings(cfg, env={}))
