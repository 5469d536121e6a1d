"""The committed deploy/ files, checked by the real tools: promtool, nginx, docker-compose."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.support import REPO_ROOT
from tests.system.stack import DEPLOY, require_commands, run

pytestmark = pytest.mark.slow

PROMETHEUS_DIR = DEPLOY / "prometheus"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "rnn-sentiment.json"


def test_promtool_checks_committed_config_rules_and_alert_unit_tests() -> None:
    tools = require_commands("promtool")
    # check config also loads and checks the rule files it names
    run([tools["promtool"], "check", "config", "prometheus.yml"], timeout=60, cwd=PROMETHEUS_DIR)
    run([tools["promtool"], "check", "rules", "alerts.yml"], timeout=60, cwd=PROMETHEUS_DIR)
    # the alerts fire on the series they are meant for, and stay quiet on the rest
    run([tools["promtool"], "test", "rules", "alerts_test.yml"], timeout=60, cwd=PROMETHEUS_DIR)


def test_nginx_accepts_committed_config(tmp_path: Path) -> None:
    tools = require_commands("nginx")
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    prefix.chmod(0o755)  # nginx workers may run as another user and need the temp paths
    (prefix / "nginx.conf").write_text((DEPLOY / "nginx" / "nginx.conf").read_text())
    run([tools["nginx"], "-t", "-p", f"{prefix}/", "-e", str(prefix / "error.log"),
         "-c", str(prefix / "nginx.conf")], timeout=30)


def test_compose_file_is_valid_with_every_profile() -> None:
    tools = require_commands("docker-compose")
    for profiles in ([], ["--profile", "grafana", "--profile", "gpu"]):
        run([tools["docker-compose"], *profiles, "config", "-q"], timeout=60, cwd=REPO_ROOT)
    services = run([tools["docker-compose"], "--profile", "grafana", "--profile", "gpu", "config",
                    "--services"], timeout=60, cwd=REPO_ROOT).stdout.split()
    assert sorted(services) == sorted(
        ["rnn-sentiment-1", "rnn-sentiment-2", "lb", "prometheus", "grafana", "rnn-sentiment-gpu"]
    )


def test_dashboard_is_provisionable_and_covers_the_issue() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "rnn-sentiment"
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    for panel in panels:
        assert panel["datasource"]["uid"] == "prometheus", panel["title"]
        assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"]), panel["title"]
    expressions = "\n".join(t["expr"] for p in panels for t in p["targets"])
    # requests/s by method and code, p50/p95/p99, batch size, queue time, label mix, versions
    for needle in ("sum by (grpc_method, grpc_code) (rate(grpc_server_handled_total",
                   "histogram_quantile(0.5,", "histogram_quantile(0.95,", "histogram_quantile(0.99,",
                   "rnn_sentiment_batch_size", "rnn_sentiment_queue_seconds_bucket",
                   "rnn_sentiment_predictions_total", "rnn_sentiment_model_info"):
        assert needle in expressions, needle
    # the provisioned data source's uid is the one the panels name
    datasource = (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    assert re.search(r"^\s*uid: prometheus\s*$", datasource, re.M)


def dashboard_queries() -> list[str]:
    """Every dashboard expression with Grafana's variables filled in, for a live Prometheus."""
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        t["expr"].replace("$__rate_interval", "1m").replace("$replica", ".*")
        for p in dashboard["panels"] if p["type"] != "row" for t in p["targets"]
    ]


K8S = DEPLOY / "k8s"


def test_k8s_manifests_validate_and_agree_with_each_other() -> None:
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate",
        reason="needs kubernetes-validate (offline Kubernetes JSON schemas; in the dev extra)",
    )
    import yaml  # kubernetes-validate depends on PyYAML

    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    resources = {}
    for name in kustomization["resources"]:
        for document in yaml.safe_load_all((K8S / name).read_text()):
            # the oldest schemas the library ships (grpc probes: beta 1.24, GA 1.27) and the newest
            for version in ("1.25.0", kubernetes_validate.latest_version()):
                kubernetes_validate.validate(document, version, strict=True)
            resources[(document["kind"], document["metadata"]["name"])] = document

    deployment = resources[("Deployment", "rnn-sentiment")]
    pod = deployment["spec"]["template"]
    container = pod["spec"]["containers"][0]
    grpc_port = next(p["containerPort"] for p in container["ports"] if p["name"] == "grpc")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == grpc_port, probe   # native gRPC health probes
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["RNN_SENTIMENT_ADDRESS"].endswith(f":{grpc_port}")
    assert pod["spec"]["securityContext"]["runAsUser"] == 10001  # the Dockerfile's USER
    assert float(env["RNN_SENTIMENT_GRACE_SECONDS"]) < pod["spec"]["terminationGracePeriodSeconds"]
    labels = pod["metadata"]["labels"]
    for kind, name in (("Service", "rnn-sentiment"), ("Service", "rnn-sentiment-headless")):
        selector = resources[(kind, name)]["spec"]["selector"]
        assert selector.items() <= labels.items(), name
    assert resources[("Service", "rnn-sentiment-headless")]["spec"]["clusterIP"] == "None"
    hpa = resources[("HorizontalPodAutoscaler", "rnn-sentiment")]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "rnn-sentiment"}
    assert hpa["minReplicas"] >= 2

    # Hardening: no API token in the pods; gRPC only from the balancer, metrics only from Prometheus.
    assert pod["spec"]["automountServiceAccountToken"] is False
    policy = resources[("NetworkPolicy", "rnn-sentiment")]["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= labels.items()
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"] and policy["egress"] == []
    container_ports = {p["name"] for p in container["ports"]}
    admitted = {}
    for rule in policy["ingress"]:
        assert rule["from"], "a rule without `from` admits everyone"
        for port in rule["ports"]:
            assert port["port"] in container_ports, port
            admitted[port["port"]] = rule["from"]
    assert sorted(admitted) == ["grpc", "metrics"]
    metrics_peer = admitted["metrics"]
    assert len(metrics_peer) == 1 and {"namespaceSelector", "podSelector"} <= metrics_peer[0].keys()
    assert metrics_peer[0]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "prometheus"}


def test_compose_tls_override_needs_its_certificate_folder(tmp_path: Path) -> None:
    tools = require_commands("docker-compose")
    files = ["-f", "docker-compose.yml", "-f", "docker-compose.tls.yml"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RNNS_")}
    missing = run([tools["docker-compose"], *files, "config", "-q"], timeout=60, cwd=REPO_ROOT, env=env, check=False)
    assert missing.returncode != 0 and "set RNNS_LB_TLS_DIR" in missing.stderr
    config = run([tools["docker-compose"], *files, "config"], timeout=60, cwd=REPO_ROOT,
                 env={**env, "RNNS_LB_TLS_DIR": str(tmp_path)}).stdout
    assert f"{tmp_path}:/etc/rnn-sentiment/tls:ro" in config


def test_prometheus_has_no_lifecycle_or_admin_api() -> None:
    dockerfile = (PROMETHEUS_DIR / "Dockerfile").read_text()
    entrypoint = next(line for line in dockerfile.splitlines() if line.startswith("ENTRYPOINT"))
    assert "exec prometheus" in entrypoint
    assert "--web.enable-lifecycle" not in entrypoint and "--web.enable-admin-api" not in entrypoint


GRAFANA_START = DEPLOY / "grafana" / "start.sh"


def _start_grafana(data: Path, password: str | None) -> subprocess.CompletedProcess:
    """deploy/grafana/start.sh with Grafana's /run.sh replaced by a script that reports what it got."""
    fake_run = data.parent / "run.sh"
    fake_run.write_text('#!/bin/sh\necho "password length ${#GF_SECURITY_ADMIN_PASSWORD}"\n')
    fake_run.chmod(0o755)
    env = {"PATH": os.environ["PATH"], "GF_PATHS_DATA": str(data), "GRAFANA_RUN": str(fake_run)}
    if password is not None:
        env["GF_SECURITY_ADMIN_PASSWORD"] = password
    return subprocess.run(["sh", str(GRAFANA_START)], capture_output=True, text=True, env=env, timeout=30)


def test_grafana_admin_password_is_given_or_generated_never_admin(tmp_path: Path) -> None:
    compose = (REPO_ROOT / "docker-compose.yml").read_text()
    assert "GF_SECURITY_ADMIN_PASSWORD: ${RNNS_GRAFANA_ADMIN_PASSWORD:-}" in compose
    assert '"/etc/rnn-sentiment/grafana/start.sh"' in compose
    data = tmp_path / "data"
    data.mkdir()
    first = _start_grafana(data, None)
    assert first.returncode == 0 and first.stdout.strip() == "password length 48", first.stderr
    password_file = data / "admin-password"
    generated = password_file.read_text()
    assert password_file.stat().st_mode & 0o077 == 0
    assert generated not in first.stdout + first.stderr  # never printed
    again = _start_grafana(data, None)
    assert again.returncode == 0 and password_file.read_text() == generated and "generated" not in again.stderr
    given = _start_grafana(tmp_path / "elsewhere", "a-long-chosen-password")
    assert given.returncode == 0 and given.stdout.strip() == "password length 22"
    refused = _start_grafana(data, "admin")
    assert refused.returncode == 2 and "refusing the admin password 'admin'" in refused.stderr
