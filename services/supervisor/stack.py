"""`sluice up / down / status`: run Triton, the orchestrator and Envoy as one supervised stack.

The supervisor stays alive for the life of the stack (Envoy dies with its parent), stops every child on SIGINT or
SIGTERM, and records its state in <run dir>/stack.json so a detached stack can be found and stopped.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from services.cli.protos import GEN_ROOT
from services.common.settings import Settings
from services.control_plane.edge import EdgeControlPlane
from services.supervisor.control import ControlError, ControlServer
from services.supervisor.control import request as control_request
from services.supervisor.envoy_config import render_envoy_yaml
from services.supervisor.health import drain_envoy, envoy_ready, grpc_serving, http_ok, triton_ready
from services.supervisor.orchestrators import OrchestratorSet, ScaleError
from services.supervisor.processes import ManagedProcess, check_port_free, pid_alive, wait_until
from services.supervisor.replicas import replica_name as triton_replica_name
from services.supervisor.replicas import replica_ports, replicas_ready, triton_replica_processes
from services.supervisor.repository import render_repository
from services.supervisor.restarts import RestartPolicy, Restarts
from services.supervisor.stubs import reap_stubs
from services.supervisor.triton import prepare_backends, triton_command, triton_env

STATE_FILE = "stack.json"
READY_TIMEOUT = 180.0

log = logging.getLogger("sluice.supervisor")


class StackError(RuntimeError):
    pass


def settings_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "SLUICE_HOST": settings.host,
        "SLUICE_HTTP_PORT": str(settings.http_port),
        "SLUICE_ENVOY_ADMIN_PORT": str(settings.envoy_admin_port),
        "SLUICE_ORCHESTRATOR_PORT": str(settings.orchestrator_port),
        "SLUICE_TRITON_HTTP_PORT": str(settings.triton_http_port),
        "SLUICE_TRITON_GRPC_PORT": str(settings.triton_grpc_port),
        "SLUICE_TRITON_METRICS_PORT": str(settings.triton_metrics_port),
        "SLUICE_TRITON_REPLICAS": str(settings.triton_replicas),
        "SLUICE_KV_CACHE_MB": str(settings.kv_cache_mb),
        "SLUICE_SAFETY_PORT": str(settings.safety_port),
        "SLUICE_RETRIEVAL_PORT": str(settings.retrieval_port),
        "SLUICE_MILVUS_URI": settings.milvus_uri or "",
        "SLUICE_RUN_DIR": str(settings.run_dir),
        "SLUICE_MODEL_DIR": str(settings.model_dir),
        "SLUICE_MODEL_NAME": settings.model_name,
        "SLUICE_CATALOG": str(settings.catalog_path),
        "SLUICE_STAGES": str(settings.stages_path),
        "SLUICE_DATABASE_URL": settings.db_url,
        "SLUICE_REDIS_URL": settings.redis_url or "",
        "SLUICE_TIERS": str(settings.tiers_path),
        "SLUICE_OTLP_ENDPOINT": settings.otlp_endpoint or "",
        "SLUICE_OTLP_GRPC_PORT": str(settings.otlp_grpc_port),
        "SLUICE_OTLP_HTTP_PORT": str(settings.otlp_http_port),
        "SLUICE_TRACE_SAMPLE_RATE": str(settings.trace_sample_rate),
        "SLUICE_TRACE_CONTENT": "1" if settings.trace_content else "0",
        "SLUICE_ORCHESTRATOR_METRICS_PORT": str(settings.orchestrator_metrics_port),
        "SLUICE_SAFETY_METRICS_PORT": str(settings.safety_metrics_port),
        "SLUICE_RETRIEVAL_METRICS_PORT": str(settings.retrieval_metrics_port),
        "SLUICE_STREAM_IDLE_TIMEOUT_S": str(settings.stream_idle_timeout_s),
        "SLUICE_SLO_TTFT_MS": str(settings.slo_ttft_ms),
        "SLUICE_SLO_TPOT_MS": str(settings.slo_tpot_ms),
        "SLUICE_LOG_LEVEL": settings.log_level,
    })
    return env


@dataclass
class Stack:
    settings: Settings
    shutdown_grace: float = 30.0
    restart_policy: RestartPolicy = field(default_factory=RestartPolicy)

    def __post_init__(self) -> None:
        self.processes: list[ManagedProcess] = []
        self._stopping = threading.Event()
        self._restarts = Restarts(self.restart_policy, on_death=_clean_up_after)
        self._lock = threading.Lock()  # supervise() and stop() may run on different threads (tests)
        # Scales run on one long-lived thread: a child's parent-death signal fires when the *thread* that started it
        # exits, so a replica started from a short-lived request thread would be killed as soon as it answered.
        self._state_lock = threading.Lock()
        self._scaler = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scale")
        self.control: EdgeControlPlane | None = None  # Envoy's xDS control plane, in this process
        self.orchestrators: OrchestratorSet | None = None

    @property
    def log_dir(self) -> Path:
        return self.settings.run_dir / "logs"

    def _ports(self) -> dict[str, int]:
        s = self.settings
        return {"Envoy listener": s.http_port, "Envoy admin": s.envoy_admin_port,
                "orchestrator": s.orchestrator_port, **replica_ports(s),
                "safety": s.safety_port, "retrieval": s.retrieval_port, "OTLP gRPC receiver": s.otlp_grpc_port,
                "OTLP HTTP receiver": s.otlp_http_port, "orchestrator metrics": s.orchestrator_metrics_port,
                "safety metrics": s.safety_metrics_port, "retrieval metrics": s.retrieval_metrics_port}

    def _build_processes(self) -> list[tuple[ManagedProcess, object]]:
        s = self.settings
        s.run_dir.mkdir(parents=True, exist_ok=True)
        repository = render_repository(s)
        backends = prepare_backends(s.run_dir)
        descriptor = GEN_ROOT / "sluice.pb"
        if not descriptor.exists():
            raise StackError(f"{descriptor} is missing: run `make protos` (or `sluice protos`) first")

        def render_template() -> str:
            return render_envoy_yaml(listen_port=s.http_port, admin_port=s.envoy_admin_port,
                                     orchestrator_port=s.orchestrator_port, descriptor_path=descriptor,
                                     otlp_target=s.otlp_target, trace_sampling=s.trace_sample_rate)

        # Envoy's listeners, routes and clusters come over ADS from the control plane (which renders the template);
        # its bootstrap names only the control plane. The orchestrator cluster's members are self.orchestrators.
        self.control = EdgeControlPlane(render_template, host=s.host).start()
        envoy_yaml = self.control.write_bootstrap(s.run_dir / "envoy.yaml")
        self.orchestrators = OrchestratorSet(s, self.control, settings_env(s), self.log_dir, self.shutdown_grace,
                                             adopt=self._adopt, drop=self._drop)
        orchestrator = self.orchestrators.first().process
        self.orchestrators.publish()
        envoy_bin = Path(sys.executable).parent / "envoy"
        # The OTLP receiver comes first so no span is lost; Triton always exports to it (it repairs Triton's traces
        # and forwards them when SLUICE_OTLP_ENDPOINT names another collector).
        # The platform's processes run at SLUICE_PLATFORM_NICE; Triton (the engine) at the supervisor's niceness.
        nice = s.platform_nice
        telemetry = ManagedProcess("telemetry", [sys.executable, "-m", "services.telemetry.server"],
                                   self.log_dir / "telemetry.log", env=settings_env(s), nice=nice)
        safety = ManagedProcess("safety", [sys.executable, "-m", "services.safety.server"],
                                self.log_dir / "safety.log", env=settings_env(s), nice=nice)
        retrieval = ManagedProcess("retrieval", [sys.executable, "-m", "services.retrieval.server"],
                                   self.log_dir / "retrieval.log", env=settings_env(s), nice=nice)
        envoy = ManagedProcess("envoy", [str(envoy_bin), "-c", str(envoy_yaml), "--disable-hot-restart",
                                         "--log-level", "warn", "--file-flush-interval-msec", "500"],
                               self.log_dir / "envoy.log", nice=nice)
        return [
            (telemetry, lambda: http_ok(f"{s.telemetry_url}/health")),
            *triton_replica_processes(s, repository, backends, self.log_dir),  # SLUICE_TRITON_REPLICAS of them
            (safety, lambda: grpc_serving(f"{s.host}:{s.safety_port}")),
            (retrieval, lambda: grpc_serving(s.retrieval_url)),
            (orchestrator, lambda: grpc_serving(f"{s.host}:{s.orchestrator_port}")),
            (envoy, lambda: envoy_ready(s.host, s.envoy_admin_port)),
        ]

    def start(self, timeout: float = READY_TIMEOUT) -> None:
        for what, port in self._ports().items():
            check_port_free(self.settings.host, port, what)
        deadline = time.monotonic() + timeout
        for process, ready in self._build_processes():
            process.start()
            self.processes.append(process)
            ok = wait_until(ready, max(deadline - time.monotonic(), 1.0), abort=lambda p=process: not p.alive())
            if not ok:
                reason = "exited" if not process.alive() else "did not become ready in time"
                tail = process.log_tail()
                self.stop()
                raise StackError(f"{process.name} {reason}; last lines of {process.log_path}:\n{tail}")

    def stop(self) -> None:
        """Graceful shutdown: Envoy stops accepting connections (open ones keep streaming), the orchestrator refuses
        new calls and lets in-flight streams finish within its grace (writing their usage records), then Envoy
        stops, then everything behind the orchestrator in reverse start order (Triton last but one)."""
        self._stopping.set()
        with self._lock:
            by_name = {p.name: p for p in self.processes}
            envoy = by_name.get("envoy")
            orchestrators = [r.process for r in self.orchestrators.replicas] if self.orchestrators else []
            if envoy is not None and envoy.alive():
                drain_envoy(self.settings.host, self.settings.envoy_admin_port)
            for orchestrator in orchestrators:  # all at once: their in-flight streams share the one grace
                if orchestrator.alive() and orchestrator.popen is not None:
                    orchestrator.popen.send_signal(signal.SIGTERM)
            for orchestrator in orchestrators:
                self._stop_one(orchestrator, grace=self.shutdown_grace + 5)
            for process in reversed(self.processes):
                self._stop_one(process, grace=10)
        self._scaler.shutdown(wait=False)
        if self.control is not None:
            self.control.stop()

    def _adopt(self, process: ManagedProcess) -> None:
        with self._lock:
            self.processes.append(process)

    def _drop(self, process: ManagedProcess) -> None:
        with self._lock:
            self.processes.remove(process)

    def scale(self, orchestrators: int | None = None, triton: int | None = None) -> dict[str, object]:
        """`sluice scale`: change the number of orchestrator and Triton replicas while the stack serves (Envoy keeps
        running)."""
        if self.orchestrators is None or self._stopping.is_set():
            raise ScaleError("the stack is not running")
        try:
            if triton is not None and triton != self.settings.triton_replicas:
                self._scaler.submit(self._scale_triton, triton).result()
            if orchestrators is not None:
                self._scaler.submit(self.orchestrators.scale_to, orchestrators).result()
        finally:
            self.write_state(ready=True)  # the replicas, for `sluice status` and `down`
        return self.control_status()

    def _scale_triton(self, count: int) -> None:
        """Orchestrators route across the Triton replicas they were started with, so they are rolled (a new one
        joins Envoy's endpoints before an old one drains) onto the new set: after the new Triton replicas are ready
        when growing, before the surplus ones stop when shrinking (Triton finishes in-flight requests on SIGTERM).
        Safety and retrieval keep their start-up list and fail over between the replicas on it; replica 0 stays."""
        current = self.settings.triton_replicas
        grown = self.settings.replace(triton_replicas=count)
        for index in range(current, count):
            replica = grown.triton_replica(index)
            for what, port in zip(("HTTP", "gRPC", "metrics"), grown.triton_replica_ports(index), strict=True):
                check_port_free(grown.host, port, f"Triton replica {index} {what}")
            name = triton_replica_name(index)
            process = ManagedProcess(name, triton_command(replica, self.settings.run_dir / "model_repository",
                                                          self.settings.run_dir / "triton_backends"),
                                     self.log_dir / f"{name}.log", env=triton_env())
            process.start()
            if not wait_until(lambda r=replica: triton_ready(r.host, r.triton_http_port), READY_TIMEOUT,
                              abort=lambda p=process: not p.alive()):
                tail = process.log_tail()
                process.stop(grace=10)
                raise ScaleError(f"{name} did not become ready; last lines of {process.log_path}:\n{tail}")
            self._adopt(process)
        self.settings = grown
        self.orchestrators.settings = grown
        self.orchestrators.roll({"SLUICE_TRITON_REPLICAS": str(count)})
        surplus = [p for p in self.processes if p.name in {triton_replica_name(i) for i in range(count, current)}]
        for process in surplus:
            self._drop(process)
            self._stop_one(process, grace=35)

    def control_status(self) -> dict[str, object]:
        return {"ok": True, "orchestrators": self.orchestrators.describe() if self.orchestrators else [],
                "xds": self.control.status() if self.control else None}

    def handle_control(self, request: dict[str, object]) -> dict[str, object]:
        if request.get("op") == "status":
            return self.control_status()
        if request.get("op") == "scale":
            counts = {key: request.get(key) for key in ("orchestrators", "triton")}
            for key, value in counts.items():
                if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                    raise ValueError(f"{key} must be a positive integer, got {value!r}")
            return self.scale(**counts)  # type: ignore[arg-type]
        raise ValueError(f"unknown request {request.get('op')!r}")

    @staticmethod
    def _stop_one(process: ManagedProcess, grace: float) -> None:
        if not process.alive():
            return
        began = time.monotonic()
        code = process.stop(grace=grace)
        log.info("%s stopped in %.1f s (exit code %s)", process.name, time.monotonic() - began, code)

    def supervise(self) -> ManagedProcess | None:
        """One round of supervision: restarts dead processes (with backoff). Returns a crash-looping process (the
        stack should stop), else None."""
        with self._lock:
            if self._stopping.is_set():
                return None
            return self._restarts.tick(self.processes)

    @property
    def restart_counts(self) -> dict[str, int]:
        counts = self._restarts.counts()
        return {p.name: counts.get(p.name, 0) for p in self.processes}

    def pids(self) -> dict[str, int | None]:
        return {p.name: p.pid for p in self.processes}

    def write_state(self, ready: bool) -> None:
        state = {"pid": os.getpid(), "ready": ready, "started": time.time(),
                 "endpoint": self.settings.public_base_url, "ports": self._ports(),
                 "processes": self.pids(), "restarts": self.restart_counts,
                 "orchestrators": self.orchestrators.describe() if self.orchestrators else [],
                 "triton_replicas": self.settings.triton_replicas}
        path = self.settings.run_dir / STATE_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._state_lock:  # the supervision loop and a scale may both write it
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(state, indent=2))
            tmp.replace(path)


def _clean_up_after(process: ManagedProcess) -> None:
    if process.name.startswith("triton") and process.pid is not None:
        reap_stubs(process.pid)


def banner(settings: Settings, seconds: float, key: str) -> str:
    from services.orchestrator.tenancy.dev_key import key_file

    base = settings.public_base_url
    return f"""
Sluice is up ({seconds:.1f} s): Triton (CPU), safety, retrieval, orchestrator and Envoy
  playground (browser)  : http://{settings.host}:{settings.http_port}/
  OpenAI-compatible API : {base}   (model: {settings.model_name})
  health                : http://{settings.host}:{settings.http_port}/healthz, /readyz, /openapi.yaml
  native gRPC (same port): {settings.host}:{settings.http_port}   service sluice.v1.Chat
  Triton                 : grpc {settings.triton_grpc_url}, metrics http://{settings.host}:{settings.triton_metrics_port}/metrics
  logs                   : {settings.run_dir / 'logs'}
  traces                 : sluice trace <x-request-id>   (OTLP receiver {settings.telemetry_url})
  metrics                : orchestrator http://{settings.host}:{settings.orchestrator_metrics_port}/metrics
  dev API key (tenant "dev", enterprise tier; also in {key_file(settings)}):
    {key}

Try it:
  curl -N {base}/chat/completions -H 'Content-Type: application/json' -H "Authorization: Bearer {key}" \\
    -d '{{"model": "{settings.model_name}", "messages": [{{"role": "user", "content": "Hello!"}}], "stream": true}}'
"""


def run_foreground(settings: Settings) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)  # its INFO lines (plugins, SQLite impl) are console noise
    stack = Stack(settings)
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    started = time.monotonic()
    try:
        stack.start()
    except StackError as exc:
        print(f"sluice: {exc}", file=sys.stderr)
        return 1
    from services.orchestrator.tenancy.dev_key import ensure_dev_key

    key = ensure_dev_key(settings)  # before the stack says it is ready, so `up --detach` finds the key file
    control = ControlServer(settings.run_dir, stack.handle_control).start()  # `sluice scale`, `sluice status`
    stack.write_state(ready=True)
    print(banner(settings, time.monotonic() - started, key), flush=True)
    exit_code = 0
    while not stop.wait(0.5):
        pids = stack.pids()
        failed = stack.supervise()
        if failed is not None:
            print(f"sluice: {failed.name} keeps exiting; stopping the stack\n{failed.log_tail()}", file=sys.stderr)
            exit_code = 1
            break
        if stack.pids() != pids:
            stack.write_state(ready=True)  # new pids and restart counts, for `sluice status` / `down`
    print("sluice: stopping...", flush=True)
    control.stop()
    stack.stop()
    (settings.run_dir / STATE_FILE).unlink(missing_ok=True)
    return exit_code


def _read_state(settings: Settings) -> dict | None:
    path = settings.run_dir / STATE_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def up(detach: bool, settings: Settings | None = None) -> int:
    settings = settings or Settings.from_env()
    state = _read_state(settings)
    if state and pid_alive(state.get("pid")):
        print(f"sluice: already running (pid {state['pid']}) at {state['endpoint']}", file=sys.stderr)
        return 1
    if not detach:
        return run_foreground(settings)
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    (settings.run_dir / STATE_FILE).unlink(missing_ok=True)
    log = (settings.run_dir / "supervisor.log").open("ab")
    started = time.monotonic()
    child = subprocess.Popen([sys.executable, "-m", "services.supervisor.stack", "--foreground"],
                             env=settings_env(settings), stdout=log, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, start_new_session=True)

    def ready() -> bool:
        current = _read_state(settings)
        return bool(current and current.get("ready") and current.get("pid") == child.pid)

    if not wait_until(ready, READY_TIMEOUT + 10, interval=0.1, abort=lambda: child.poll() is not None):
        child.terminate()
        tail = "\n".join((settings.run_dir / "supervisor.log").read_text(errors="replace").splitlines()[-20:])
        print(f"sluice: the stack did not start:\n{tail}", file=sys.stderr)
        return 1
    from services.orchestrator.tenancy.dev_key import key_file

    print(banner(settings, time.monotonic() - started, key_file(settings).read_text().strip()))
    print(f"detached (supervisor pid {child.pid}); stop it with `sluice down`")
    return 0


def down(settings: Settings | None = None, timeout: float = 60.0) -> int:
    settings = settings or Settings.from_env()
    state = _read_state(settings)
    pid = state.get("pid") if state else None
    if not pid_alive(pid):
        print("sluice: not running")
        (settings.run_dir / STATE_FILE).unlink(missing_ok=True)
        return 0
    os.kill(pid, signal.SIGTERM)
    if not wait_until(lambda: not pid_alive(pid), timeout, interval=0.1):
        os.kill(pid, signal.SIGKILL)
        for child_pid in (state.get("processes") or {}).values():
            if pid_alive(child_pid):
                os.kill(child_pid, signal.SIGKILL)
    (settings.run_dir / STATE_FILE).unlink(missing_ok=True)
    print("sluice: stopped")
    return 0


def endpoints(settings: Settings) -> dict[str, str]:
    """Where a running stack answers (what `sluice status` repeats from the banner)."""
    from services.orchestrator.tenancy.dev_key import key_file

    s = settings
    return {"playground": f"http://{s.host}:{s.http_port}/", "openai_api": s.public_base_url,
            "native_grpc": f"{s.host}:{s.http_port}", "health": f"http://{s.host}:{s.http_port}/readyz",
            "openapi": f"http://{s.host}:{s.http_port}/openapi.yaml",
            "metrics": f"http://{s.host}:{s.orchestrator_metrics_port}/metrics", "traces": s.telemetry_url,
            "logs": str(s.run_dir / "logs"), "dev_api_key_file": str(key_file(s))}


def status(settings: Settings | None = None, as_json: bool = False) -> int:
    settings = settings or Settings.from_env()
    state = _read_state(settings)
    if not state or not pid_alive(state.get("pid")):
        if as_json:
            print(json.dumps({"running": False}))
        else:
            print("sluice: not running (start it with `sluice up`)")
        return 3
    s = settings.replace(triton_replicas=state.get("triton_replicas") or settings.triton_replicas)
    orchestrators = state.get("orchestrators") or [{"name": "orchestrator", "port": s.orchestrator_port}]
    checks = {
        "telemetry": http_ok(f"{s.telemetry_url}/health"),
        **replicas_ready(s),
        "safety": grpc_serving(f"{s.host}:{s.safety_port}"),
        "retrieval": grpc_serving(s.retrieval_url),
        **{r["name"]: grpc_serving(f"{s.host}:{r['port']}") for r in orchestrators},
        "envoy": envoy_ready(s.host, s.envoy_admin_port),
    }
    try:  # what Envoy runs: the versions it acknowledged, from the supervisor's control plane
        xds = control_request(s.run_dir, {"op": "status"}, timeout=5).get("xds")
    except ControlError:
        xds = None
    processes = {name: {"pid": (state.get("processes") or {}).get(name), "ready": healthy,
                        "restarts": (state.get("restarts") or {}).get(name, 0)} for name, healthy in checks.items()}
    if as_json:
        print(json.dumps({"running": True, "ready": all(checks.values()), "supervisor_pid": state["pid"],
                          "endpoints": endpoints(settings), "processes": processes, "xds": xds}, indent=2))
        return 0 if all(checks.values()) else 1
    print(f"sluice: running (supervisor pid {state['pid']}), {'ready' if all(checks.values()) else 'NOT READY'}")
    for name, where in endpoints(settings).items():
        print(f"  {name.replace('_', ' '):<17} {where}")
    for name, process in processes.items():
        print(f"  {name:<13} pid {process['pid']!s:<8} {'ready' if process['ready'] else 'NOT READY':<10} "
              f"restarts {process['restarts']}")
    if xds:
        print(f"  xDS control plane {xds['address']}: {len(xds['orchestrators'])} orchestrator endpoint(s)")
        for node, acked in (xds["acked"] or {"(no Envoy connected)": {}}).items():
            versions = ", ".join(f"{kind} {acked.get(kind, '-')}" + ("" if acked.get(kind) == v else f" (serving {v})")
                                 for kind, v in xds["served"].items())
            print(f"    Envoy {node} acknowledged: {versions}")
        for rejection in xds["rejections"]:
            print(f"    NACK: {rejection['type']} {rejection['version']}: {rejection['reason']}")
    return 0 if all(checks.values()) else 1


def scale(orchestrators: int | None, triton: int | None, settings: Settings | None = None) -> int:
    """`sluice scale`: ask the running supervisor to change its replica counts, and wait until it has."""
    settings = settings or Settings.from_env()
    if orchestrators is None and triton is None:
        print("sluice: say what to scale: --orchestrators N and/or --triton N", file=sys.stderr)
        return 2
    began = time.monotonic()
    try:
        reply = control_request(settings.run_dir, {"op": "scale", "orchestrators": orchestrators, "triton": triton})
    except ControlError as error:
        print(f"sluice: {error}", file=sys.stderr)
        return 1
    names = ", ".join(f"{r['name']} (port {r['port']})" for r in reply["orchestrators"])
    print(f"sluice: {len(reply['orchestrators'])} orchestrator(s) in {time.monotonic() - began:.1f} s: {names}")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description="Sluice stack supervisor")
    parser.add_argument("--foreground", action="store_true")
    parser.parse_args()
    sys.exit(run_foreground(Settings.from_env()))


if __name__ == "__main__":
    main()
