"""Render and export: deterministic JSON, provider YAML, ConfigMaps, the HTTP API bodies."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from dashboards.export import (
    CONFIGMAPS_FILE,
    PROVISIONING_FILE,
    dashboard_json,
    dashboards_index,
    export,
    render_all,
)
from dashboards.generate import GENERATED_MARKER
from dashboards.render import YAML_HEADER
from observer import conventions as c
from observer.config import Settings, load_settings


def test_rendering_is_deterministic_and_marked(golden_settings: Settings) -> None:
    first = render_all(golden_settings)
    second = render_all(golden_settings)
    assert first == second
    for name, text in first.items():
        if name.endswith(".json"):
            assert GENERATED_MARKER in json.loads(text)["description"]
            assert text == json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        else:
            assert text.startswith(YAML_HEADER)
            assert "do not edit" in text.splitlines()[0]


def test_export_writes_every_file(tmp_path: Path, golden_settings: Settings) -> None:
    paths = export(tmp_path / "out", golden_settings)
    names = {p.relative_to(tmp_path / "out").as_posix() for p in paths}
    assert names == {f"{u}.json" for u in c.DASHBOARD_UIDS} | {PROVISIONING_FILE, CONFIGMAPS_FILE}
    for p in paths:
        assert (
            p.read_text(encoding="utf-8")
            == render_all(golden_settings)[p.relative_to(tmp_path / "out").as_posix()]
        )
    for uid in c.DASHBOARD_UIDS:
        assert json.loads((tmp_path / "out" / f"{uid}.json").read_text())["uid"] == uid


def test_provisioning_provider_points_at_the_files(golden_settings: Settings) -> None:
    doc = yaml.safe_load(render_all(golden_settings)[PROVISIONING_FILE])
    assert doc["apiVersion"] == 1
    (provider,) = doc["providers"]
    assert provider["type"] == "file"
    assert provider["folder"] == "LLM serving"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards/llm"


def test_configmaps_are_labelled_for_the_grafana_sidecar(golden_settings: Settings) -> None:
    files = render_all(golden_settings)
    docs = list(yaml.safe_load_all(files[CONFIGMAPS_FILE]))
    assert [d["metadata"]["name"] for d in docs] == list(c.DASHBOARD_UIDS)
    for d in docs:
        assert d["kind"] == "ConfigMap"
        assert d["apiVersion"] == "v1"
        md = d["metadata"]
        assert md["labels"][c.GRAFANA_DASHBOARD_LABEL] == "1"
        assert md["labels"]["team"] == "sre"
        assert md["namespace"] == "monitoring"
        assert md["annotations"][c.GRAFANA_FOLDER_ANNOTATION] == "LLM serving"
        ((key, body),) = d["data"].items()
        assert key == f"{md['name']}.json"
        assert body == files[key]  # same bytes as the file export
    assert len(files[CONFIGMAPS_FILE].encode()) < 1024 * 1024  # ConfigMap size limit


def test_api_index_and_one_dashboard() -> None:
    settings = load_settings(env={})
    index = dashboards_index(settings)
    assert [d["uid"] for d in index] == list(c.DASHBOARD_UIDS)
    assert all(d["title"] and d["panels"] >= 5 and "pd-observer" in d["tags"] for d in index)
    body = dashboard_json(c.DASHBOARD_UID_TENANTS, settings)
    assert body is not None
    assert body["uid"] == c.DASHBOARD_UID_TENANTS
    assert json.loads(json.dumps(body)) == body
    assert dashboard_json("no-such-dashboard", settings) is None
    assert dashboards_index() == index  # defaults when the caller has no settings
