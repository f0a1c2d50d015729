"""Settings: defaults, precedence, cross-field validation, and the documented reference."""

from __future__ import annotations

from pathlib import Path

import pytest

from observer.config import ConfigError, load_settings, settings_reference

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_defaults_load_and_match_the_contract() -> None:
    s = load_settings(None, env={})
    assert s.server.port == 8080
    assert s.aggregation.windows_seconds == (60, 300, 3600)
    assert s.aggregation.max_tenants == 1000
    assert s.store.url.startswith("sqlite:///")
    assert {x.name for x in s.slos} == {"ttft-2s", "itl-100ms", "availability"}


def test_env_beats_the_file(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("server:\n  port: 9000\n  ingest_queue_size: 7\n")
    s = load_settings(f, env={"PD_OBSERVER_SERVER__PORT": "9100"})
    assert s.server.port == 9100
    assert s.server.ingest_queue_size == 7


def test_overrides_beat_env_which_beats_the_file(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("server:\n  port: 9000\n  host: 10.0.0.1\n  ingest_queue_size: 7\n")
    env = {"PD_OBSERVER_SERVER__PORT": "9100", "PD_OBSERVER_SERVER__HOST": "10.0.0.2"}
    s = load_settings(f, overrides={"server": {"port": 9200}}, env=env)
    assert s.server.port == 9200  # the flag
    assert s.server.host == "10.0.0.2"  # the env var (no flag)
    assert s.server.ingest_queue_size == 7  # the file (neither)
    # an override applies to this call only
    assert load_settings(f, env=env).server.port == 9100


@pytest.mark.parametrize(
    ("yaml_text", "field"),
    [
        ("store:\n  record_retention_seconds: 60\n", "record_retention_seconds"),
        ("slos:\n  - {name: a, sli: ttft, objective: 0.9}\n", "threshold_seconds"),
        ("slos:\n  - {name: a, sli: error, objective: 0.9, threshold_seconds: 1}\n", "no threshold"),
        (
            "slos:\n  - {name: a, sli: error, objective: 0.9}\n  - {name: a, sli: error, objective: 0.9}\n",
            "duplicate",
        ),
        ("aggregation:\n  fine_bucket_seconds: 7\n", "multiple"),
        ("slos:\n  - {name: a, sli: ttft, objective: 0.9, threshold_seconds: .inf}\n", "finite"),
        ("slos:\n  - {name: a, sli: error, objective: .nan}\n", "finite"),
        ('slos:\n  - {name: a, sli: error, objective: 0.9, description: "a\\0b"}\n', "NUL"),
        (
            "slos:\n" + "".join(f"  - {{name: s{i}, sli: error, objective: 0.9}}\n" for i in range(101)),
            "at most 100 SLOs",
        ),
        ("- a list\n", "mapping"),
        ("server: [unclosed\n", "YAML"),
    ],
)
def test_invalid_config_is_one_clear_line(tmp_path: Path, yaml_text: str, field: str) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(yaml_text)
    with pytest.raises(ConfigError) as exc:
        load_settings(f, env={})
    msg = str(exc.value)
    assert "\n" not in msg
    assert field in msg


def test_configuration_doc_lists_every_setting_with_its_default() -> None:
    assert settings_reference() in DOC.read_text(), (
        "docs/configuration.md is stale: regenerate its table with observer.config.settings_reference()"
    )


@pytest.mark.parametrize(
    "yaml_text",
    [
        "server:\n  port: true\n",  # was port 1
        "server:\n  max_body_bytes: false\n",  # was 0 → refused by gt=0, but as a number
        "aggregation:\n  windows_seconds: [60, true]\n",
        "slos:\n  - {name: a, sli: ttft, objective: 0.9, threshold_seconds: true}\n",  # was 1 s
    ],
)
def test_true_or_false_is_not_a_number(tmp_path: Path, yaml_text: str) -> None:
    # pydantic's lax mode reads a YAML boolean as 1 or 0 in a number field
    f = tmp_path / "bad.yaml"
    f.write_text(yaml_text)
    with pytest.raises(ConfigError, match="not true/false"):
        load_settings(f, env={})


def test_true_or_false_is_not_a_number_in_any_section() -> None:
    from pydantic import ValidationError

    from autoscaler.settings import parse
    from observer.signals.settings import SignalsSettings
    from observer.sources.settings import SourcesSettings

    with pytest.raises(ValidationError, match="not true/false"):
        SourcesSettings.model_validate({"scrape": {"timeout_seconds": True}})
    with pytest.raises(ValidationError, match="not true/false"):
        SignalsSettings.model_validate({"cascade": {"min_requests": True}})
    with pytest.raises(ConfigError, match="not true/false"):
        parse({"interval_seconds": True})
    # booleans stay booleans, and numbers from the environment are still strings to convert
    assert SignalsSettings.model_validate({"enabled": "false"}).enabled is False
    assert load_settings(None, env={"PD_OBSERVER_SERVER__PORT": "9090"}).server.port == 9090
