"""Golden files: the rendered outputs are byte-for-byte stable.

To accept an intended change, regenerate the goldens and review the diff:
    PD_OBSERVER_UPDATE_GOLDENS=1 .venv/bin/pytest tests/alerts/test_golden.py
"""

from __future__ import annotations

import os

import pytest

from alerts.export import ALERTMANAGER_FILE, PROMETHEUS_RULE_FILE, RULES_FILE, render_all
from alerts.render import HEADER
from observer.config import Settings
from tests.alerts.conftest import GOLDEN

UPDATE_ENV = "PD_OBSERVER_UPDATE_GOLDENS"


@pytest.mark.parametrize("name", [RULES_FILE, PROMETHEUS_RULE_FILE, ALERTMANAGER_FILE])
def test_rendered_output_matches_golden(golden_settings: Settings, name: str) -> None:
    text = render_all(golden_settings)[name]
    path = GOLDEN / name
    if os.environ.get(UPDATE_ENV) == "1":
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"missing golden {path}; run with {UPDATE_ENV}=1"
    assert text == path.read_text(encoding="utf-8"), f"{name} changed; review and run with {UPDATE_ENV}=1"


def test_rendering_is_deterministic_and_marked_generated(golden_settings: Settings) -> None:
    first = render_all(golden_settings)
    second = render_all(golden_settings)
    assert first == second
    for text in first.values():
        assert text.startswith(HEADER)
        assert "do not edit" in text.splitlines()[0]
