"""Writing generated files all or nothing (`alerts export`, `dashboards export`, `replay --out`)."""

from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Mapping
from pathlib import Path


def write_files(files: Mapping[Path, str]) -> list[Path]:
    """Write every file (path -> UTF-8 text), or none of them: each is first written to a
    temporary file beside it, and only once all are written are they renamed into place (a full
    disk or a path that is a directory leaves the previous files as they were). Missing parent
    directories are created. An existing path that is not a regular file (e.g. /dev/stdout) is
    written in place. OSError names the path that failed, with the system's reason."""
    for path in files:
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    staged: list[tuple[Path, Path]] = []
    try:
        for path, text in files.items():
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                if path.exists() and not path.is_file():
                    path.write_text(text, encoding="utf-8")
                    continue
                tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies
                staged.append((tmp, path))
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    fh.write(text)
            except OSError as exc:
                raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        for tmp, path in staged:
            os.replace(tmp, path)
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
    return list(files)
