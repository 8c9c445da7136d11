"""How to run the real tritonserver that nvidia-pytriton ships, on CPU, with the Python backend."""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from pathlib import Path

from services.common.settings import Settings

PYTRITON = Path(sysconfig.get_paths()["purelib"]) / "pytriton"
TRITON_HOME = PYTRITON / "tritonserver"
TRITON_LIBS = Path(sysconfig.get_paths()["purelib"]) / "nvidia_pytriton.libs"


def prepare_backends(run_dir: Path) -> Path:
    """A backend directory whose python backend has the stub matching this interpreter's version."""
    backends = run_dir / "triton_backends"
    python_backend = backends / "python"
    if not (python_backend / "triton_python_backend_stub").exists():
        shutil.copytree(TRITON_HOME / "backends" / "python", python_backend, dirs_exist_ok=True)
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        stub = TRITON_HOME / "python_backend_stubs" / version / "triton_python_backend_stub"
        if not stub.exists():
            raise FileNotFoundError(f"nvidia-pytriton ships no Python backend stub for Python {version}")
        shutil.copy2(stub, python_backend / "triton_python_backend_stub")
    return backends


def triton_env() -> dict[str, str]:
    env = dict(os.environ)
    # The stub links libpython; point it at this interpreter's own (pyenv) before the system one.
    libdirs = [str(TRITON_LIBS), sysconfig.get_config_var("LIBDIR") or ""]
    env["LD_LIBRARY_PATH"] = ":".join(p for p in [*libdirs, env.get("LD_LIBRARY_PATH", "")] if p)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    env.setdefault("OMP_NUM_THREADS", "2")
    return env


def triton_command(settings: Settings, repository: Path, backends: Path) -> list[str]:
    return [
        str(TRITON_HOME / "bin" / "tritonserver"),
        f"--model-repository={repository}",
        f"--backend-directory={backends}",
        f"--http-address={settings.host}",
        f"--http-port={settings.triton_http_port}",
        f"--grpc-address={settings.host}",
        f"--grpc-port={settings.triton_grpc_port}",
        f"--metrics-address={settings.host}",
        f"--metrics-port={settings.triton_metrics_port}",
        "--allow-metrics=true",
        "--allow-gpu-metrics=false",
        "--allow-cpu-metrics=true",
        "--disable-auto-complete-config",
        # Explicit model control, everything loaded at start: operators (and the fault tests) can unload or reload
        # one deployment without restarting the server.
        "--model-control-mode=explicit",
        "--load-model=*",
        "--exit-on-error=true",
        "--log-verbose=0",
        # A unique shared-memory prefix per server, so several servers (tests, replicas) can coexist.
        f"--backend-config=python,shm-region-prefix-name=sluice{settings.triton_grpc_port}x{os.getpid()}",
        *trace_flags(settings),
    ]


def trace_flags(settings: Settings) -> list[str]:
    """Triton's OpenTelemetry mode, exporting OTLP/HTTP JSON to Sluice's receiver (which repairs the traces that
    did not adopt the caller's context and forwards them where SLUICE_OTLP_ENDPOINT says). Every request is traced
    (rate=1): a request whose traceparent Triton failed to read must still produce spans to repair; the receiver
    drops those of unsampled callers. Off when the sample rate is 0."""
    if settings.trace_sample_rate <= 0:
        return []
    return [f"--trace-config={setting}" for setting in (
        "mode=opentelemetry", "rate=1", "count=-1", "level=TIMESTAMPS",
        f"opentelemetry,url={settings.telemetry_url}/v1/traces",
        "opentelemetry,resource=service.name=triton",
        "opentelemetry,bsp_schedule_delay=500",
    )]
