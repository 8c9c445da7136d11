"""Triton replicas: SLUICE_TRITON_REPLICAS tritonservers started from the one rendered model repository, each on its
own ports (settings.triton_replica(i)) with its own shared-memory prefix, log file and readiness probe."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from services.common.settings import Settings
from services.supervisor.health import triton_ready
from services.supervisor.processes import ManagedProcess, check_port_free, wait_until
from services.supervisor.repository import render_repository
from services.supervisor.triton import prepare_backends, triton_command, triton_env


def replica_name(index: int) -> str:
    """Replica 0 keeps the plain name `triton` (logs, `sluice status`); the others are `triton-1`, `triton-2`..."""
    return "triton" if index == 0 else f"triton-{index}"


def triton_replica_processes(settings: Settings, repository: Path, backends: Path,
                             log_dir: Path) -> list[tuple[ManagedProcess, Callable[[], bool]]]:
    """One (process, readiness probe) per replica, replica 0 first; nothing is started."""
    processes = []
    for index in range(settings.triton_replicas):
        replica = settings.triton_replica(index)
        name = replica_name(index)
        process = ManagedProcess(name, triton_command(replica, repository, backends), log_dir / f"{name}.log",
                                 env=triton_env())
        processes.append((process, lambda r=replica: triton_ready(r.host, r.triton_http_port)))
    return processes


def replica_ports(settings: Settings) -> dict[str, int]:
    """What each replica listens on, named for port-conflict messages and the stack's state file."""
    ports = {}
    for index in range(settings.triton_replicas):
        http, grpc, metrics = settings.triton_replica_ports(index)
        label = "Triton" if index == 0 else f"Triton replica {index}"
        ports |= {f"{label} HTTP": http, f"{label} gRPC": grpc, f"{label} metrics": metrics}
    return ports


def replicas_ready(settings: Settings) -> dict[str, bool]:
    """Readiness of every replica, by process name (for `sluice status`)."""
    return {replica_name(i): triton_ready(settings.host, settings.triton_replica_ports(i)[0])
            for i in range(settings.triton_replicas)}


class TritonReplicas:
    """Only the Triton replicas, without the rest of the stack: for benchmarks and tests that talk to Triton
    directly. `processes[i]` is replica i once started."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.processes: list[ManagedProcess] = []

    def start(self, timeout: float = 180.0) -> TritonReplicas:
        s = self.settings
        for what, port in replica_ports(s).items():
            check_port_free(s.host, port, what)
        s.run_dir.mkdir(parents=True, exist_ok=True)
        planned = triton_replica_processes(s, render_repository(s), prepare_backends(s.run_dir), s.run_dir / "logs")
        for process, ready in planned:  # one after the other, as `sluice up` does: loading is CPU-heavy
            process.start()
            self.processes.append(process)
            if not wait_until(ready, timeout, abort=lambda p=process: not p.alive()):
                tail = process.log_tail()
                self.stop()
                raise RuntimeError(f"{process.name} did not become ready; last lines of {process.log_path}:\n{tail}")
        return self

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop(grace=10)
