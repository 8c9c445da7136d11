"""observability/: the alert rules pass `promtool check rules` and their unit tests (`promtool test rules`), the
scrape config is valid and points at the stack's default ports, and every Sluice metric the rules and the Grafana
dashboard use is one that a component really exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from services.common.metrics import Metrics, watch_in_flight
from services.common.settings import REPO_ROOT, Settings
from services.telemetry.server import Receiver
from services.telemetry.store import SpanStore

OBSERVABILITY = REPO_ROOT / "observability"
LOCAL_PROMTOOL = REPO_ROOT / "tools" / "prometheus" / "usr" / "bin" / "promtool"


def promtool() -> str:
    found = str(LOCAL_PROMTOOL) if LOCAL_PROMTOOL.exists() else shutil.which("promtool")
    if found is None:
        pytest.skip("promtool is not installed: `make promtool` fetches it (make test does)")
    return found


def run_promtool(*args: str) -> str:
    result = subprocess.run([promtool(), *args], cwd=OBSERVABILITY, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def test_alert_rules_are_valid() -> None:
    assert "SUCCESS: 7 rules found" in run_promtool("check", "rules", "alerts.yml")


def test_alert_rules_pass_their_unit_tests() -> None:
    assert "SUCCESS" in run_promtool("test", "rules", "alerts_test.yml")


def test_scrape_config_is_valid() -> None:
    run_promtool("check", "config", "prometheus.yml")


def test_every_alert_has_a_unit_test() -> None:
    rules = yaml.safe_load((OBSERVABILITY / "alerts.yml").read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    tested = {case["alertname"] for test in yaml.safe_load((OBSERVABILITY / "alerts_test.yml").read_text())["tests"]
              for case in test.get("alert_rule_test", [])}
    assert alerts == tested == {"SluiceGoodputLow", "SluiceTTFTHigh", "SluiceAbortRateHigh", "SluiceErrorRateHigh",
                                "SluiceKVCacheFull", "SluicePrefixHitRateLow", "SluiceComponentDown"}


def test_scrape_targets_are_the_default_ports() -> None:
    config = yaml.safe_load((OBSERVABILITY / "prometheus.yml").read_text())
    targets = {job["job_name"]: job["static_configs"][0]["targets"][0] for job in config["scrape_configs"]}
    s = Settings()
    ports = {"sluice-envoy": s.envoy_admin_port, "sluice-orchestrator": s.orchestrator_metrics_port,
             "sluice-safety": s.safety_metrics_port, "sluice-retrieval": s.retrieval_metrics_port,
             "sluice-triton": s.triton_metrics_port, "sluice-telemetry": s.otlp_http_port}
    assert targets == {job: f"127.0.0.1:{port}" for job, port in ports.items()}


def exported_metric_names(tmp_path: Path) -> set[str]:
    """Sample names the Sluice components export: the services' families, the engine's (declared in the Triton
    model) and the receiver's."""
    names: set[str] = set()
    services = Metrics(CollectorRegistry())
    watch_in_flight(lambda: {"deployment": 0}, metrics=services)  # the orchestrator registers it at start
    registries = [services.registry]
    receiver = Receiver(SpanStore(tmp_path / "spans.db"))
    registries.append(receiver.registry)
    for registry in registries:
        for family in registry.collect():
            kinds = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"]}.get(family.type, [""])
            names.update(family.name + suffix for suffix in kinds)
    receiver.close()
    engine = (REPO_ROOT / "model_repository" / "tensorrt_llm" / "1" / "model.py").read_text()
    for name, kind in re.findall(r'\("(sluice_engine_\w+)", "[^"]*", mf\.(\w+)\)', engine):
        names.update([name] if kind != "HISTOGRAM" else [f"{name}_bucket", f"{name}_count", f"{name}_sum"])
    return names


def test_rules_and_dashboard_only_use_metrics_that_exist(tmp_path: Path) -> None:
    exported = exported_metric_names(tmp_path)
    dashboard = json.loads((OBSERVABILITY / "grafana" / "sluice.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    rules = yaml.safe_load((OBSERVABILITY / "alerts.yml").read_text())
    exprs += [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    used = {name for expr in exprs for name in re.findall(r"\b(sluice_\w+)", expr)}
    assert used and used <= exported, sorted(used - exported)


def test_dashboard_covers_the_slo_panels() -> None:
    dashboard = json.loads((OBSERVABILITY / "grafana" / "sluice.json").read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    text = json.dumps(panels)
    for metric in ("sluice_ttft_seconds_bucket", "sluice_tpot_seconds_bucket", "sluice_inter_token_latency_seconds",
                   "sluice_request_duration_seconds", "sluice_slo_good_requests_total", "sluice_requests_total",
                   "sluice_tokens_total", "sluice_deployment_in_flight", "sluice_rate_limited_total",
                   "sluice_safety_actions_total", "sluice_retrieval_duration_seconds", "sluice_engine_kv_utilisation",
                   "sluice_engine_prefix_hit_tokens_total", "sluice_response_cache_lookups_total",
                   'up{job=~\\"sluice-'):
        assert metric in text, metric
    occupied = set()
    for panel in dashboard["panels"]:  # no two panels overlap on the grid
        g = panel["gridPos"]
        cells = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & occupied, panel["title"]
        occupied |= cells
