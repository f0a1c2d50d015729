"""The install that `scripts/dev.sh setup` makes: every dependency is pinned in constraints.txt,
and this environment runs the pinned versions (so CI tests what the pins say)."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep, f"constraints.txt: {line!r} is not name==version"
            pins[_norm(name)] = version
    return pins


def _declared() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    out = []
    for req in reqs:
        m = re.match(r"[A-Za-z0-9_.-]+", req)
        assert m, req
        out.append(_norm(m.group(0)))
    return out


def test_every_dependency_is_pinned() -> None:
    pins = _pins()
    missing = [name for name in _declared() if name not in pins]
    assert not missing, f"not in constraints.txt (run `bash scripts/dev.sh lock`): {missing}"


def test_the_environment_runs_the_pins() -> None:
    wrong = {}
    for name, version in _pins().items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue  # a platform-only dependency of something else
        if Version(installed) != Version(version):
            wrong[name] = (installed, version)
    assert not wrong, f"installed vs pinned (run `bash scripts/dev.sh setup`): {wrong}"
