"""The rendered Triton model repository: valid ModelConfig protos wired together the way TensorRT-LLM's are."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from services.common.settings import Settings
from services.supervisor.repository import TEMPLATE_ROOT, render_repository

TRTLLM_INPUTS = {
    "input_ids", "input_lengths", "request_output_len", "end_id", "pad_id", "stop_words_list", "bad_words_list",
    "runtime_top_k", "runtime_top_p", "temperature", "repetition_penalty", "presence_penalty", "frequency_penalty",
    "min_tokens", "seed", "streaming", "exclude_input_in_output",
    "guided_decoding_guide_type", "guided_decoding_guide", "return_log_probs",
}
TRTLLM_OUTPUTS = {"output_ids", "sequence_length", "cum_log_probs", "output_log_probs"}


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    model_dir = tmp_path_factory.mktemp("checkpoint")
    # No catalog: exactly one LLM slot (the catalog's extra deployments are covered by the test at the end).
    return Settings(run_dir=tmp_path_factory.mktemp("run"), model_dir=model_dir, max_batch_size=8,
                    catalog_path=model_dir / "no-catalog.yaml")


@pytest.fixture(scope="module")
def repo(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return render_repository(settings, engine="cpu", out_dir=tmp_path_factory.mktemp("out") / "model_repository")


@pytest.fixture(scope="module")
def configs(repo: Path) -> dict[str, model_config_pb2.ModelConfig]:
    parsed = {}
    for path in sorted(repo.glob("*/config.pbtxt")):
        parsed[path.parent.name] = text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
    return parsed


def test_every_template_directory_is_rendered(repo: Path, configs: dict[str, model_config_pb2.ModelConfig]) -> None:
    expected = {p.name for p in TEMPLATE_ROOT.iterdir() if p.is_dir()}
    assert set(configs) == expected
    assert {"ensemble", "preprocessing", "tensorrt_llm", "postprocessing"} <= expected
    for name, config in configs.items():
        assert config.name == name  # Triton refuses a config whose name differs from its folder
        # The embedder's batch is its own (rows of texts, not LLM sequences); the rest follow Settings.
        assert config.max_batch_size == (64 if name == "embedder" else 8)
        assert (repo / name / "1").is_dir()


def test_no_placeholder_is_left(repo: Path) -> None:
    files = [p for p in repo.rglob("*") if p.is_file()]
    assert files
    for path in files:
        assert "${" not in path.read_text(), path


def test_tensorrt_llm_slot_has_trtllm_tensor_names(configs: dict[str, model_config_pb2.ModelConfig]) -> None:
    config = configs["tensorrt_llm"]
    assert config.model_transaction_policy.decoupled
    assert {i.name for i in config.input} >= TRTLLM_INPUTS
    assert {o.name for o in config.output} >= TRTLLM_OUTPUTS
    inputs = {i.name: i for i in config.input}
    assert not inputs["input_ids"].optional and not inputs["input_lengths"].optional
    assert inputs["seed"].data_type == model_config_pb2.TYPE_UINT64
    assert inputs["streaming"].data_type == model_config_pb2.TYPE_BOOL
    for name in ("guided_decoding_guide_type", "guided_decoding_guide"):
        assert inputs[name].data_type == model_config_pb2.TYPE_STRING and inputs[name].optional
    assert inputs["return_log_probs"].data_type == model_config_pb2.TYPE_BOOL and inputs["return_log_probs"].optional
    # the top-log-prob extension: optional, so a client of TensorRT-LLM's contract never has to send it
    assert inputs["num_top_log_probs"].data_type == model_config_pb2.TYPE_INT32 and inputs["num_top_log_probs"].optional
    outputs = {o.name: o for o in config.output}
    assert list(outputs["output_log_probs"].dims) == [-1, -1] and list(outputs["cum_log_probs"].dims) == [-1]
    assert outputs["output_log_probs"].data_type == model_config_pb2.TYPE_FP32
    assert list(outputs["output_top_log_probs"].dims) == [-1, -1, -1]
    assert outputs["output_top_log_prob_ids"].data_type == model_config_pb2.TYPE_INT32


def test_python_backend_models_get_their_model_py(repo: Path, configs: dict[str, model_config_pb2.ModelConfig]) -> None:
    python_models = [name for name, config in configs.items() if config.backend == "python"]
    assert "tensorrt_llm" in python_models
    for name in python_models:
        rendered = repo / name / "1" / "model.py"
        assert rendered.read_bytes() == (TEMPLATE_ROOT / name / "1" / "model.py").read_bytes()
    for name in set(configs) - set(python_models):
        assert not (repo / name / "1" / "model.py").exists()


def test_python_models_point_at_this_environment_and_checkpoint(configs: dict[str, model_config_pb2.ModelConfig],
                                                                settings: Settings) -> None:
    checkpoint = str(settings.model_dir.resolve())
    for name, config in configs.items():
        if config.backend != "python":
            continue
        assert config.parameters["EXECUTION_ENV_PATH"].string_value == sys.prefix, name
        if name in ("safety_classifier", "embedder"):  # their own bundled models, no LLM checkpoint
            continue
        paths = {key: p.string_value for key, p in config.parameters.items() if key in ("tokenizer_dir",
                                                                                       "checkpoint_dir")}
        assert paths, f"{name} names no checkpoint"
        assert set(paths.values()) == {checkpoint}, name


def test_ensemble_is_wired_consistently(configs: dict[str, model_config_pb2.ModelConfig]) -> None:
    ensemble = configs["ensemble"]
    assert ensemble.platform == "ensemble"
    steps = ensemble.ensemble_scheduling.step
    assert [s.model_name for s in steps] == ["preprocessing", "tensorrt_llm", "postprocessing"]
    available = {i.name for i in ensemble.input}
    for step in steps:
        assert step.model_name in configs
        model = configs[step.model_name]
        model_inputs = {i.name for i in model.input}
        model_outputs = {o.name for o in model.output}
        for key, value in step.input_map.items():
            assert value in available, f"{step.model_name}.{key} reads {value!r} before anything produces it"
            assert key in model_inputs, f"{step.model_name} has no input {key!r}"
        for key, value in step.output_map.items():
            assert key in model_outputs, f"{step.model_name} has no output {key!r}"
            available.add(value)
        required = {i.name for i in model.input if not i.optional}
        assert required <= set(step.input_map), f"{step.model_name} misses required inputs"
    assert {o.name for o in ensemble.output} <= available


def test_rendering_replaces_an_existing_repository(settings: Settings, tmp_path: Path) -> None:
    out = tmp_path / "repo"
    (out / "stale_model").mkdir(parents=True)
    render_repository(settings, engine="cpu", out_dir=out)
    assert not (out / "stale_model").exists()
    assert (out / "tensorrt_llm" / "config.pbtxt").exists()


def test_default_output_is_under_run_dir(settings: Settings) -> None:
    out = render_repository(settings, engine="cpu")
    assert out == settings.run_dir / "model_repository"
    assert (out / "ensemble" / "config.pbtxt").exists()


def test_unknown_engine_raises(settings: Settings, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="engine"):
        render_repository(settings, engine="vllm", out_dir=tmp_path / "repo")
    assert not (tmp_path / "repo").exists()


@pytest.mark.parametrize("field", ["http_port", "envoy_admin_port", "orchestrator_port", "triton_http_port",
                                   "triton_grpc_port", "triton_metrics_port"])
@pytest.mark.parametrize("port", [0, -1, 65536])
def test_settings_reject_out_of_range_ports(field: str, port: int) -> None:
    with pytest.raises(ValueError, match="out of range"):
        Settings(**{field: port})


def test_settings_reject_duplicate_ports() -> None:
    with pytest.raises(ValueError, match="distinct"):
        Settings(http_port=9000, triton_grpc_port=9000)
    with pytest.raises(ValueError, match="distinct"):
        Settings().replace(orchestrator_port=Settings().triton_http_port)


def test_settings_accept_edge_ports() -> None:
    settings = Settings(http_port=1, envoy_admin_port=65535)
    assert (settings.http_port, settings.envoy_admin_port) == (1, 65535)


def test_every_catalog_deployment_gets_its_own_llm_slot(tmp_path: Path) -> None:
    checkpoints = {}
    for name in ("big", "small"):
        checkpoints[name] = tmp_path / name
        checkpoints[name].mkdir()
        (checkpoints[name] / "config.json").write_text("{}")
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(f"""
deployments:
  big-v1: {{triton_model: tensorrt_llm, checkpoint: {checkpoints["big"]}}}
  small-v1: {{triton_model: tensorrt_llm_small, checkpoint: {checkpoints["small"]}}}
  absent-v1: {{triton_model: tensorrt_llm_absent, checkpoint: {tmp_path / "missing"}}}
models:
  big: {{deployments: {{big-v1: 100}}}}
  small: {{deployments: {{small-v1: 100}}}}
""")
    settings = Settings(run_dir=tmp_path / "run", model_dir=checkpoints["big"], catalog_path=catalog,
                        model_name="big")
    repo = render_repository(settings, out_dir=tmp_path / "repo")
    slots = {}
    for name in ("tensorrt_llm", "tensorrt_llm_small"):
        config = text_format.Parse((repo / name / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
        assert config.name == name and config.model_transaction_policy.decoupled
        assert (repo / name / "1" / "model.py").read_bytes() == (TEMPLATE_ROOT / "tensorrt_llm" / "1" /
                                                                  "model.py").read_bytes()
        slots[name] = config.parameters["checkpoint_dir"].string_value
    assert slots == {"tensorrt_llm": str(checkpoints["big"].resolve()),
                     "tensorrt_llm_small": str(checkpoints["small"].resolve())}
    assert not (repo / "tensorrt_llm_absent").exists()  # a deployment without its checkpoint is not served


def test_the_orchestrator_converts_reused_blocks_with_the_engines_block_size() -> None:
    """The LLM slot reports prefix hits in KV blocks (TensorRT-LLM's kv_cache_reused_blocks); the orchestrator turns
    them into cached tokens with the catalog's kv_block_size, which must be the block size the repository renders."""
    from services.orchestrator.replicated_llm import load_replica_policy, triton_llm_for
    from services.supervisor.repository import template_values

    shipped = Settings(catalog_path=Path("config/catalog.yaml"))
    rendered = int(template_values(shipped, "cpu")["kv_block_size"])
    assert load_replica_policy(shipped).kv_block_size == rendered

    async def client_block_size() -> int:  # the client is built inside the loop that would serve with it
        llm = triton_llm_for(shipped)
        try:
            return llm.kv_block_size
        finally:
            await llm.close()

    assert asyncio.run(client_block_size()) == rendered
