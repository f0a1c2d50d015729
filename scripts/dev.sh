#!/usr/bin/env bash
# pd-observer developer entry point. Installs what it needs on a fresh Debian machine
# (Python venv + packages, Debian's prometheus and prometheus-alertmanager), then runs:
#   scripts/dev.sh demo [ARGS...]   the live demo (service + digital twin)
#   scripts/dev.sh test [PYTEST ARGS...]   the full test suite
#   scripts/dev.sh setup            install only
#   scripts/dev.sh lint             ruff, mypy, import-linter
#   scripts/dev.sh lock             re-resolve the newest allowed packages into constraints.txt
# Python packages are installed at the versions in constraints.txt (the ones CI last passed
# with), so a new upstream release cannot change a run; `lock` moves them forward.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${PD_OBSERVER_VENV:-.venv}"
PY="${PYTHON:-python3}"

need_apt=()
command -v prometheus >/dev/null 2>&1 || need_apt+=(prometheus)
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
command -v prometheus-alertmanager >/dev/null 2>&1 || need_apt+=(prometheus-alertmanager)
command -v amtool >/dev/null 2>&1 || need_apt+=(prometheus-alertmanager)

setup() {
  if ((${#need_apt[@]})); then
    echo "[setup] installing Debian packages: ${need_apt[*]}" >&2
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
      $(printf '%s\n' "${need_apt[@]}" | sort -u) python3-venv >/dev/null
  fi
  # Debian's prometheus package starts a system service on :9090; our tests use their own ports.
  if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating virtualenv $VENV" >&2
    "$PY" -m venv "$VENV"
  fi
  stamp="$VENV/.pd-observer-installed"
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
    echo "[setup] installing Python packages (pip install -e .[dev] -c constraints.txt)" >&2
    "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
    "$VENV/bin/python" -m pip install -q -e ".[dev]" -c constraints.txt
    touch "$stamp"
  fi
}

lock() {
  # a throwaway venv with the newest versions pyproject.toml allows, frozen into constraints.txt
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  "$PY" -m venv "$tmp/venv"
  "$tmp/venv/bin/python" -m pip install -q --upgrade pip >/dev/null
  "$tmp/venv/bin/python" -m pip install -q ".[dev]"
  {
    echo "# Versions setup installs (scripts/dev.sh lock writes this file; run the tests after)."
    # --all keeps setuptools and wheel (dev dependencies: the build backend); pip is not pinned
    "$tmp/venv/bin/python" -m pip freeze --all --exclude-editable | grep -v -i -E '^(pd-observer|pip)=='
  } > constraints.txt
  echo "[lock] wrote constraints.txt ($(grep -vc '^#' constraints.txt) packages)" >&2
}

cmd="${1:-help}"
shift || true
case "$cmd" in
  setup) setup ;;
  lock) lock ;;
  test)
    setup
    # Keep compiled bytecode between runs, outside the source tree (under the venv). With
    # PYTHONDONTWRITEBYTECODE in the environment (set on the shared 2-core dev box) every process
    # of the suite compiled pd-observer's modules again, the CLI and service subprocesses the
    # tests start included, and pytest rewrote every test module again (~7 s of collection).
    PYTHONPYCACHEPREFIX="${PYTHONPYCACHEPREFIX:-$(cd "$VENV" && pwd)/pycache}"
    export PYTHONPYCACHEPREFIX
    unset PYTHONDONTWRITEBYTECODE
    exec "$VENV/bin/python" -m pytest "$@"
    ;;
  lint)
    setup
    "$VENV/bin/ruff" check .
    "$VENV/bin/ruff" format --check .
    "$VENV/bin/mypy"
    "$VENV/bin/lint-imports"
    ;;
  demo)
    setup
    exec "$VENV/bin/pd-observer" demo "$@"
    ;;
  *)
    sed -n '2,12p' "$0"
    exit 2
    ;;
esac
