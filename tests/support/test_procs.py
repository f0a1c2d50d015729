"""The process helpers start real Prometheus and Alertmanager."""

from tests.support.procs import run_alertmanager, run_prometheus


def test_prometheus_starts_and_answers_queries() -> None:
    with run_prometheus("global:\n  scrape_interval: 1s\nscrape_configs: []\n") as prom:
        assert prom.query("vector(42)")[0]["value"][1] == "42"


def test_alertmanager_starts() -> None:
    cfg = "route:\n  receiver: default\nreceivers:\n  - name: default\n"
    with run_alertmanager(cfg) as am:
        assert am.url.startswith("http://127.0.0.1:")
