from __future__ import annotations

from pathlib import Path

import pytest

from simulator import mooncake
from tests.support.procs import in_ci


@pytest.fixture(scope="session")
def mooncake_dir() -> Path:
    """The shared Mooncake traces; a failure in CI when missing, a skip locally."""
    path = mooncake.default_dir()
    if not (path / mooncake.TRACES["conversation"]).is_file():
        msg = f"Mooncake traces not found in {path} (set {mooncake.ENV_MOONCAKE_DIR})"
        if in_ci():
            pytest.fail(msg)
        pytest.skip(msg)
    return path
