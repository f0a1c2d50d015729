"""Kubernetes names in the settings: refused at load when the API server would refuse them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from observer.cli import section_parsers
from observer.config import ConfigError, load_settings
from observer.k8snames import config_key, labels, namespace, object_name


@pytest.mark.parametrize("good", ["default", "llm-d", "a", "a" * 63, "ns1"])
def test_namespaces_the_api_server_takes(good: str) -> None:
    assert namespace(good) == good


@pytest.mark.parametrize("bad", ["", "Default", "my_ns", "a/b", "-a", "a-", "a.b", "a" * 64, "ns\n"])
def test_namespaces_it_refuses(bad: str) -> None:
    with pytest.raises(ValueError, match="not a Kubernetes namespace"):
        namespace(bad)


def test_object_names_config_keys_and_labels() -> None:
    assert object_name("vllm-prefill.v2") == "vllm-prefill.v2"
    for bad in ("", "Prefill", "a_b", "a/b", "a..b", "x" * 254):
        with pytest.raises(ValueError, match="not a Kubernetes object name"):
            object_name(bad)
    assert config_key("config.yaml") == "config.yaml"
    for bad in ("", "a/b", "a b"):
        with pytest.raises(ValueError, match="not a ConfigMap key"):
            config_key(bad)
    ok = {"app.kubernetes.io/name": "pd-observer", "team": "", "release": "v1.2_x"}
    assert labels(ok) == ok
    for bad_key in ("/x", "Bad.Prefix/x", "x/", "-x", "a" * 64):
        with pytest.raises(ValueError, match="label key"):
            labels({bad_key: "v"})
    with pytest.raises(ValueError, match="not a Kubernetes label value"):
        labels({"team": "a b"})


@pytest.mark.parametrize(
    ("section", "field"),
    [
        (
            {
                "autoscaler": {
                    "pools": [
                        {
                            "name": "p",
                            "prefill": {"target": {"name": "Prefill_Deploy"}},
                            "decode": {"target": {"name": "decode"}},
                        }
                    ]
                }
            },
            "name",
        ),
        ({"dashboards": {"configmap_namespace": "Monitoring"}}, "configmap_namespace"),
        ({"alerts": {"prometheus_rule_labels": {"release": "kube prometheus"}}}, "prometheus_rule_labels"),
        ({"sources": {"kubernetes": {"namespace": "llm_d"}}}, "namespace"),
    ],
)
def test_a_name_the_api_server_would_refuse_fails_at_load(
    tmp_path: Path, section: dict[str, Any], field: str
) -> None:
    # before: a 404/422 from the autoscaler's loop, or a manifest `kubectl apply` refused
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(section))
    with pytest.raises(ConfigError) as err:
        load_settings(cfg, env={}, sections=section_parsers())
    assert "\n" not in str(err.value)
    assert field in str(err.value)
    assert "Kubernetes" in str(err.value)
