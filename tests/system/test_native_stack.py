"""Two server processes behind a real nginx, scraped by a real Prometheus, all on loopback.

The nginx and Prometheus configurations are the committed deploy/ files with their default
addresses replaced by this test's free ports (by deploy/render-addresses.sh, as in the
containers). Every process started here is stopped by its PID at the end (`stack.started`).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
from pathlib import Path

import pytest

from rnn_sentiment.client import SentimentClient
from tests.support import ServerProcess, free_port
from tests.system.stack import (
    DEFAULT_PROMETHEUS, DEFAULT_REPLICA_METRICS, DEPLOY, BackgroundProcess, Phases, counter_moves, http_get, poll,
    prometheus_query, render_config, require_commands, run, scrape_counter, start_nginx, started,
)
from tests.system.test_deploy_config import dashboard_queries

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

CALLS = 20
TEXTS = ["a warm, funny and beautifully acted film", "a dull , lifeless and painfully boring movie"]
ERROR_CODES = re.compile(r', grpc_code=~"[A-Z_|]+"')
PREDICT_OK = {"grpc_service": "rnn_sentiment.v1.SentimentService", "grpc_method": "Predict", "grpc_code": "OK"}


def predict_ok_count(replica: ServerProcess) -> float:
    return scrape_counter(replica.metrics_url, "grpc_server_handled_total", **PREDICT_OK)


def test_load_balanced_replicas_scraped_by_prometheus(tmp_path: Path) -> None:
    tools = require_commands("nginx", "prometheus", "promtool")
    lb_address = f"127.0.0.1:{free_port()}"
    prometheus_address = f"127.0.0.1:{free_port()}"
    prometheus_url = f"http://{prometheus_address}"
    phases = Phases("native")
    with started(ServerProcess() for _ in range(2)) as processes:  # the shipped models
        replicas = processes.replicas
        for replica in replicas:
            replica.wait_until_serving(timeout=90)
        phases.done("two replicas serving")

        # ---- nginx, from deploy/nginx/nginx.conf, under a temporary prefix ----
        nginx = processes.services["nginx"] = start_nginx(tmp_path, lb_address, [r.target for r in replicas])

        # ---- Prometheus, from deploy/prometheus/, with temporary storage ----
        prometheus_dir = render_config(DEPLOY / "prometheus", tmp_path / "prometheus", {
            DEFAULT_PROMETHEUS: prometheus_address,
            **{default: f"127.0.0.1:{replica.metrics_port}"
               for default, replica in zip(DEFAULT_REPLICA_METRICS, replicas)},
        })
        config = prometheus_dir / "prometheus.yml"
        # Rules evaluated every second here, so the test need not wait 15 s for the first round.
        config.write_text(config.read_text().replace("evaluation_interval: 15s", "evaluation_interval: 1s"))
        run([tools["promtool"], "check", "config", str(config)], timeout=60)
        processes.services["prometheus"] = BackgroundProcess(
            [tools["prometheus"], f"--config.file={prometheus_dir / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address={prometheus_address}"],
            log_path=tmp_path / "prometheus.log",
        ).start()

        # ---- Predict through the load balancer reaches both replicas ----
        with SentimentClient(lb_address, timeout=10) as client:
            # the health service answers through nginx too: the LB is up once it says SERVING
            client.wait_until_serving(timeout=30)
            before = [predict_ok_count(r) for r in replicas]
            results = [client.predict(TEXTS) for _ in range(CALLS)]  # one channel, one connection
        assert all(len(r.predictions) == len(TEXTS) for r in results)
        assert {p.label for r in results for p in r.predictions} <= {"negative", "positive"}
        served = counter_moves(lambda: [predict_ok_count(r) for r in replicas], before, CALLS)
        assert sum(served) == CALLS, f"replica Predict counters moved by {served}, expected {CALLS} in all"
        assert all(n > 0 for n in served), f"per-request balancing should reach both replicas: {served}"
        phases.done("nginx up, calls through it")
        access_log = nginx.log()
        assert all(r.target in access_log for r in replicas), access_log

        # every metric name the replicas expose passes promtool's lint
        for replica in replicas:
            lint = subprocess.run([tools["promtool"], "check", "metrics"], input=http_get(replica.metrics_url),
                                  capture_output=True, text=True, timeout=30)
            assert lint.returncode == 0, lint.stdout + lint.stderr

        # ---- Prometheus: both targets up, and the request counts it scraped ----
        poll(lambda: http_get(f"{prometheus_url}/-/ready"), 30, "Prometheus /-/ready")

        def both_up() -> list[dict] | None:
            up = prometheus_query(prometheus_url, 'up{job="rnn-sentiment"}')
            return up if len(up) == 2 and all(s["value"][1] == "1" for s in up) else None

        up = poll(both_up, 45, "both replicas up in Prometheus")
        phases.done("Prometheus ready, both targets up")
        assert {s["metric"]["replica"] for s in up} == {"rnn-sentiment-1", "rnn-sentiment-2"}

        expected = {f"127.0.0.1:{r.metrics_port}": predict_ok_count(r) for r in replicas}

        def counts_scraped() -> dict[str, float] | None:
            series = prometheus_query(
                prometheus_url,
                'sum by (instance) (grpc_server_handled_total{job="rnn-sentiment", grpc_method="Predict", grpc_code="OK"})',
            )
            got = {s["metric"]["instance"]: float(s["value"][1]) for s in series}
            return got if got == expected else None

        poll(counts_scraped, 30, f"Prometheus to report the Predict counts {expected}")

        # the alert rules loaded and evaluate without errors; the dashboard's queries parse and run
        def rules_evaluated() -> list[dict] | None:
            groups = json.loads(http_get(f"{prometheus_url}/api/v1/rules"))["data"]["groups"]
            rules = [rule for group in groups for rule in group["rules"]]
            return rules if rules and all(r.get("lastEvaluation", "").startswith("20") for r in rules) else None

        rules = poll(rules_evaluated, 40, "the first evaluation of every rule")
        assert all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules]
        assert {"RnnSentimentHighErrorRate", "RnnSentimentHighLatencyP99", "RnnSentimentReplicaDown"} <= {
            r["name"] for r in rules}
        firing = [r["name"] for r in rules if r.get("state") == "firing"]
        assert not firing, f"alerts firing on a healthy stack: {firing}"
        # Every panel shows data: a query that returns no series (a metric renamed or gone) fails.
        # Rates need two scrapes of a series, so each is polled; the reload panel needs a reload.
        for replica in replicas:
            replica.signal(signal.SIGHUP)
        for query in dashboard_queries():
            # The error-ratio panel is empty on a healthy stack by design: its query is checked
            # with the error-code filter taken out (same metric, same shape).
            query = ERROR_CODES.sub("", query)
            poll(lambda: prometheus_query(prometheus_url, query), 60, f"a series from the dashboard query {query!r}")
        phases.done("counts scraped, rules evaluated, every dashboard query has series")

        # ---- a replica that stops: calls through the LB keep succeeding on the other ----
        assert replicas[0].stop() == 0, replicas[0].log()
        with SentimentClient(lb_address, timeout=10) as client:
            for _ in range(10):
                assert len(client.predict(TEXTS[:1]).predictions) == 1
        phases.done("failover after a replica stops")

