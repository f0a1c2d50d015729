"""`pd-observer` command line (DESIGN §4). The composition root: it may import every layer.

Every command reads `--config FILE` (YAML) and `PD_OBSERVER_*` environment variables, and exits
non-zero with one clear line on bad input.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from observer.config import ConfigError, Settings, load_settings

EXIT_USAGE = 2
EXIT_FAILURE = 1


class CliError(Exception):
    """A user-facing failure: printed as one line, exit code 1."""


def _settings(args: argparse.Namespace, overrides: dict[str, Any] | None = None) -> Settings:
    return load_settings(args.config, overrides=overrides or {})


def _server_overrides(args: argparse.Namespace) -> dict[str, Any]:
    server: dict[str, Any] = {}
    if getattr(args, "host", None):
        server["host"] = args.host
    if getattr(args, "port", None) is not None:
        server["port"] = args.port
    out: dict[str, Any] = {"server": server} if server else {}
    if getattr(args, "db", None):
        out["store"] = {"url": args.db}
    return out


# ------------------------------------------------------------------------------------ commands
def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from observer import logs
    from observer.api.app import create_app
    from observer.store.repository import Store

    settings = _settings(args, _server_overrides(args))
    logs.configure(settings.server.log_level)
    store = Store.open(settings.store.url)
    app = create_app(settings, store, extra_routers=extra_routers(settings))
    config = uvicorn.Config(
        app,
        host=settings.server.host,
        port=settings.server.port,
        log_config=None,
        timeout_graceful_shutdown=int(settings.server.shutdown_grace_seconds) or None,
        limit_concurrency=None,
    )
    uvicorn.Server(config).run()
    return 0


def extra_routers(settings: Settings) -> list[Any]:
    """API routes owned by the upper layers (alerts, dashboards), mounted by the composition root."""
    from fastapi import APIRouter

    from alerts.export import rules_for_api

    router = APIRouter(prefix="/api/v1")

    @router.get(
        "/alerts/rules", tags=["alerts"], summary="Generated Prometheus rules and Alertmanager routing"
    )
    def alert_rules() -> dict[str, Any]:
        return rules_for_api(settings)

    return [router]


def cmd_alerts_export(args: argparse.Namespace) -> int:
    from alerts.export import export

    settings = _settings(args)
    paths = export(args.dir, settings)
    for path in paths:
        print(path)
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from observer.store.repository import Store

    settings = _settings(args, _server_overrides(args))
    store = Store.open(settings.store.url)
    try:
        store.upgrade()
        print(f"database at {_redact(settings.store.url)} is at revision {store.current_revision()}")
    finally:
        store.close()
    return 0


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


# ------------------------------------------------------------------------------------ parser
def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        metavar="FILE",
        type=Path,
        help="YAML settings file (see docs/configuration.md); PD_OBSERVER_* env vars override it",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pd-observer",
        description=(
            "Observability and SLO control loop for disaggregated (prefill/decode) LLM serving. "
            "Ingests OTLP traces from vLLM, the llm-d Endpoint Picker and the routing sidecar, and "
            "serves per-tenant prefix-cache hit rates (by KV tier), latency percentiles and SLOs."
        ),
        epilog="Run `pd-observer COMMAND --help` for each command's options and examples.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = sub.add_parser(
        "serve",
        help="run the service: OTLP receiver, API, /metrics (one port)",
        description=(
            "Run the service. Upgrades the database schema on start, restores state from it, "
            "then accepts OTLP/HTTP traces on POST /v1/traces and serves the API on the same port."
        ),
        epilog=(
            "examples:\n"
            "  pd-observer serve                          # SQLite file ./pd-observer.db, port 8080\n"
            "  pd-observer serve --port 4318 --db postgresql+psycopg://postgres@127.0.0.1/pdo\n"
            "  PD_OBSERVER_SERVER__AUTH_TOKEN=s3cret pd-observer serve --config observer.yaml"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(serve)
    serve.add_argument("--host", help="listen address (default 0.0.0.0)")
    serve.add_argument("--port", type=int, help="listen port (default 8080)")
    serve.add_argument(
        "--db", metavar="URL", help="SQLAlchemy database URL (default sqlite:///pd-observer.db)"
    )
    serve.set_defaults(func=cmd_serve)

    db = sub.add_parser("db", help="database maintenance", description="Database maintenance.")
    db_sub = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    up = db_sub.add_parser(
        "upgrade",
        help="apply schema migrations (serve does this on start)",
        description="Apply the Alembic migrations up to the newest revision. Safe to run repeatedly.",
        epilog="example:\n  pd-observer db upgrade --db postgresql+psycopg://postgres@127.0.0.1:5432/pdo",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(up)
    up.add_argument("--db", metavar="URL", help="SQLAlchemy database URL")
    up.set_defaults(func=cmd_db_upgrade)

    alerts = sub.add_parser(
        "alerts",
        help="alert rules and Alertmanager routing as code",
        description="Prometheus rules and Alertmanager routing generated from the SLOs and signals.",
    )
    alerts_sub = alerts.add_subparsers(dest="alerts_command", metavar="ACTION", required=True)
    aexp = alerts_sub.add_parser(
        "export",
        help="write the rule files, a PrometheusRule object and alertmanager.yml into DIR",
        description=(
            "Write pd-observer-rules.yaml (Prometheus rule file), pd-observer-prometheusrule.yaml "
            "(prometheus-operator PrometheusRule) and alertmanager.yml into DIR. Deterministic; "
            "every file starts with a 'generated — do not edit' header."
        ),
        epilog=(
            "examples:\n"
            "  pd-observer alerts export ./out\n"
            "  promtool check rules ./out/pd-observer-rules.yaml\n"
            "  amtool check-config ./out/alertmanager.yml"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(aexp)
    aexp.add_argument("dir", metavar="DIR", type=Path, help="output directory (created if missing)")
    aexp.set_defaults(func=cmd_alerts_export)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except ConfigError as exc:
        print(f"pd-observer: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except CliError as exc:
        print(f"pd-observer: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
