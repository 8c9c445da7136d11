"""`sluice up --detach` / `status` / `down` as a script would use them, and a clear error for a busy port."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from services.common.settings import Settings
from services.orchestrator.tenancy.dev_key import key_file
from services.supervisor.stack import settings_env
from tests.conftest import DEMO_MODEL, stack_settings

SLUICE = [sys.executable, "-m", "services.cli.main"]


def _run(args: list[str], settings: Settings, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SLUICE, *args], env=settings_env(settings), capture_output=True, text=True,
                          timeout=timeout)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_detached_stack_up_status_down(tmp_path: Path) -> None:
    settings = stack_settings(tmp_path / "run", DEMO_MODEL)
    started = time.monotonic()
    up = _run(["up", "--detach"], settings)
    ready_seconds = time.monotonic() - started
    assert up.returncode == 0, up.stderr
    print(f"\n[measure] sluice up --detach → ready in {ready_seconds:.1f} s")
    assert settings.public_base_url in up.stdout
    try:
        key = key_file(settings).read_text().strip()  # the dev tenant's key, printed in the banner
        assert key in up.stdout
        models = httpx.get(f"{settings.public_base_url}/models", timeout=10,
                           headers={"Authorization": f"Bearer {key}"}).json()
        assert models["data"][0]["id"] == settings.model_name
        status = _run(["status", "--json"], settings, timeout=30)
        report = json.loads(status.stdout)
        assert status.returncode == 0 and report["ready"] and len(report["processes"]) >= 3, status.stdout
        assert all(p["ready"] and p["restarts"] == 0 for p in report["processes"].values()), status.stdout
        assert report["endpoints"]["openai_api"] == settings.public_base_url
        assert report["endpoints"]["dev_api_key_file"] == str(key_file(settings))
        text = _run(["status"], settings, timeout=30).stdout  # the same, for people: endpoints, then processes
        assert f"http://{settings.host}:{settings.http_port}/" in text and str(key_file(settings)) in text
        again = _run(["up", "--detach"], settings)
        assert again.returncode == 1 and "already running" in again.stderr
        pids = [p["pid"] for p in report["processes"].values()]
        # the engine keeps the supervisor's niceness; the platform's processes yield to it (SLUICE_PLATFORM_NICE)
        base = os.getpriority(os.PRIO_PROCESS, 0)
        niceness = {name: os.getpriority(os.PRIO_PROCESS, p["pid"]) for name, p in report["processes"].items()}
        assert niceness["triton"] == base, niceness
        platform = min(base + settings.platform_nice, 19)
        assert settings.platform_nice > 0 and platform > base
        assert all(niceness[name] == platform for name in ("orchestrator", "safety", "retrieval", "telemetry",
                                                           "envoy")), niceness
    finally:
        down = _run(["down"], settings, timeout=90)
    assert down.returncode == 0 and "stopped" in down.stdout
    assert not any(_alive(pid) for pid in pids), "a child process outlived `sluice down`"
    assert _run(["down"], settings).stdout.strip() == "sluice: not running"  # idempotent
    assert _run(["status"], settings).returncode == 3


def test_busy_port_gives_a_clear_error(tmp_path: Path) -> None:
    settings = stack_settings(tmp_path / "run", DEMO_MODEL)
    with socket.socket() as blocker:
        blocker.bind((settings.host, settings.http_port))
        blocker.listen()
        result = _run(["up"], settings, timeout=60)
    assert result.returncode == 1
    assert f"port {settings.http_port} (Envoy listener)" in result.stderr and "already in use" in result.stderr
