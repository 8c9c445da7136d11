"""One settings object for the local stack, filled from SLUICE_* environment variables."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

REPO_ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T", int, float)
TRITON_REPLICA_PORT_STEP = 100  # replica i's Triton ports are replica 0's + i·100 (8100-8102, 8200-8202, ...)
PLATFORM_NICE_DEFAULT = 5  # measured: results/serve/session8-nice (BENCHMARKS.md)


def _env_number(name: str, default: T, cast: Callable[[str], T], kind: str) -> T:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return cast(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be {kind}, got {raw!r}") from exc


def _env_int(name: str, default: int) -> int:
    return _env_number(name, default, int, "an integer")


def _env_float(name: str, default: float) -> float:
    return _env_number(name, default, float, "a number")


def _env_bool(name: str, default: bool) -> bool:
    raw = (os.environ.get(name) or "").strip().lower()
    if raw == "":
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name} must be a boolean (1/0, true/false), got {raw!r}")


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    http_port: int = 8080  # Envoy: OpenAI HTTP/SSE facade and native gRPC on one port
    envoy_admin_port: int = 9901
    orchestrator_port: int = 50051
    triton_http_port: int = 8000
    triton_grpc_port: int = 8001
    triton_metrics_port: int = 8002
    # SLUICE_TRITON_REPLICAS: tritonservers `sluice up` runs from the one model repository; replica i listens on the
    # three Triton ports + i·TRITON_REPLICA_PORT_STEP, and the orchestrator routes LLM requests across them.
    triton_replicas: int = 1
    # SLUICE_TRITON_URLS: host:port,... of the Triton replicas' gRPC endpoints when they run elsewhere (Kubernetes: the
    # StatefulSet's stable pod names); empty: the local replicas on `host` at the ports above.
    triton_urls: tuple[str, ...] = ()
    kv_cache_mb: int = 256  # SLUICE_KV_CACHE_MB: the CPU engine's KV-cache pool per LLM slot and replica
    # SLUICE_ENGINE_THREADS: the most intra-op threads (torch/OpenMP) a CPU engine step uses; 0: one per core. Steps
    # computing fewer than 32 tokens always run on one thread (engine.EngineConfig.parallel_min_tokens).
    engine_threads: int = 0
    # SLUICE_ENGINE_MATMUL_DTYPE: float32 (the reference numerics: greedy output equals the reference forward token
    # for token) or bfloat16 (the CPU engine's projections and KV cache in bfloat16, activations and attention
    # arithmetic in float32, within a tested tolerance of the reference: tests/unit/test_engine_mixed_precision.py).
    # Pays where the projections dominate: a 110M model in-process 1.7x on this AMX CPU. The 4.7M demo model served
    # by Triton is slower with it (small single-thread steps pay the conversions): keep float32 there.
    engine_matmul_dtype: str = "float32"
    # SLUICE_PLATFORM_NICE: the scheduling niceness (0..19) `sluice up` gives the platform's processes (orchestrator,
    # safety, retrieval, telemetry, Envoy), not Triton. When the engine shares the machine's cores with them (the CPU
    # default: a decode step of fewer than 32 tokens runs on one thread) a busy core otherwise time-slices the
    # engine's thread with the services' per-token work and every stream slows; niced, the services still get every
    # idle cycle. 0: equal shares.
    platform_nice: int = PLATFORM_NICE_DEFAULT
    run_dir: Path = field(default_factory=lambda: REPO_ROOT / ".sluice" / "run")
    model_dir: Path = field(default_factory=lambda: REPO_ROOT / "models" / "sluice-demo")
    model_name: str = "sluice-demo"  # the default public model; SLUICE_MODEL_DIR replaces its checkpoint
    catalog_path: Path = field(default_factory=lambda: REPO_ROOT / "config" / "catalog.yaml")
    stages_path: Path = field(default_factory=lambda: REPO_ROOT / "pipelines" / "stages.yaml")  # the chat pipeline
    max_batch_size: int = 64
    max_tokens_default: int = 256
    response_cache_entries: int = 1024  # exact-match cache for deterministic requests
    response_cache_ttl_s: float = 300.0
    database_url: str | None = None  # SLUICE_DATABASE_URL; None means the SQLite file <run_dir>/sluice.db
    retrieval_port: int = 50052
    safety_port: int = 50053  # the safety service (gRPC), called by the orchestrator's guard stages
    milvus_uri: str | None = None  # SLUICE_MILVUS_URI (a Milvus server); None means Milvus Lite <run_dir>/milvus.db
    redis_url: str | None = None  # SLUICE_REDIS_URL: rate limits shared by replicas in Redis; None: in-process
    # SLUICE_STREAM_IDLE_TIMEOUT_S: a response stream whose client takes no message for this long (it stopped
    # reading: Envoy's buffers and the HTTP/2 window are full) is ended and its generation stopped
    stream_idle_timeout_s: float = 30.0
    auth_cache_s: float = 5.0  # how long an authentication result is reused (a revoked key works at most this long)
    tiers_path: Path = field(default_factory=lambda: REPO_ROOT / "config" / "tiers.yaml")
    # Observability. Traces: OTLP/gRPC to SLUICE_OTLP_ENDPOINT (any collector), else to Sluice's own receiver on
    # otlp_grpc_port (OTLP/HTTP on otlp_http_port, where Triton exports and `sluice trace` reads).
    otlp_endpoint: str | None = None
    otlp_grpc_port: int = 4317
    otlp_http_port: int = 4318
    trace_sample_rate: float = 1.0  # SLUICE_TRACE_SAMPLE_RATE: share of new traces recorded (0 turns tracing off)
    trace_content: bool = False  # SLUICE_TRACE_CONTENT=1 records prompt and completion text on spans
    orchestrator_metrics_port: int = 9464  # Prometheus text at /metrics on each service
    safety_metrics_port: int = 9465
    retrieval_metrics_port: int = 9466
    slo_ttft_ms: float = 500.0  # goodput: a request is good when it meets both SLOs
    slo_tpot_ms: float = 50.0
    log_level: str = "info"  # SLUICE_LOG_LEVEL: "info" or per component, e.g. "info,orchestrator=debug"

    def __post_init__(self) -> None:
        if self.triton_replicas < 1:
            raise ValueError(f"triton_replicas must be at least 1, got {self.triton_replicas}")
        if self.triton_urls and len(self.triton_urls) != self.triton_replicas:
            raise ValueError(f"SLUICE_TRITON_URLS names {len(self.triton_urls)} replicas but triton_replicas is "
                             f"{self.triton_replicas}")
        if self.engine_threads < 0:
            raise ValueError(f"engine_threads must not be negative, got {self.engine_threads}")
        if self.engine_matmul_dtype not in ("float32", "bfloat16"):
            raise ValueError(f"engine_matmul_dtype must be float32 or bfloat16, got {self.engine_matmul_dtype!r}")
        if not 0 <= self.platform_nice <= 19:
            raise ValueError(f"platform_nice must be within 0..19, got {self.platform_nice}")
        if self.kv_cache_mb < 1:
            raise ValueError(f"kv_cache_mb must be at least 1, got {self.kv_cache_mb}")
        replica_ports = [port for i in range(self.triton_replicas) for port in self.triton_replica_ports(i)]
        ports = [self.http_port, self.envoy_admin_port, self.orchestrator_port, *replica_ports, self.retrieval_port,
                 self.safety_port, self.otlp_grpc_port, self.otlp_http_port, self.orchestrator_metrics_port,
                 self.safety_metrics_port, self.retrieval_metrics_port]
        for port in ports:
            if not 0 < port < 65536:
                raise ValueError(f"port {port} is out of range")
        if len(set(ports)) != len(ports):
            raise ValueError(f"ports must be distinct, got {ports}")
        if not 0.0 <= self.trace_sample_rate <= 1.0:
            raise ValueError(f"trace_sample_rate must be in [0, 1], got {self.trace_sample_rate}")
        if self.stream_idle_timeout_s <= 0:
            raise ValueError(f"stream_idle_timeout_s must be positive, got {self.stream_idle_timeout_s}")
        if self.slo_ttft_ms <= 0 or self.slo_tpot_ms <= 0:
            raise ValueError("SLO thresholds must be positive")

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        base = cls()
        values: dict[str, object] = {
            "host": os.environ.get("SLUICE_HOST", base.host),
            "http_port": _env_int("SLUICE_HTTP_PORT", base.http_port),
            "envoy_admin_port": _env_int("SLUICE_ENVOY_ADMIN_PORT", base.envoy_admin_port),
            "orchestrator_port": _env_int("SLUICE_ORCHESTRATOR_PORT", base.orchestrator_port),
            "triton_http_port": _env_int("SLUICE_TRITON_HTTP_PORT", base.triton_http_port),
            "triton_grpc_port": _env_int("SLUICE_TRITON_GRPC_PORT", base.triton_grpc_port),
            "triton_metrics_port": _env_int("SLUICE_TRITON_METRICS_PORT", base.triton_metrics_port),
            "triton_replicas": _env_int("SLUICE_TRITON_REPLICAS", base.triton_replicas),
            "triton_urls": tuple(u.strip() for u in os.environ.get("SLUICE_TRITON_URLS", "").split(",") if u.strip()),
            "kv_cache_mb": _env_int("SLUICE_KV_CACHE_MB", base.kv_cache_mb),
            "engine_threads": _env_int("SLUICE_ENGINE_THREADS", base.engine_threads),
            "engine_matmul_dtype": os.environ.get("SLUICE_ENGINE_MATMUL_DTYPE", base.engine_matmul_dtype),
            "platform_nice": _env_int("SLUICE_PLATFORM_NICE", base.platform_nice),
            "run_dir": Path(os.environ.get("SLUICE_RUN_DIR", base.run_dir)),
            "model_dir": Path(os.environ.get("SLUICE_MODEL_DIR", base.model_dir)),
            "model_name": os.environ.get("SLUICE_MODEL_NAME", base.model_name),
            "catalog_path": Path(os.environ.get("SLUICE_CATALOG", base.catalog_path)),
            "stages_path": Path(os.environ.get("SLUICE_STAGES", base.stages_path)),
            "database_url": os.environ.get("SLUICE_DATABASE_URL") or None,
            "retrieval_port": _env_int("SLUICE_RETRIEVAL_PORT", base.retrieval_port),
            "safety_port": _env_int("SLUICE_SAFETY_PORT", base.safety_port),
            "milvus_uri": os.environ.get("SLUICE_MILVUS_URI") or None,
            "redis_url": os.environ.get("SLUICE_REDIS_URL") or None,
            "tiers_path": Path(os.environ.get("SLUICE_TIERS", base.tiers_path)),
            "otlp_endpoint": os.environ.get("SLUICE_OTLP_ENDPOINT") or None,
            "otlp_grpc_port": _env_int("SLUICE_OTLP_GRPC_PORT", base.otlp_grpc_port),
            "otlp_http_port": _env_int("SLUICE_OTLP_HTTP_PORT", base.otlp_http_port),
            "trace_sample_rate": _env_float("SLUICE_TRACE_SAMPLE_RATE", base.trace_sample_rate),
            "trace_content": _env_bool("SLUICE_TRACE_CONTENT", base.trace_content),
            "orchestrator_metrics_port": _env_int("SLUICE_ORCHESTRATOR_METRICS_PORT", base.orchestrator_metrics_port),
            "safety_metrics_port": _env_int("SLUICE_SAFETY_METRICS_PORT", base.safety_metrics_port),
            "retrieval_metrics_port": _env_int("SLUICE_RETRIEVAL_METRICS_PORT", base.retrieval_metrics_port),
            "stream_idle_timeout_s": _env_float("SLUICE_STREAM_IDLE_TIMEOUT_S", base.stream_idle_timeout_s),
            "slo_ttft_ms": _env_float("SLUICE_SLO_TTFT_MS", base.slo_ttft_ms),
            "slo_tpot_ms": _env_float("SLUICE_SLO_TPOT_MS", base.slo_tpot_ms),
            "log_level": os.environ.get("SLUICE_LOG_LEVEL") or base.log_level,
        }
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]

    @property
    def resolved_engine_threads(self) -> int:
        """engine_threads, or when 0: one per core."""
        return self.engine_threads or max(1, os.cpu_count() or 1)

    def replace(self, **changes: object) -> Settings:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    @property
    def retrieval_url(self) -> str:
        return f"{self.host}:{self.retrieval_port}"

    @property
    def milvus_target(self) -> str:
        """SLUICE_MILVUS_URI, else the Milvus Lite file <run_dir>/milvus.db."""
        return self.milvus_uri or str(self.run_dir / "milvus.db")

    @property
    def triton_grpc_url(self) -> str:
        return self.triton_urls[0] if self.triton_urls else f"{self.host}:{self.triton_grpc_port}"

    def triton_replica_ports(self, index: int) -> tuple[int, int, int]:
        """Replica `index`'s (HTTP, gRPC, metrics) ports; replica 0 uses the configured Triton ports."""
        step = index * TRITON_REPLICA_PORT_STEP
        return self.triton_http_port + step, self.triton_grpc_port + step, self.triton_metrics_port + step

    def triton_replica(self, index: int) -> Settings:
        """These settings as Triton replica `index` sees them: its own ports (for its command line and probes)."""
        http, grpc, metrics = self.triton_replica_ports(index)
        return self.replace(triton_http_port=http, triton_grpc_port=grpc, triton_metrics_port=metrics,
                            triton_replicas=1)

    @property
    def triton_grpc_urls(self) -> list[str]:
        """Every Triton replica's gRPC endpoint, replica 0 first."""
        if self.triton_urls:
            return list(self.triton_urls)
        return [f"{self.host}:{self.triton_replica_ports(i)[1]}" for i in range(self.triton_replicas)]

    @property
    def db_url(self) -> str:
        """The conversation store's SQLAlchemy URL: SLUICE_DATABASE_URL, else a SQLite file in the run directory."""
        return self.database_url or f"sqlite:///{self.run_dir / 'sluice.db'}"

    @property
    def public_base_url(self) -> str:
        return f"http://{self.host}:{self.http_port}/v1"

    @property
    def otlp_target(self) -> str:
        """Where services export spans (OTLP/gRPC host:port): SLUICE_OTLP_ENDPOINT, else the local receiver."""
        endpoint = self.otlp_endpoint or f"{self.host}:{self.otlp_grpc_port}"
        return endpoint.removeprefix("http://").removeprefix("https://").rstrip("/")

    @property
    def telemetry_url(self) -> str:
        """The local receiver's HTTP base: OTLP/HTTP at /v1/traces, the trace query API at /api/traces."""
        return f"http://{self.host}:{self.otlp_http_port}"

    def metrics_port(self, component: str) -> int | None:
        """The Prometheus port of a Sluice service process (None for a component without one)."""
        return {"orchestrator": self.orchestrator_metrics_port, "safety": self.safety_metrics_port,
                "retrieval": self.retrieval_metrics_port}.get(component)
