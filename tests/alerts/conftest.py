"""Shared fixtures for the alerts tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from observer.config import Settings, load_settings

GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture(scope="session")
def golden_settings() -> Settings:
    """Settings with teams, receivers and tenant-scoped SLOs (tests/alerts/golden/settings.yaml)."""
    return load_settings(GOLDEN / "settings.yaml", env={})
