"""SLUICE_TRITON_REPLICAS and SLUICE_KV_CACHE_MB: replica ports, what the supervisor would start, the KV budget."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common.settings import Settings
from services.supervisor.replicas import replica_ports, triton_replica_processes
from services.supervisor.repository import template_values


def test_replica_ports_step_by_100() -> None:
    settings = Settings(triton_replicas=3)
    assert settings.triton_grpc_urls == ["127.0.0.1:8001", "127.0.0.1:8101", "127.0.0.1:8201"]
    assert settings.triton_replica_ports(2) == (8200, 8201, 8202)
    replica = settings.triton_replica(1)
    assert (replica.triton_http_port, replica.triton_grpc_port, replica.triton_metrics_port) == (8100, 8101, 8102)
    assert Settings().triton_grpc_urls == [Settings().triton_grpc_url]


def test_replica_settings_are_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="triton_replicas"):
        Settings(triton_replicas=0)
    with pytest.raises(ValueError, match="distinct"):
        Settings(triton_replicas=2, orchestrator_port=8101)  # replica 1's gRPC port
    with pytest.raises(ValueError, match="kv_cache_mb"):
        Settings(kv_cache_mb=0)
    monkeypatch.setenv("SLUICE_TRITON_REPLICAS", "2")
    monkeypatch.setenv("SLUICE_KV_CACHE_MB", "32")
    settings = Settings.from_env()
    assert (settings.triton_replicas, settings.kv_cache_mb) == (2, 32)


def test_the_supervisor_plans_one_tritonserver_per_replica(tmp_path: Path) -> None:
    settings = Settings(triton_replicas=2, run_dir=tmp_path)
    planned = triton_replica_processes(settings, tmp_path / "repo", tmp_path / "backends", tmp_path / "logs")
    assert [process.name for process, _ in planned] == ["triton", "triton-1"]
    assert [process.log_path.name for process, _ in planned] == ["triton.log", "triton-1.log"]
    commands = [" ".join(process.command) for process, _ in planned]
    assert "--grpc-port=8001" in commands[0] and "--grpc-port=8101" in commands[1]
    assert "--metrics-port=8102" in commands[1]
    prefixes = [next(a for a in process.command if "shm-region-prefix-name" in a) for process, _ in planned]
    assert prefixes[0] != prefixes[1]
    assert replica_ports(settings)["Triton replica 1 gRPC"] == 8101


def test_kv_budget_reaches_the_model_config() -> None:
    assert template_values(Settings(kv_cache_mb=20), "cpu")["kv_cache_bytes"] == str(20 * 1024 * 1024)
