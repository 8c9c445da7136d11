"""The control plane as its own process (Kubernetes): `serve` watches the orchestrator Service's EndpointSlices and
serves Envoy over ADS; `bootstrap` writes the Envoy bootstrap that points at it (an init container runs it).

    python -m services.control_plane serve --namespace sluice --service sluice-orchestrator --port 18000
    python -m services.control_plane bootstrap --control-plane sluice-control-plane:18000 --out /etc/envoy/envoy.yaml
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from services.cli.protos import GEN_ROOT
from services.common.settings import Settings
from services.control_plane.edge import EdgeControlPlane
from services.control_plane.endpoint_slices import watch_endpoint_slices
from services.control_plane.resources import bootstrap
from services.supervisor.envoy_config import render_envoy_yaml


def _renderer(settings: Settings, listen_address: str):
    def render() -> str:
        return render_envoy_yaml(listen_port=settings.http_port, admin_port=settings.envoy_admin_port,
                                 orchestrator_port=settings.orchestrator_port, descriptor_path=GEN_ROOT / "sluice.pb",
                                 listen_address=listen_address, otlp_target=settings.otlp_target,
                                 trace_sampling=settings.trace_sample_rate)
    return render


def main() -> None:
    parser = argparse.ArgumentParser(description="Sluice's xDS control plane for Envoy")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve ADS; orchestrator endpoints from the Service's EndpointSlices")
    serve.add_argument("--namespace", default=os.environ.get("POD_NAMESPACE", "default"))
    serve.add_argument("--service", default="sluice-orchestrator")
    serve.add_argument("--port-name", default="grpc", help="the orchestrator Service's gRPC port name")
    serve.add_argument("--port", type=int, default=18000)
    serve.add_argument("--listen-address", default="0.0.0.0", help="where Envoy's listener binds")
    boot = sub.add_parser("bootstrap", help="write Envoy's bootstrap (admin + the control plane's cluster)")
    boot.add_argument("--control-plane", required=True, metavar="HOST:PORT")
    boot.add_argument("--node-id", default=os.environ.get("POD_NAME", "sluice-edge"))
    boot.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = Settings.from_env()
    if args.command == "bootstrap":
        host, _, port = args.control_plane.rpartition(":")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(bootstrap(_renderer(settings, "0.0.0.0")(), node_id=args.node_id,
                                      control_plane_host=host, control_plane_port=int(port)), encoding="utf-8")
        return
    control = EdgeControlPlane(_renderer(settings, args.listen_address), host="0.0.0.0", port=args.port).start()
    control.set_orchestrators([])
    watch_endpoint_slices(args.namespace, args.service, control.set_orchestrators, port_name=args.port_name)


if __name__ == "__main__":
    main()
