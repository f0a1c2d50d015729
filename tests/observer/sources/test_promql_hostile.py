"""Hostile values on the way to Prometheus: `promql.quote` against a real Prometheus, and the
`sources.prometheus` settings that name labels or a namespace in every query."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from observer.cli import section_parsers
from observer.config import ConfigError, load_settings
from observer.sources import promql
from tests.support.procs import Prometheus, run_prometheus

pytestmark = pytest.mark.prometheus

HOSTILE = [
    '"',
    "\\",
    "}",
    "{",
    ",",
    "=~",
    "\n",
    "\r\n\t",
    "$",
    "{{ $labels.x }}",
    "%s%n",
    ".*",
    "a|b",
    "(",
    "\x00\x01\x7f\x85\u2028\u2029",
    "\u200f\u202e rtl",
    "\U0001f600 non-BMP",
    "",
    'a"} or vector(7) or up{pod="',
    "\\u0041 \\x41 \\101",  # escape sequences as text: must stay text
    "x" * 20_000,
]


@pytest.fixture(scope="module")
def prom() -> Iterator[Prometheus]:
    with run_prometheus("global: {scrape_interval: 1s}\nscrape_configs: []\n") as p:
        yield p


@pytest.mark.parametrize("value", HOSTILE, ids=range(len(HOSTILE)))
def test_quote_gives_prometheus_exactly_the_value(prom: Prometheus, value: str) -> None:
    """Prometheus parses the literal `quote` builds back into the very same string, so an `=`
    matcher built with it matches exactly that value. The probe: `label_join` uses its separator
    as given (`label_replace` would expand `$labels` in its replacement)."""
    a = 'label_replace(vector(1), "a", "<", "", "")'
    rows = prom.query(f'label_join({a}, "v", {promql.quote(value)}, "a", "a")')
    assert len(rows) == 1
    assert rows[0]["metric"]["v"] == f"<{value}<"


def test_a_hostile_value_cannot_widen_a_selector(prom: Prometheus) -> None:
    for value in HOSTILE:
        q = promql.selector("up", {"job": value})
        assert prom.query(q) == [], q


def _load(tmp_path: Path, prometheus: dict[str, object]) -> None:
    path = tmp_path / "c.yaml"
    data = {"sources": {"metrics": "prometheus", "prometheus": prometheus}}
    # double-quoted, every non-ASCII character escaped: each survives the config file itself
    path.write_text(yaml.safe_dump(data, default_style='"', allow_unicode=False, width=10**6))
    load_settings(path, env={}, sections=section_parsers())


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("pod_label", "pod-name"),
        ("namespace_label", "k8s.namespace"),
        ("role_label", "llm-d.ai/role"),  # the discovery's role label, not a Prometheus one
        ("pool_label", "pool\n"),
        ("pod_label", ""),
        ("pod_label", 'pod"}'),
        ("namespace", "ns\ud800"),  # a lone surrogate cannot be sent
    ],
)
def test_prometheus_source_settings_refuse_what_no_query_can_use(
    tmp_path: Path, field: str, value: str
) -> None:
    """Before, these loaded, and every read of the Prometheus source failed once vLLM series
    existed (`ok=False`, "ValueError: invalid label name 'pod-name'", or a UnicodeEncodeError):
    no pod had data, and PdObserverBlind paged. Now: one line naming the field."""
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, {field: value})
    assert f"sources.prometheus.{field}:" in str(err.value)
    assert "\n" not in str(err.value)


def test_prometheus_source_settings_keep_valid_names(tmp_path: Path) -> None:
    _load(
        tmp_path,
        {
            "pod_label": "kubernetes_pod_name",
            "namespace_label": "_ns",
            "role_label": "llm_d_role",
            "pool_label": "pool",
            "namespace": 'prod "a" \\ {x}\n\u200f\U0001f600',  # any text: quoted into the queries
        },
    )
