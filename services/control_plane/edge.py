"""The edge's control plane: the ADS server plus the one thing that changes while a stack runs, the set of
orchestrator replicas. The supervisor drives it locally; in Kubernetes `python -m services.control_plane` drives it
from the orchestrators' EndpointSlices."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from services.control_plane import xds_api
from services.control_plane.ads_server import create_server
from services.control_plane.config_store import ConfigStore
from services.control_plane.resources import Endpoint, bootstrap, edge_resources

log = logging.getLogger("sluice.control_plane")


class EdgeControlPlane:
    """`render` returns the filled-in Envoy template (envoy/envoy.yaml.tmpl); it is read again at every update, so
    the template stays the one description of listeners, routes and clusters."""

    def __init__(self, render: Callable[[], str], host: str = "127.0.0.1", port: int = 0,
                 node_id: str = "sluice-edge") -> None:
        self.render = render
        self.host = host
        self.node_id = node_id
        self.store = ConfigStore()
        self._lock = threading.Lock()
        self._orchestrators: tuple[Endpoint, ...] = ()
        self.server, self.port = create_server(self.store, f"{host}:{port}")
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)

    def start(self) -> EdgeControlPlane:
        self.server.start()
        self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        return self

    def stop(self, grace: float = 1.0) -> None:
        self.server.stop(grace).wait()

    def write_bootstrap(self, path: Path) -> Path:
        """Envoy's bootstrap: admin and the other bootstrap-only sections, and this control plane's address."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(bootstrap(self.render(), node_id=self.node_id, control_plane_host=self.host,
                                  control_plane_port=self.port), encoding="utf-8")
        return path

    @property
    def orchestrators(self) -> tuple[Endpoint, ...]:
        return self._orchestrators

    def set_orchestrators(self, endpoints: Sequence[Endpoint]) -> dict[str, str]:
        """Serve the template with `endpoints` as the orchestrator cluster's members; returns the versions served."""
        with self._lock:
            self._orchestrators = tuple(endpoints)
            versions = self.store.publish(edge_resources(self.render(), self._orchestrators))
        log.info("serving %d orchestrator endpoint(s), endpoints version %s", len(endpoints),
                 versions[xds_api.ENDPOINT_TYPE])
        return versions

    def wait_until_applied(self, timeout: float) -> bool:
        """True once every connected Envoy runs the endpoints now served (their EDS ACK)."""
        version = self.store.versions()[xds_api.ENDPOINT_TYPE]
        return self.store.wait_for_ack(xds_api.ENDPOINT_TYPE, version, timeout)

    def status(self) -> dict[str, object]:
        """For `sluice status`: what is served, what each Envoy acknowledged, and the NACKs so far."""
        short = {t: t.rsplit(".", 1)[-1] for t in xds_api.PUSH_ORDER}
        return {
            "address": f"{self.host}:{self.port}",
            "served": {short[t]: v for t, v in self.store.versions().items()},
            "acked": {node: {short.get(t, t): v for t, v in types.items()}
                      for node, types in self.store.acked().items()},
            "rejections": [{"type": short.get(r.type_url, r.type_url), "version": r.version, "reason": r.reason}
                           for r in self.store.rejections[-5:]],
            "orchestrators": [f"{e.host}:{e.port}" for e in self._orchestrators],
        }

