"""Structure of the generated dashboards: variables, datasources, targets, ids, names."""

from __future__ import annotations

import re
from typing import Any

import pytest

from dashboards import queries as q
from dashboards.generate import GENERATED_MARKER, generate
from dashboards.render import dashboard_dict
from observer import conventions as c
from observer.config import ConfigError, Settings, load_settings
from tests.dashboards.conftest import all_exprs, panels

DS_UID = "${" + q.VAR_DATASOURCE + "}"
REQUIRED_VARS = {q.VAR_DATASOURCE, q.VAR_NAMESPACE, q.VAR_POOL, q.VAR_MODEL, q.VAR_TENANT}


def test_the_five_dashboards_in_order(dashboard_dicts: dict[str, dict[str, Any]]) -> None:
    assert tuple(dashboard_dicts) == c.DASHBOARD_UIDS
    for uid, d in dashboard_dicts.items():
        assert d["uid"] == uid
        assert GENERATED_MARKER in d["description"]


def test_every_dashboard_has_the_template_variables(dashboard_dicts: dict[str, dict[str, Any]]) -> None:
    for uid, d in dashboard_dicts.items():
        variables = {v["name"]: v for v in d["templating"]["list"]}
        assert set(variables) >= REQUIRED_VARS, uid
        assert variables[q.VAR_DATASOURCE]["type"] == "datasource"
        assert variables[q.VAR_DATASOURCE]["query"] == "prometheus"
        for name in (q.VAR_NAMESPACE, q.VAR_POOL, q.VAR_MODEL, q.VAR_TENANT):
            v = variables[name]
            assert v["type"] == "query"
            assert v["datasource"]["uid"] == DS_UID
            assert v["includeAll"] is True
            assert v["multi"] is True
            assert v["allValue"] == ".*"
            assert "current" not in v or not v["current"], f"{uid}: {name} pinned to one deployment"


def test_every_panel_reads_the_datasource_variable_and_has_targets(
    dashboard_dicts: dict[str, dict[str, Any]],
) -> None:
    for uid, d in dashboard_dicts.items():
        ps = panels(d)
        assert len(ps) >= 5, uid
        ids = [p["id"] for p in d["panels"]]
        assert len(ids) == len(set(ids)), uid
        assert all(i > 0 for i in ids), uid
        for p in ps:
            where = f"{uid}/{p['title']}"
            assert p["datasource"] == {"type": "prometheus", "uid": DS_UID}, where
            assert p["targets"], where
            ref_ids = [t["refId"] for t in p["targets"]]
            assert len(ref_ids) == len(set(ref_ids)), where
            for t in p["targets"]:
                assert t["expr"].strip(), where
                assert t["datasource"]["uid"] == DS_UID, where
        for a in d.get("annotations", {}).get("list", []):
            assert a["datasource"]["uid"] == DS_UID


def test_panels_do_not_overlap(dashboard_dicts: dict[str, dict[str, Any]]) -> None:
    for uid, d in dashboard_dicts.items():
        cells: set[tuple[int, int]] = set()
        for p in d["panels"]:
            g = p["gridPos"]
            assert g["x"] + g["w"] <= 24, uid
            mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
            assert not (cells & mine), f"{uid}: {p['title']} overlaps"
            cells |= mine


def test_nothing_is_hard_coded_to_one_deployment(dashboard_dicts: dict[str, dict[str, Any]]) -> None:
    """namespace/pool/model/tenant (and the EPP/vLLM spellings) are only ever matched by variable."""
    scoped = (
        c.PROM_LABEL_NAMESPACE,
        c.LABEL_POOL,
        c.LABEL_MODEL,
        c.LABEL_TENANT,
        c.VLLM_LABEL_MODEL,
        c.EPP_LABEL_POOL,
        c.EPP_LABEL_FAIRNESS,
    )
    matcher = re.compile(r"\b(" + "|".join(scoped) + r')\s*(=~|!~|!=|=)\s*"([^"]*)"')
    exprs = all_exprs(dashboard_dicts)
    seen = set()
    for e in exprs:
        for label, _op, value in matcher.findall(e.expr):
            assert re.fullmatch(r"\$\w+", value), f"{e.uid} {e.where}: {label} hard-coded to {value!r}"
            seen.add(label)
    assert {c.PROM_LABEL_NAMESPACE, c.LABEL_POOL, c.LABEL_TENANT, c.EPP_LABEL_FAIRNESS} <= seen


def test_metric_names_come_from_conventions(dashboard_dicts: dict[str, dict[str, Any]]) -> None:
    """Every pd_observer_* / vllm: / llm_d_epp_ name in a query is one conventions.py defines."""
    known = {v for v in vars(c).values() if isinstance(v, str)}
    known |= {n for gen in c.EPP_GENERATIONS.values() for n in gen.values()}
    names = re.compile(
        r"\b(pd_observer[_:][a-z0-9_:]+|vllm:[a-z0-9_]+|lmcache:[a-z0-9_]+|llm_d_epp_[a-z0-9_]+)"
    )
    for e in all_exprs(dashboard_dicts):
        for n in names.findall(e.expr):
            base = n
            for suffix in ("_bucket", c.COUNTER_SUFFIX):
                if base not in known:
                    base = base.removesuffix(suffix)
            record = any(n == c.slo_error_ratio_record(w) for w in ("5m", "30m", "1h"))
            assert base in known or record, f"{e.uid} {e.where}: unknown metric {n}"


def test_latency_slo_thresholds_are_drawn(dashboard_dicts: dict[str, dict[str, Any]]) -> None:
    d = dashboard_dicts[c.DASHBOARD_UID_TENANTS]
    ttft = next(p for p in panels(d) if p["title"].startswith("TTFT vs SLO"))
    exprs = [t["expr"] for t in ttft["targets"]]
    assert "vector(2)" in exprs  # default SLO ttft-2s
    itl = next(p for p in panels(d) if p["title"].startswith("ITL vs SLO"))
    assert "vector(0.1)" in [t["expr"] for t in itl["targets"]]


def test_annotations_mark_cascades_and_decisions(dashboard_dicts: dict[str, dict[str, Any]]) -> None:
    kv = dashboard_dicts[c.DASHBOARD_UID_KV_TIERS]["annotations"]["list"]
    assert any(c.M_CASCADE in a["expr"] for a in kv)
    auto = dashboard_dicts[c.DASHBOARD_UID_AUTOSCALER]["annotations"]["list"]
    assert any(c.M_DESIRED_REPLICAS in a["expr"] and "{{role}}" in a["textFormat"] for a in auto)


def test_settings_change_the_output(golden_settings: Settings) -> None:
    gens = {g.uid: dashboard_dict(g.model) for g in generate(golden_settings)}
    fleet = gens[c.DASHBOARD_UID_FLEET]
    assert fleet["refresh"] == "1m"
    assert fleet["time"]["from"] == "now-6h"
    assert fleet["tags"] == ["pd-observer", "llm"]
    ds = next(v for v in fleet["templating"]["list"] if v["name"] == q.VAR_DATASOURCE)
    assert ds["regex"] == "/prom.*/"
    recorded = next(p for p in panels(fleet) if p["title"].startswith("Burn rate from"))
    assert len(recorded["targets"]) == 3
    tenants = gens[c.DASHBOARD_UID_TENANTS]
    assert any(p["title"] == "Top 5 tenants by cache misses" for p in panels(tenants))
    ttft = next(p for p in panels(tenants) if p["title"].startswith("TTFT vs SLO"))
    assert {"vector(2)", "vector(0.5)"} <= {t["expr"] for t in ttft["targets"]}


@pytest.mark.parametrize(
    ("section", "field"),
    [
        ({"refresh": "soon"}, "refresh"),
        ({"burn_windows": ["5 minutes"]}, "burn_windows"),
        ({"burn_windows": ["5m\n"]}, "burn_windows"),  # re.match("...$") let a final newline through
        ({"top_tenants": 0}, "top_tenants"),
        ({"nope": 1}, "nope"),
    ],
)
def test_bad_settings_are_one_clear_error(section: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=rf"dashboards\.{field}"):
        generate(load_settings(overrides={"dashboards": section}, env={}))
