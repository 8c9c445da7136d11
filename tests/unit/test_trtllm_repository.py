"""`sluice repo render --engine trtllm`: valid ModelConfigs, TensorRT-LLM backend settings, and the same tensor
contract as the CPU engine; and the engine-build pipeline's behaviour where TensorRT-LLM is absent."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Collection, Iterable
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from services.common.settings import REPO_ROOT, Settings
from services.supervisor.repository import render_repository

Configs = dict[str, model_config_pb2.ModelConfig]

# Tensors that may differ between the two LLM slots, each with the reason documented in
# model_repository/tensorrt_llm/config.trtllm.pbtxt.tmpl. Today there are none: `priority` is declared in both
# (the tensorrtllm backend ignores inputs it does not know).
# The CPU engine's top-log-prob extension (Sluice's own, not in TensorRT-LLM's contract)
INPUT_EXCEPTIONS: set[str] = {"num_top_log_probs"}
OUTPUT_EXCEPTIONS: set[str] = {"output_top_log_probs", "output_top_log_prob_ids"}


def _render(tmp_path_factory: pytest.TempPathFactory, engine: str) -> Path:
    base = tmp_path_factory.mktemp(engine)
    settings = Settings(run_dir=base, model_dir=base)
    return render_repository(settings, engine=engine, out_dir=base / "model_repository")


def _parse(repo: Path) -> Configs:
    return {path.parent.name: text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
            for path in sorted(repo.glob("*/config.pbtxt"))}


@pytest.fixture(scope="module")
def repos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return {engine: _render(tmp_path_factory, engine) for engine in ("cpu", "trtllm")}


@pytest.fixture(scope="module")
def cpu(repos: dict[str, Path]) -> Configs:
    return _parse(repos["cpu"])


@pytest.fixture(scope="module")
def trt(repos: dict[str, Path]) -> Configs:
    return _parse(repos["trtllm"])


def _params(config: model_config_pb2.ModelConfig) -> dict[str, str]:
    return {key: value.string_value for key, value in config.parameters.items()}


def _tensors(tensors: Iterable[model_config_pb2.ModelInput | model_config_pb2.ModelOutput],
             skip: Collection[str] = ()) -> dict[str, tuple]:
    return {t.name: (t.data_type, tuple(t.dims)) for t in tensors if t.name not in skip}


def test_trtllm_slot_uses_the_tensorrtllm_backend(trt: Configs, repos: dict[str, Path]) -> None:
    config = trt["tensorrt_llm"]
    assert config.name == "tensorrt_llm"
    assert config.backend == "tensorrtllm"
    assert config.max_batch_size == Settings().max_batch_size
    assert config.model_transaction_policy.decoupled
    assert [(g.count, g.kind) for g in config.instance_group] == [(1, model_config_pb2.ModelInstanceGroup.KIND_CPU)]
    params = _params(config)
    assert params["gpt_model_type"] == "inflight_fused_batching"
    assert params["gpt_model_path"] == str(repos["trtllm"].parent / "trtllm_engine")
    assert params["max_beam_width"] == "1"
    assert params["FORCE_CPU_ONLY_INPUT_TENSORS"] == "no"
    assert params["batch_scheduler_policy"] in ("max_utilization", "guaranteed_no_evict")
    assert params["exclude_input_in_output"] == "true"
    assert int(params["cancellation_check_period_ms"]) > 0
    # the python-backend model file is not copied for the C++ backend
    assert not (repos["trtllm"] / "tensorrt_llm" / "1" / "model.py").exists()


def test_trtllm_paged_kv_cache_parameters(trt: Configs) -> None:
    params = _params(trt["tensorrt_llm"])
    assert params["enable_kv_cache_reuse"] == "true"
    assert params["enable_chunked_context"] == "true"
    assert 0.0 < float(params["kv_cache_free_gpu_mem_fraction"]) <= 1.0
    assert int(params["max_tokens_in_paged_kv_cache"]) >= Settings().max_batch_size


def test_both_engines_render_the_same_models(cpu: Configs, trt: Configs) -> None:
    assert set(cpu) == set(trt) >= {"ensemble", "preprocessing", "tensorrt_llm", "postprocessing"}
    for name, config in trt.items():
        assert config.name == name


def test_ensemble_is_identical_across_engines(cpu: Configs, trt: Configs) -> None:
    assert _tensors(cpu["ensemble"].input) == _tensors(trt["ensemble"].input)
    assert _tensors(cpu["ensemble"].output) == _tensors(trt["ensemble"].output)
    assert cpu["ensemble"].ensemble_scheduling == trt["ensemble"].ensemble_scheduling


def test_llm_slot_tensors_match_across_engines(cpu: Configs, trt: Configs) -> None:
    cpu_slot, trt_slot = cpu["tensorrt_llm"], trt["tensorrt_llm"]
    assert _tensors(cpu_slot.input, INPUT_EXCEPTIONS) == _tensors(trt_slot.input, INPUT_EXCEPTIONS)
    assert _tensors(cpu_slot.output, OUTPUT_EXCEPTIONS) == _tensors(trt_slot.output, OUTPUT_EXCEPTIONS)
    cpu_optional = {i.name: i.optional for i in cpu_slot.input if i.name not in INPUT_EXCEPTIONS}
    trt_optional = {i.name: i.optional for i in trt_slot.input}
    assert cpu_optional == trt_optional
    assert "priority" in trt_optional and trt_optional["priority"]


def test_no_placeholder_is_left(repos: dict[str, Path]) -> None:
    for repo in repos.values():
        files = [p for p in repo.rglob("*") if p.is_file()]
        assert files
        for path in files:
            assert "${" not in path.read_text(), path


@pytest.mark.skipif(importlib.util.find_spec("tensorrt_llm") is not None, reason="TensorRT-LLM is installed here")
def test_engine_build_without_tensorrt_llm_fails_cleanly(tmp_path: Path) -> None:
    out = tmp_path / "engine"
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.trtllm_engine", "--checkpoint", str(tmp_path / "ckpt"), "--out", str(out)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "TensorRT-LLM is not installed" in lines[0]
    assert "container" in lines[0] and "pip install tensorrt_llm" in lines[0]
    assert not out.exists()
