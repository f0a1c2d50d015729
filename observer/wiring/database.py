"""Opening the SQL store for the CLI: a bad URL is a usage error (one line, exit 2), a database
that cannot be reached or opened is a runtime failure naming the driver's reason (exit 1)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from observer.config import ConfigError
from observer.store.repository import Store, normalize_url
from observer.wiring.errors import CliError

SUPPORTED = ("sqlite", "postgresql")
EXAMPLES = "e.g. sqlite:///pd-observer.db or postgresql+psycopg://user@host:5432/db"


def redact(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return url


def check_url(url: str) -> None:
    """ConfigError (one line) unless `url` is a SQLAlchemy URL of a supported database whose
    driver is installed. Touches nothing."""
    try:
        u = make_url(normalize_url(url))
    except sa.exc.ArgumentError as exc:
        raise ConfigError(f"invalid database URL {url!r}: not a SQLAlchemy URL ({EXAMPLES})") from exc
    backend = u.get_backend_name()
    if backend not in SUPPORTED:
        raise ConfigError(
            f"unsupported database {backend!r} in {redact(url)}: use sqlite or postgresql ({EXAMPLES})"
        )
    if backend == "sqlite" and (not u.database or u.database == ":memory:"):
        raise ConfigError(f"in-memory SQLite ({url}) does not persist anything: give a file ({EXAMPLES})")
    try:
        u.get_dialect().import_dbapi()
    except (ImportError, sa.exc.NoSuchModuleError) as exc:
        raise ConfigError(
            f"database driver {u.drivername!r} of {redact(url)} is not installed: use postgresql+psycopg:// "
            f"(psycopg 3) or sqlite:///FILE"
        ) from exc


def _reason(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip() or type(orig).__name__
    return " ".join(text.splitlines()[0].split())


@contextlib.contextmanager
def database_errors(url: str) -> Iterator[None]:
    """Turn a database failure inside the block into CliError (one line with the driver's reason)."""
    try:
        yield
    except sa.exc.DBAPIError as exc:
        raise CliError(f"cannot open the database at {redact(url)}: {_reason(exc)}") from exc
    except OSError as exc:  # e.g. SQLite's directory cannot be created
        what = f"{exc.strerror}: {exc.filename}" if exc.strerror and exc.filename else str(exc)
        raise CliError(f"cannot open the database at {redact(url)}: {what}") from exc


def open_store(url: str) -> Store:
    """Check the URL, open the store and make one connection (so an unreachable database fails
    here, in one line, instead of inside the service's startup)."""
    check_url(url)
    with database_errors(url):
        store = Store.open(url)
        try:
            with store.engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
        except BaseException:
            store.close()
            raise
    return store
