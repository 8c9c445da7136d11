"""The two front ends `sluice bench overload` compares: an orchestrator + Envoy pair with admission control on and
one with it off, started next to a running stack and sharing its Triton, safety and retrieval services and its
database. Only the catalog's `routing.admission.enabled` differs between them.

Both pairs also get:
- the stack's tiers with every rate limit and quota lifted and every model allowed, so that only admission control
  (or the engine) refuses requests — a tenant's own limits would otherwise shed the free tier first in both modes —
  with the tiers' scheduling priorities kept;
- no fallback for the benchmarked model: on this machine every deployment shares the same CPU, so a fallback is no
  spare capacity, and sending shed requests to it would measure the other model instead of admission control.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from services.cli.protos import GEN_ROOT
from services.common.settings import Settings
from services.supervisor.envoy_config import render_envoy_config
from services.supervisor.health import envoy_ready, grpc_serving
from services.supervisor.processes import ManagedProcess, free_port, wait_until
from services.supervisor.stack import settings_env

MODES = ("on", "off")
READY_TIMEOUT_S = 120.0


@dataclass
class FrontEnd:
    """One orchestrator + Envoy pair; `base_url` is its OpenAI API."""

    mode: str
    base_url: str
    metrics_url: str
    processes: list[ManagedProcess]

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop(grace=10)


def write_catalog(settings: Settings, model: str, admission: bool, path: Path) -> Path:
    raw = yaml.safe_load(settings.catalog_path.read_text()) or {}
    entry = (raw.get("models") or {}).get(model)
    if entry is None:
        aliases = {alias: name for name, spec in (raw.get("models") or {}).items()
                   for alias in spec.get("aliases") or ()}
        entry = raw["models"].get(aliases.get(model, ""))
    if entry is not None:
        entry.pop("fallback", None)
    routing = raw.setdefault("routing", {}) or {}
    raw["routing"] = routing
    routing["admission"] = {**(routing.get("admission") or {}), "enabled": admission}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def write_tiers(settings: Settings, path: Path) -> Path:
    raw = yaml.safe_load(settings.tiers_path.read_text()) or {}
    tiers = {name: {"models": ["*"], "priority": int(spec.get("priority", 0))}
             for name, spec in (raw.get("tiers") or {}).items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"default_tier": raw.get("default_tier", "free"), "tiers": tiers}))
    return path


def start_front_end(settings: Settings, mode: str, model: str, work_dir: Path) -> FrontEnd:
    """Starts the pair for `mode` ("on" or "off") and waits until Envoy and the orchestrator are ready."""
    if mode not in MODES:
        raise ValueError(f"unknown admission mode {mode!r}")
    host = settings.host
    orchestrator_port, metrics_port, listen_port, admin_port = (free_port(host) for _ in range(4))
    env = settings_env(settings)
    env.update({
        "SLUICE_ORCHESTRATOR_PORT": str(orchestrator_port),
        "SLUICE_ORCHESTRATOR_METRICS_PORT": str(metrics_port),
        "SLUICE_HTTP_PORT": str(listen_port),
        "SLUICE_CATALOG": str(write_catalog(settings, model, mode == "on", work_dir / f"catalog-{mode}.yaml")),
        "SLUICE_TIERS": str(write_tiers(settings, work_dir / "tiers.yaml")),
    })
    envoy_yaml = render_envoy_config(listen_port=listen_port, admin_port=admin_port,
                                     orchestrator_port=orchestrator_port, descriptor_path=GEN_ROOT / "sluice.pb",
                                     out_path=work_dir / f"envoy-{mode}.yaml", otlp_target=settings.otlp_target,
                                     trace_sampling=0.0)
    orchestrator = ManagedProcess(f"orchestrator-{mode}", [sys.executable, "-m", "services.orchestrator.server"],
                                  work_dir / "logs" / f"orchestrator-{mode}.log", env=env)
    envoy = ManagedProcess(f"envoy-{mode}", [str(Path(sys.executable).parent / "envoy"), "-c", str(envoy_yaml),
                                             "--disable-hot-restart", "--log-level", "warn"],
                           work_dir / "logs" / f"envoy-{mode}.log")
    front = FrontEnd(mode, f"http://{host}:{listen_port}/v1", f"http://{host}:{metrics_port}/metrics", [])
    for process, ready in ((orchestrator, lambda: grpc_serving(f"{host}:{orchestrator_port}")),
                           (envoy, lambda: envoy_ready(host, admin_port))):
        process.start()
        front.processes.append(process)
        if not wait_until(ready, READY_TIMEOUT_S, abort=lambda p=process: not p.alive()):
            front.stop()
            raise RuntimeError(f"{process.name} did not start; last lines of {process.log_path}:\n"
                               f"{process.log_tail()}")
    return front
