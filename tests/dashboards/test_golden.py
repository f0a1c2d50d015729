"""Golden files: the exported files are byte-for-byte stable.

To accept an intended change, regenerate the goldens and review the diff:
    PD_OBSERVER_UPDATE_GOLDENS=1 .venv/bin/pytest tests/dashboards/test_golden.py
"""

from __future__ import annotations

import os

import pytest

from dashboards.export import CONFIGMAPS_FILE, PROVISIONING_FILE, render_all
from observer import conventions as c
from observer.config import Settings
from tests.dashboards.conftest import GOLDEN, UPDATE_ENV

FILES = [f"{uid}.json" for uid in c.DASHBOARD_UIDS] + [PROVISIONING_FILE, CONFIGMAPS_FILE]


@pytest.mark.parametrize("name", FILES)
def test_exported_file_matches_golden(golden_settings: Settings, name: str) -> None:
    text = render_all(golden_settings)[name]
    path = GOLDEN / name
    if os.environ.get(UPDATE_ENV) == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"missing golden {path}; run with {UPDATE_ENV}=1"
    assert text == path.read_text(encoding="utf-8"), f"{name} changed; review and run with {UPDATE_ENV}=1"


def test_goldens_cover_every_exported_file(golden_settings: Settings) -> None:
    assert sorted(render_all(golden_settings)) == sorted(FILES)
