"""`pd-observer` command line (DESIGN §4). The composition root: it may import every layer.

Every command reads `--config FILE` (YAML) and `PD_OBSERVER_*` environment variables, and exits
non-zero with one clear line on bad input.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import math
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from observer import conventions as c
from observer.config import ConfigError, Settings, load_settings, unknown_env_vars
from observer.wiring.errors import CliError, UsageError  # CliError: also observer.cli.CliError

EXIT_USAGE = 2
EXIT_FAILURE = 1


def section_parsers() -> dict[str, Callable[[Any], object]]:
    """The model of every free-form section of `Settings`, validated whenever settings load
    (whether or not the command reads the section), so a typo fails every command alike."""
    from alerts.settings import AlertsSettings
    from autoscaler.settings import AutoscalerSettings
    from dashboards.settings import DashboardsSettings
    from observer.signals.settings import SignalsSettings
    from observer.sources.settings import SourcesSettings

    return {
        "sources": SourcesSettings.model_validate,
        "signals": SignalsSettings.model_validate,
        "alerts": AlertsSettings.model_validate,
        "dashboards": DashboardsSettings.model_validate,
        "autoscaler": AutoscalerSettings.model_validate,
    }


def _settings(args: argparse.Namespace, overrides: dict[str, Any] | None = None) -> Settings:
    unknown = unknown_env_vars()
    if unknown:
        names = ", ".join(unknown)
        print(f"pd-observer: warning: ignoring unknown environment variable(s): {names}", file=sys.stderr)
    return load_settings(args.config, overrides=overrides or {}, sections=section_parsers())


def _server_overrides(args: argparse.Namespace) -> dict[str, Any]:
    server: dict[str, Any] = {}
    if getattr(args, "host", None):
        server["host"] = args.host
    if getattr(args, "port", None) is not None:
        server["port"] = args.port
    out: dict[str, Any] = {"server": server} if server else {}
    if getattr(args, "db", None) is not None:  # `--db ""` (an unset variable) is refused, not the default
        out["store"] = {"url": args.db}
    return out


# ------------------------------------------------------------------------------------ commands
def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from autoscaler.service import serve_hooks
    from observer import logs
    from observer.api.app import create_app
    from observer.signals.service import attach
    from observer.wiring.database import check_url, open_store
    from observer.wiring.shutdown import GracefulServer, serve_until_stopped

    settings = _settings(args, _server_overrides(args))
    check_url(settings.store.url)  # a bad URL is a usage error, before any log line
    logs.configure(settings.server.log_level)
    args.log_errors = True  # from here on a failure is one JSON error log line (see main)
    store = open_store(settings.store.url)  # unreachable: one error line, exit 1
    sock = _listen(settings.server.host, settings.server.port)  # before "ready" is logged
    signals = attach(settings)  # sources -> fleet signals: /api/v1/pools, gauges, tenant evidence
    # decisions API always; the control loop when autoscaler.enabled, fed by the signals engine
    routers, hooks, release_now = serve_hooks(
        settings, store.engine, signals_latest=lambda: signals.service.engine.latest
    )
    app = create_app(
        settings,
        store,
        extra_routers=[*extra_routers(settings), *signals.routers, *routers],
        on_startup=[*signals.on_startup, *hooks],
    )
    grace = settings.server.shutdown_grace_seconds
    config = uvicorn.Config(
        app,
        host=settings.server.host,
        port=settings.server.port,
        log_config=None,
        # the pipeline answers the batches it could not write by the grace (503); uvicorn cuts
        # what is left a second later
        timeout_graceful_shutdown=math.ceil(grace) + 1,
        limit_concurrency=None,
    )
    pipeline = app.state.pipeline
    server = GracefulServer(
        config, grace_seconds=grace, on_signal=pipeline.request_stop, on_forced_exit=release_now
    )
    _tune_gc(settings.server.gc_gen0_threshold)
    return serve_until_stopped(server, [sock], clean=lambda: bool(pipeline.clean_stop))


def _listen(host: str, port: int) -> Any:
    """Bind and listen before the app starts (uvicorn would bind after the startup hooks, so a
    taken port would fail after "ready" was logged)."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family=family)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise CliError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    sock.set_inheritable(True)
    bound = sock.getsockname()
    logging.getLogger("observer.cli").info("listening", extra={"host": bound[0], "port": bound[1]})
    return sock


def _tune_gc(gen0_threshold: int) -> None:
    """Freeze what startup allocated (never garbage) out of the cyclic GC and raise the gen-0
    threshold: the ingest path allocates many short-lived acyclic objects (docs/performance.md)."""
    if gen0_threshold <= 0:
        return
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0_threshold, gen1, gen2)


def extra_routers(settings: Settings) -> list[Any]:
    """API routes owned by the upper layers (alerts, dashboards), mounted by the composition root.
    They generate from the service's stored SLO set (observer/api/generated.py), not the config's."""
    from alerts.export import rules_for_api
    from dashboards.export import dashboard_json, dashboards_index
    from observer.api.generated import generated_router

    return [
        generated_router(
            rules=lambda slos: rules_for_api(settings, slos),
            index=lambda slos: dashboards_index(settings, slos),
            dashboard=lambda uid, slos: dashboard_json(uid, settings, slos),
        )
    ]


def cmd_dashboards_export(args: argparse.Namespace) -> int:
    from dashboards.export import export

    settings = _settings(args)
    _output_dir(args.dir, "output directory")
    with _write_errors():
        paths = export(args.dir, settings)
    for path in paths:
        print(path)
    return 0


def cmd_alerts_export(args: argparse.Namespace) -> int:
    from alerts.export import export

    settings = _settings(args)
    _output_dir(args.dir, "output directory")
    with _write_errors():
        paths = export(args.dir, settings)
    for path in paths:
        print(path)
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from observer.wiring.database import database_errors, open_store, redact

    settings = _settings(args, _server_overrides(args))
    store = open_store(settings.store.url)
    try:
        with database_errors(settings.store.url):
            store.upgrade()
            print(f"database at {redact(settings.store.url)} is at revision {store.current_revision()}")
    finally:
        store.close()
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from observer.wiring.simulate import run_simulate
    from observer.wiring.twin import TwinError

    _settings(args)  # validates --config and PD_OBSERVER_* even though the twin needs none
    speed = 0.0 if args.fast else args.speed
    try:
        res = run_simulate(
            args.scenario,
            otlp_endpoint=args.otlp_endpoint,
            duration=args.duration,
            speed=speed,
            seed=args.seed,
            metrics_port=args.metrics_port,
            token=args.token,
        )
    except TwinError as exc:
        raise CliError(str(exc)) from exc
    if res.export_failed:
        return EXIT_FAILURE  # the final line says how many spans were lost
    return 130 if res.stopped else 0


def cmd_demo(args: argparse.Namespace) -> int:
    from observer.wiring.demo import DemoOptions, DemoOutputError, run_demo
    from observer.wiring.twin import TwinError

    _settings(args)
    if args.out is not None:
        _output_dir(args.out, "--out")
    opts = DemoOptions(
        scenario=args.scenario,
        duration=args.duration,
        speed=args.speed,
        seed=args.seed,
        port=args.port,
        out=args.out,
        prometheus=not args.no_prometheus,
        config=args.config,
        autoscaler=not args.no_autoscaler,
    )
    try:
        run_demo(opts)
    except (TwinError, DemoOutputError) as exc:
        raise CliError(str(exc)) from exc
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    import json

    from observer.files import write_files
    from observer.wiring.replay import run_replay
    from observer.wiring.tables import tenant_table
    from observer.wiring.twin import TwinError
    from simulator.mooncake import TraceFormatError

    settings = _settings(args)
    if args.speed != 0:
        raise UsageError("replay runs as fast as possible: only --speed 0 is supported today")
    out = args.out or Path(f"replay-{Path(args.trace).stem}-seed{args.seed}.json")
    _output_file(out, "--out")  # before the run: a replay can take minutes
    try:
        with _progress(f"replaying {args.trace}") as on_progress:
            res = run_replay(
                args.trace,
                seed=args.seed,
                duration=args.duration,
                tenants=args.tenants,
                settings=settings,
                autoscaler=args.autoscaler,
                on_progress=on_progress,
            )
    except (TwinError, FileNotFoundError, TraceFormatError) as exc:
        raise CliError(str(exc)) from exc
    slo = next((s.name for s in settings.slos if s.sli == c.SLI_TTFT), None)
    print(tenant_table(res.tenants, slo))
    print(
        f"{res.requests} requests, {res.spans} spans in {res.bodies} OTLP bodies, "
        f"{res.duration:.0f} simulated s in {res.wall_seconds:.1f} s wall"
    )
    with _write_errors():
        write_files({out: json.dumps(res.as_json(), indent=1, sort_keys=True)})
    if res.decisions is not None:
        print(f"autoscaler: {len(res.decisions)} decisions changed the fleet (apply mode on the twin)")
        for d in res.decisions[:20]:
            print(f"  t=+{d['elapsed']:.0f}s {d['pool']}: {d['text']}")
    print(f"json: {out}")
    return 0


def cmd_autoscale(args: argparse.Namespace) -> int:
    from autoscaler.service import run_autoscale

    if args.dry_run and args.mode not in (None, "dry-run"):  # never silently one or the other
        raise UsageError(f"--dry-run conflicts with --mode {args.mode} (--dry-run means --mode dry-run)")
    settings = _settings(args)
    mode = "dry-run" if args.dry_run else args.mode
    if not settings.autoscaler.get("pools"):
        raise ConfigError("no pools configured: set autoscaler.pools in --config (see docs/autoscaler.md)")
    from autoscaler.ports import PermanentError
    from observer.wiring.database import open_store

    open_store(settings.store.url).close()  # the decisions' database: bad URL 2, unreachable 1
    if not args.once:  # the running loop (a pod) logs JSON lines on stderr, as `serve` does
        from observer import logs

        logs.configure(settings.server.log_level)

    try:
        return run_autoscale(
            settings,
            once=args.once,
            mode=mode,
            host=args.server,
            kubeconfig=args.kubeconfig,
            identity=args.identity,
        )
    except PermanentError as exc:  # e.g. no kubeconfig: nothing to retry
        raise CliError(str(exc)) from exc


@contextlib.contextmanager
def _progress(what: str) -> Iterator[Callable[[float, float], None] | None]:
    """A progress bar on stderr (simulated seconds done of the total) when stderr is a terminal;
    gone once done, so the output stays the table."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(what, total=None)

        def update(done: float, total: float) -> None:
            progress.update(task, completed=done, total=total)

        yield update


def _output_dir(path: Path, what: str) -> None:
    """An output directory (created when missing) must not be an existing file, and files must
    be creatable in it (or in its nearest existing parent), checked before any work."""
    if path.exists() and not path.is_dir():
        raise UsageError(f"{what} {path} is an existing file, not a directory")
    parent = next((p for p in (path.absolute(), *path.absolute().parents) if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise UsageError(f"{what} {path}: {parent} is not a directory")
    if parent is not None:
        _check_writable(parent, f"{what} {path}")


def _output_file(path: Path, what: str) -> None:
    """An output file goes into an existing directory where files can be created, and is not a
    directory itself."""
    if path.is_dir():
        raise UsageError(f"{what} {path} is a directory; give a file name")
    parent = path.absolute().parent
    if not parent.is_dir():
        raise UsageError(f"{what} {path}: the directory {parent} does not exist")
    _check_writable(parent, f"{what} {path}")


def _check_writable(directory: Path, what: str) -> None:
    """UsageError unless a file can be created in `directory` (an anonymous one: nothing is left)."""
    import tempfile

    try:
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        raise UsageError(f"{what}: cannot write there: {exc.strerror or exc}") from exc


@contextlib.contextmanager
def _write_errors() -> Iterator[None]:
    """A file that cannot be written (full disk, a directory in the way): one line, exit 1."""
    try:
        yield
    except OSError as exc:
        raise CliError(f"cannot write {exc.filename}: {exc.strerror or exc}") from exc


# ------------------------------------------------------------------------------------ parser
def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        metavar="FILE",
        type=_path,
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

    _add_twin_commands(sub)

    _add_export_command(
        sub,
        "alerts",
        help="alert rules and Alertmanager routing as code",
        description="Prometheus rules and Alertmanager routing generated from the SLOs and signals.",
        export_help="write the rule files, a PrometheusRule object and alertmanager.yml into DIR",
        export_description=(
            "Write pd-observer-rules.yaml (Prometheus rule file), pd-observer-prometheusrule.yaml "
            "(prometheus-operator PrometheusRule) and alertmanager.yml into DIR. Deterministic; "
            "every file starts with a 'generated — do not edit' header."
        ),
        examples=(
            "pd-observer alerts export ./out",
            "promtool check rules ./out/pd-observer-rules.yaml",
            "amtool check-config ./out/alertmanager.yml",
        ),
        func=cmd_alerts_export,
    )
    _add_export_command(
        sub,
        "dashboards",
        help="Grafana dashboards as code",
        description="Grafana dashboards generated with grafana-foundation-sdk from one source of names.",
        export_help="write dashboard JSON, Grafana provisioning YAML and ConfigMaps into DIR",
        export_description=(
            "Write one <uid>.json per dashboard, provisioning/dashboards/pd-observer.yaml (a Grafana file "
            "provider) and pd-observer-dashboards-configmaps.yaml (ConfigMaps labelled grafana_dashboard=1 "
            "for the Grafana sidecar). Deterministic."
        ),
        examples=(
            "pd-observer dashboards export ./grafana",
            "kubectl apply -n monitoring -f ./grafana/pd-observer-dashboards-configmaps.yaml",
        ),
        func=cmd_dashboards_export,
    )

    auto = sub.add_parser(
        "autoscale",
        help="run the control loop: P/D replicas and EPP scorer weights through the Kubernetes API",
        description=(
            "Run the autoscaler (docs/autoscaler.md): every interval, read demand from the observer's "
            "database, decide per pool, act through the Kubernetes API per mode (observe: recommend "
            "only; dry-run: server-side dryRun=All; apply), record every decision in the database "
            "(GET /api/v1/decisions). One leader via a coordination.k8s.io Lease; exits 1 when "
            "leadership is lost, or with --once when the Lease cannot be read or written (exit 0 "
            "as a standby); SIGTERM stops it cleanly and releases the Lease. Prints each decision "
            "as one JSON line. The mode defaults to autoscaler.mode of the config (observe when unset)."
        ),
        epilog=(
            "examples:\n"
            "  pd-observer autoscale --once --dry-run --config observer.yaml   # one tick, nothing persists\n"
            "  pd-observer autoscale --mode apply --config observer.yaml\n"
            "  pd-observer autoscale --once --config observer.yaml --server http://127.0.0.1:8001"
            "   # via `kubectl proxy`"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(auto)
    auto.add_argument(
        "--once",
        action="store_true",
        help="run one tick, as the first tick of a freshly started loop (its warm-start hold "
        "included: it never sheds the fleet it has not measured), release the Lease and exit",
    )
    auto.add_argument("--dry-run", action="store_true", help="same as --mode dry-run")
    auto.add_argument(
        "--mode", choices=("observe", "dry-run", "apply"), help="override autoscaler.mode of the config"
    )
    auto.add_argument(
        "--server",
        metavar="URL",
        type=http_url,
        help="Kubernetes API URL (default: in-cluster, then kubeconfig)",
    )
    auto.add_argument("--kubeconfig", metavar="FILE", help="kubeconfig file (default: ~/.kube/config)")
    auto.add_argument("--identity", help="Lease holder identity (default: the hostname)")
    auto.set_defaults(func=cmd_autoscale)
    return parser


def _add_export_command(
    sub: Any,
    name: str,
    *,
    help: str,
    description: str,
    export_help: str,
    export_description: str,
    examples: Sequence[str],
    func: Any,
) -> None:
    """`pd-observer NAME export DIR`: the shape shared by the generated-artifact commands."""
    group = sub.add_parser(name, help=help, description=description)
    actions = group.add_subparsers(dest=f"{name}_command", metavar="ACTION", required=True)
    exp = actions.add_parser(
        "export",
        help=export_help,
        description=export_description,
        epilog="examples:\n" + "\n".join(f"  {e}" for e in examples),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(exp)
    exp.add_argument("dir", metavar="DIR", type=_path, help="output directory (created if missing)")
    exp.set_defaults(func=func)


def _path(text: str) -> Path:
    """argparse type: a path that is not empty (`""`, an unset shell variable, is not `.`)."""
    if not text:
        raise argparse.ArgumentTypeError("must not be empty")
    return Path(text)


def _finite(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    return v


def positive(text: str) -> float:
    """argparse type: a finite number > 0."""
    v = _finite(text)
    if v <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return v


def non_negative(text: str) -> float:
    """argparse type: a finite number >= 0 (a speed: 0 = as fast as possible)."""
    v = _finite(text)
    if v < 0:
        raise argparse.ArgumentTypeError("must be >= 0 (0 = as fast as possible)")
    return v


def port_number(text: str) -> int:
    """argparse type: a TCP port, 0..65535 (0 = any free port)."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 0 <= v <= 65535:
        raise argparse.ArgumentTypeError("must be a port number 0..65535 (0 = any free port)")
    return v


def http_url(text: str) -> str:
    """argparse type: an http:// or https:// URL with a host."""
    try:
        u = urlsplit(text)
        u.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a valid URL: {text!r} ({exc})") from None
    if u.scheme not in ("http", "https") or not u.hostname:
        raise argparse.ArgumentTypeError(f"not an http:// or https:// URL: {text!r}")
    return text


def _count(text: str) -> int:
    """argparse type: a whole number >= 1."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return v


def _twin_options(p: argparse.ArgumentParser, scenario_default: str | None) -> None:
    from simulator.scenarios import scenario_names

    if scenario_default is not None:
        p.add_argument(
            "--scenario",
            default=scenario_default,
            help=f"named scenario ({', '.join(scenario_names())}) or a Mooncake .jsonl trace "
            f"(default {scenario_default})",
        )
    p.add_argument("--duration", type=positive, help="simulated seconds (default: the scenario's)")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same run; default 0)")


def _add_twin_commands(sub: Any) -> None:
    sim = sub.add_parser(
        "simulate",
        help="run the digital twin alone, sending OTLP to any endpoint",
        description=(
            "Run the fleet digital twin: vLLM/EPP/sidecar spans go to --otlp-endpoint through the real "
            "OTLP/HTTP exporter, and per-pod vLLM and EPP metrics are served for Prometheus (http_sd "
            "targets at /targets.json). Paced at --speed x real time, or as fast as possible."
        ),
        epilog=(
            "examples:\n"
            "  pd-observer simulate --scenario steady --otlp-endpoint http://127.0.0.1:8080\n"
            "  pd-observer simulate --scenario prefill-burst --speed 10 --metrics-port 9400 \\\n"
            "      --otlp-endpoint http://otel-collector:4318/v1/traces\n"
            "  pd-observer simulate --scenario cache-cascade --fast --duration 300 \\\n"
            "      --otlp-endpoint http://127.0.0.1:8080 --token s3cret"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(sim)
    _twin_options(sim, "steady")
    sim.add_argument(
        "--speed", type=non_negative, default=1.0, help="x real time; 0 = as fast as possible (default 1)"
    )
    sim.add_argument("--fast", action="store_true", help="as fast as possible (same as --speed 0)")
    sim.add_argument(
        "--otlp-endpoint",
        required=True,
        metavar="URL",
        type=http_url,
        help="OTLP/HTTP base or /v1/traces URL",
    )
    sim.add_argument(
        "--metrics-port", type=port_number, default=0, help="port for the twin's /metrics (default: any)"
    )
    sim.add_argument("--token", help="bearer token sent with every OTLP export")
    sim.set_defaults(func=cmd_simulate)

    demo = sub.add_parser(
        "demo",
        help="service + digital twin (+ Prometheus/Alertmanager) with a live view and an HTML report",
        description=(
            "Start the service on its embedded defaults (SQLite in the output folder), the twin "
            "(default: the `story` scenario, steady -> prefill burst -> cache cascade) paced at --speed "
            "delivering OTLP over HTTP, and Prometheus + Alertmanager with generated configs when they "
            "are on PATH. Shows a live view (plain log lines without a TTY); on exit or Ctrl-C writes "
            "report.html and data.json into the output folder and prints a summary."
        ),
        epilog=(
            "examples:\n"
            "  pd-observer demo                                   # story, 900 simulated s at 20x\n"
            "  pd-observer demo --scenario cache-cascade --speed 50 --out ./cascade\n"
            "  pd-observer demo --duration 30 --speed 30 --no-prometheus"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(demo)
    _twin_options(demo, "story")
    demo.add_argument(
        "--speed", type=non_negative, default=20.0, help="x real time; 0 = as fast as possible (default 20)"
    )
    demo.add_argument(
        "--port", type=port_number, default=8080, help="service port; a free one when taken (default 8080)"
    )
    demo.add_argument("--out", type=_path, help="output folder (default ./pd-observer-demo-<timestamp>/)")
    demo.add_argument("--no-prometheus", action="store_true", help="do not start Prometheus/Alertmanager")
    demo.add_argument(
        "--no-autoscaler",
        action="store_true",
        help="do not run the autoscaler (default: apply mode on the twin, decisions in the view/report)",
    )
    demo.set_defaults(func=cmd_demo)

    rep = sub.add_parser(
        "replay",
        help="replay a Mooncake trace or a scenario through the twin into an in-process observer",
        description=(
            "Replay TRACE (a Mooncake-format .jsonl file, or a scenario name) through the twin as fast "
            "as possible; spans are OTLP-encoded and ingested by the service in-process. Prints a "
            "per-tenant table (requests, hit rate, tier shares, TTFT p50/p90/p99, SLO attainment) "
            "and writes JSON; on a terminal, shows its progress on stderr meanwhile."
        ),
        epilog=(
            "examples:\n"
            "  pd-observer replay ../shared/data/mooncake/conversation_trace.jsonl --tenants 8\n"
            "  pd-observer replay cache-cascade --duration 600 --out cascade.json"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(rep)
    rep.add_argument("trace", metavar="TRACE", help="Mooncake .jsonl trace, or a scenario name")
    _twin_options(rep, None)
    rep.add_argument(
        "--tenants",
        type=_count,
        default=8,
        help="tenant buckets for a Mooncake trace file (default 8; a named scenario has its own tenants)",
    )
    rep.add_argument(
        "--speed", type=non_negative, default=0.0, help="0 = as fast as possible (the only mode today)"
    )
    rep.add_argument("--out", type=_path, help="JSON output (default replay-<trace>-seed<N>.json)")
    rep.add_argument(
        "--autoscaler",
        action="store_true",
        help="run the autoscaler in apply mode on the twin; its decisions go to the JSON and the output",
    )
    rep.set_defaults(func=cmd_replay)


def _fail(args: argparse.Namespace, exc: Exception, code: int) -> int:
    """One line: `pd-observer: ...` on stderr, or one JSON error log line once the command logs
    JSON (`serve` sets `args.log_errors` after configuring its logs)."""
    if getattr(args, "log_errors", False):
        logging.getLogger("observer.cli").error(str(exc), extra={"exit_code": code})
    else:
        print(f"pd-observer: {exc}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except ConfigError as exc:
        return _fail(args, exc, EXIT_USAGE)
    except CliError as exc:
        return _fail(args, exc, exc.exit_code)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
