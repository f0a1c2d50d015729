"""Suite-wide setup: compiled bytecode is kept between runs, as `scripts/dev.sh test` keeps it.

With PYTHONDONTWRITEBYTECODE in the environment (set on the shared 2-core dev box) a plain
`pytest` compiled pd-observer's modules again in every process of the suite, the CLI and service
subprocesses the tests start included, and pytest rewrote every test module again (collection
took ~11 s instead of ~4 s; a `serve` subprocess imports ~0.4 s slower). Here, as in
`scripts/dev.sh test`, bytecode goes to `<venv>/pycache` (outside the source tree), or to
PYTHONPYCACHEPREFIX when that is set, for this process (from here on: the test modules) and for
every subprocess the tests start. Nothing else about those processes changes.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def _keep_bytecode() -> None:
    prefix = os.environ.get("PYTHONPYCACHEPREFIX")
    if not prefix:
        if sys.prefix == sys.base_prefix:  # not in a virtualenv: leave the interpreter's settings
            return
        prefix = str(Path(sys.prefix).resolve() / "pycache")
    os.environ["PYTHONPYCACHEPREFIX"] = prefix
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    sys.pycache_prefix = prefix
    sys.dont_write_bytecode = False


_keep_bytecode()
