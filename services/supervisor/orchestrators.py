"""Orchestrator replicas of a running stack, and the order that keeps every request whole while they change.

Scale-up: start a replica on free ports, wait until its gRPC health check says SERVING, then publish it to Envoy
(EDS). Scale-down: publish the set without it, wait until Envoy ACKs that endpoint set (it picks the replica for no new
request), give Envoy's workers a moment to take the new host set, then SIGTERM the replica: its gRPC server refuses
new calls and lets in-flight streams finish within the grace before it exits.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from services.common.settings import Settings
from services.control_plane.edge import EdgeControlPlane
from services.control_plane.resources import Endpoint
from services.supervisor.health import grpc_serving
from services.supervisor.processes import ManagedProcess, free_port, wait_until

log = logging.getLogger("sluice.supervisor")
ENVOY_APPLY_TIMEOUT = 10.0  # how long an endpoint change may take to be ACKed by Envoy
WORKER_SETTLE_S = 0.5  # after the ACK: Envoy's worker threads take the new host set from the main thread


class ScaleError(RuntimeError):
    pass


@dataclass
class OrchestratorReplica:
    index: int
    port: int
    metrics_port: int
    process: ManagedProcess

    @property
    def name(self) -> str:
        return self.process.name


def replica_name(index: int) -> str:
    return "orchestrator" if index == 0 else f"orchestrator-{index}"


def orchestrator_process(settings: Settings, index: int, port: int, metrics_port: int, env: dict[str, str],
                         log_dir: Path, grace: float) -> ManagedProcess:
    env = env | {"SLUICE_ORCHESTRATOR_PORT": str(port), "SLUICE_ORCHESTRATOR_METRICS_PORT": str(metrics_port)}
    name = replica_name(index)
    return ManagedProcess(name, [sys.executable, "-m", "services.orchestrator.server", "--grace", str(grace)],
                          log_dir / f"{name}.log", env=env, nice=settings.platform_nice)


class OrchestratorSet:
    """The replicas Envoy sends requests to. `adopt` and `drop` tell the stack which processes to supervise."""

    def __init__(self, settings: Settings, control: EdgeControlPlane, env: dict[str, str], log_dir: Path,
                 grace: float, adopt: Callable[[ManagedProcess], None], drop: Callable[[ManagedProcess], None]) -> None:
        self.settings = settings
        self.control = control
        self.env = env
        self.log_dir = log_dir
        self.grace = grace
        self._adopt, self._drop = adopt, drop
        self.replicas: list[OrchestratorReplica] = []

    def first(self) -> OrchestratorReplica:
        """Replica 0 on the configured ports; started by the stack with everything else."""
        s = self.settings
        process = orchestrator_process(s, 0, s.orchestrator_port, s.orchestrator_metrics_port, self.env,
                                       self.log_dir, self.grace)
        replica = OrchestratorReplica(0, s.orchestrator_port, s.orchestrator_metrics_port, process)
        self.replicas.append(replica)
        return replica

    def endpoints(self) -> list[Endpoint]:
        return [Endpoint(self.settings.host, r.port) for r in self.replicas]

    def publish(self) -> None:
        self.control.set_orchestrators(self.endpoints())

    def scale_to(self, count: int, timeout: float = 120.0) -> None:
        if count < 1:
            raise ScaleError(f"a stack needs at least one orchestrator, asked for {count}")
        while len(self.replicas) < count:
            self._add(timeout)
        while len(self.replicas) > count:
            self._remove()

    def _add(self, timeout: float) -> None:
        s = self.settings
        index = max(r.index for r in self.replicas) + 1
        port, metrics_port = free_port(s.host), free_port(s.host)
        process = orchestrator_process(s, index, port, metrics_port, self.env, self.log_dir, self.grace)
        began = time.monotonic()
        process.start()
        target = f"{s.host}:{port}"
        if not wait_until(lambda: grpc_serving(target), timeout, abort=lambda: not process.alive()):
            tail = process.log_tail()
            process.stop(grace=5)
            raise ScaleError(f"{process.name} did not become ready; last lines of {process.log_path}:\n{tail}")
        self.replicas.append(OrchestratorReplica(index, port, metrics_port, process))
        self._adopt(process)
        self.publish()
        applied = self.control.wait_until_applied(ENVOY_APPLY_TIMEOUT)
        log.info("%s serving on %s after %.1f s; Envoy %s", process.name, target, time.monotonic() - began,
                 "sends it requests" if applied else "has not acknowledged it yet")

    def roll(self, env_changes: dict[str, str], timeout: float = 120.0) -> None:
        """Replace every replica by one started with `env_changes` (e.g. a new set of Triton replicas): each new one
        joins before an old one drains, so capacity never drops and no request is cut."""
        self.env = self.env | env_changes
        for old in list(self.replicas):
            self._add(timeout)
            self._remove(old)

    def _remove(self, replica: OrchestratorReplica | None = None) -> None:
        """Drain and stop `replica` (default: the newest, so replica 0 keeps the configured ports)."""
        replica = replica or self.replicas[-1]
        self.replicas.remove(replica)
        self.publish()
        if not self.control.wait_until_applied(ENVOY_APPLY_TIMEOUT):
            log.warning("Envoy did not acknowledge the endpoints without %s in %.0f s; stopping it anyway",
                        replica.name, ENVOY_APPLY_TIMEOUT)
        time.sleep(WORKER_SETTLE_S)
        self._drop(replica.process)
        began = time.monotonic()
        code = replica.process.stop(grace=self.grace + 5)  # in-flight streams finish within the grace
        log.info("%s drained and stopped in %.1f s (exit code %s)", replica.name, time.monotonic() - began, code)

    def describe(self) -> list[dict[str, object]]:
        return [{"name": r.name, "port": r.port, "metrics_port": r.metrics_port, "pid": r.process.pid}
                for r in self.replicas]
