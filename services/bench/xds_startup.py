"""What xDS adds to the edge's start-up: time from launching Envoy to its /ready answering 200, with the static
bootstrap (the rendered template) and with the xDS bootstrap (control plane started in this process first, the
time counted from before it is created).

    python -m services.bench.xds_startup [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from services.cli.protos import GEN_ROOT
from services.control_plane.edge import EdgeControlPlane
from services.control_plane.resources import Endpoint
from services.supervisor.envoy_config import render_envoy_config, render_envoy_yaml
from services.supervisor.health import envoy_ready
from services.supervisor.processes import free_port, wait_until

ENVOY = Path(sys.executable).parent / "envoy"


def _until_ready(config: Path, admin_port: int, began: float) -> float:
    envoy = subprocess.Popen([str(ENVOY), "-c", str(config), "--disable-hot-restart", "--log-level", "error"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if not wait_until(lambda: envoy_ready("127.0.0.1", admin_port), 30, interval=0.005):
            raise RuntimeError("Envoy did not become ready")
        return time.perf_counter() - began
    finally:
        envoy.terminate()
        envoy.wait(10)


def run_once(folder: Path, use_xds: bool) -> float:
    listen, admin, orchestrator = free_port(), free_port(), free_port()
    settings = {"listen_port": listen, "admin_port": admin, "orchestrator_port": orchestrator,
                "descriptor_path": GEN_ROOT / "sluice.pb"}
    began = time.perf_counter()
    if not use_xds:
        return _until_ready(render_envoy_config(out_path=folder / "static.yaml", **settings), admin, began)
    control = EdgeControlPlane(lambda: render_envoy_yaml(**settings)).start()
    try:
        control.set_orchestrators([Endpoint("127.0.0.1", orchestrator)])
        return _until_ready(control.write_bootstrap(folder / "xds.yaml"), admin, began)
    finally:
        control.stop(grace=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        for use_xds in (False, True):
            times = sorted(run_once(Path(folder), use_xds) for _ in range(args.runs))
            label = "xDS   " if use_xds else "static"
            print(f"{label}: Envoy ready in median {statistics.median(times) * 1000:.0f} ms "
                  f"(min {times[0] * 1000:.0f}, max {times[-1] * 1000:.0f}; {args.runs} runs)")


if __name__ == "__main__":
    main()
