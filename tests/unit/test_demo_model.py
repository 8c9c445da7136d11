"""engine/model.py correctness and the committed demo model's held-out skills (greedy decoding, KV cache)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer

from engine.model import Llama, ModelArgs, load_checkpoint, save_checkpoint
from pipelines.demo_model.evaluate import DemoModel, build_items, evaluate, parse_tool_call
from pipelines.demo_model.tokenizer import SPECIAL_TOKENS, render_chat

MODEL_DIR = Path(__file__).resolve().parents[2] / "models" / "sluice-demo"
# Thresholds sit well below the accuracies measured in models/sluice-demo/eval.json (n=100 per skill).
THRESHOLDS = {"greeting": 0.45, "facts": 0.85, "tool_call": 0.7, "passage_qa": 0.4}


def tiny_args(**kw) -> ModelArgs:
    base = dict(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False)
    return ModelArgs(**{**base, **kw})


@pytest.mark.parametrize("scaling", [None, {"rope_type": "linear", "factor": 2.0},
                                     {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                      "high_freq_factor": 4.0, "original_max_position_embeddings": 16}])
def test_cached_incremental_forward_matches_full_forward(scaling: dict | None) -> None:
    torch.manual_seed(0)
    model = Llama(tiny_args(rope_scaling=scaling)).eval()
    ids = torch.randint(0, 97, (2, 19))
    with torch.no_grad():
        full = model(ids)  # [2, 19, V]
        cache = model.new_cache(2, 24, torch.float32, "cpu")
        parts, pos = [], 0
        for n in (7, 1, 5, 1, 1, 4):  # prefill, decode steps and multi-token chunks at start_pos > 0
            parts.append(model(ids[:, pos:pos + n], pos, cache))
            pos += n
    assert full.dtype == torch.float32
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-4, rtol=0)


def test_save_load_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(1)
    args = tiny_args(tie_word_embeddings=True)
    model = Llama(args).eval()
    save_checkpoint(model, args, tmp_path / "fp32", dtype=torch.float32)
    loaded, largs = load_checkpoint(tmp_path / "fp32")
    assert largs == args
    cfg = json.loads((tmp_path / "fp32" / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"] and cfg["model_type"] == "llama"
    ids = torch.randint(0, 97, (1, 9))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids), model(ids), atol=0, rtol=0)
        save_checkpoint(model, args, tmp_path / "bf16")  # default bf16, upcast on load
        bf, _ = load_checkpoint(tmp_path / "bf16", dtype=torch.float32)
        assert bf.model.embed_tokens.weight.dtype == torch.float32
    for k, t in model.state_dict().items():  # bf16 on disk, exactly the rounded weights after the upcast
        torch.testing.assert_close(bf.state_dict()[k], t.to(torch.bfloat16).float(), atol=0, rtol=0)
    assert set(loaded.state_dict()) >= {"model.embed_tokens.weight", "model.layers.1.mlp.down_proj.weight",
                                        "model.layers.0.self_attn.k_proj.weight", "model.norm.weight"}


def test_model_args_validation_and_hf_round_trip() -> None:
    args = tiny_args(rope_scaling={"type": "linear", "factor": 4.0})
    assert ModelArgs.from_hf_config(args.to_hf_config()) == args
    assert args.head_dim == 16
    with pytest.raises(ValueError):
        tiny_args(num_key_value_heads=3)
    with pytest.raises(ValueError):
        tiny_args(rope_scaling={"rope_type": "yarn", "factor": 2.0})


@pytest.fixture(scope="module")
def demo() -> DemoModel:
    torch.set_num_threads(1)
    return DemoModel.load(MODEL_DIR)


def test_artifacts_and_special_tokens() -> None:
    files = {p.name for p in MODEL_DIR.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "generation_config.json", "eval.json"} <= files
    assert sum(p.stat().st_size for p in MODEL_DIR.iterdir()) <= 25 * 2**20
    tok = Tokenizer.from_file(str(MODEL_DIR / "tokenizer.json"))
    for i, t in enumerate(SPECIAL_TOKENS):
        assert tok.token_to_id(t) == i
        assert tok.encode(f"a{t}b").ids.count(i) == 1
    cfg = json.loads((MODEL_DIR / "tokenizer_config.json").read_text())
    assert (cfg["bos_token"], cfg["eos_token"], cfg["pad_token"]) == ("<|bos|>", "<|end|>", "<|pad|>")
    gen = json.loads((MODEL_DIR / "generation_config.json").read_text())
    assert (gen["bos_token_id"], gen["eos_token_id"], gen["pad_token_id"]) == (1, 2, 0)


def test_chat_template_renders_the_contract() -> None:
    template = json.loads((MODEL_DIR / "tokenizer_config.json").read_text())["chat_template"]
    tools = [{"type": "function", "function": {"name": "calculator", "description": "d", "parameters": {}}}]
    msgs = [{"role": "user", "content": "What is 17 * 23?"},
            {"role": "assistant", "content": None, "tool_calls": [{"type": "function", "function": {
                "name": "calculator", "arguments": "{\"expression\": \"17 * 23\"}"}}]},
            {"role": "tool", "content": "391"}]
    text = render_chat(msgs, tools, add_generation_prompt=True, template=template)
    assert text == (
        '<|bos|><|system|>\nTools:\n{"name": "calculator", "description": "d", "parameters": {}}<|end|>\n'
        "<|user|>\nWhat is 17 * 23?<|end|>\n"
        '<|assistant|>\n<tool_call>{"name": "calculator", "arguments": {"expression": "17 * 23"}}</tool_call><|end|>\n'
        "<|tool|>\n391<|end|>\n<|assistant|>\n")
    plain = render_chat([{"role": "system", "content": "S"}, {"role": "user", "content": "Hi"}], template=template)
    assert plain == "<|bos|><|system|>\nS<|end|>\n<|user|>\nHi<|end|>\n"


def test_chat_format_and_greeting(demo: DemoModel) -> None:
    res = evaluate(demo, n=20, skills=["greeting"])["greeting"]
    assert res["ended_with_end_token"] == 1.0  # every reply ends with <|end|> within 48 tokens
    assert res["accuracy"] >= THRESHOLDS["greeting"]
    reply, ended = demo.chat([{"role": "user", "content": "Hey there, good morning!"}], max_new_tokens=32)
    assert ended and "hello" in reply.lower(), reply


def test_facts_accuracy_held_out(demo: DemoModel) -> None:
    acc = evaluate(demo, n=30, skills=["facts"])["facts"]["accuracy"]
    assert acc >= THRESHOLDS["facts"]


def test_passage_copy_held_out(demo: DemoModel) -> None:
    acc = evaluate(demo, n=30, skills=["passage_qa"])["passage_qa"]["accuracy"]
    assert acc >= THRESHOLDS["passage_qa"]


def test_tool_call_format_held_out(demo: DemoModel) -> None:
    items = build_items("tool_call", 20)
    ok = 0
    for msgs, tools, check in items:
        reply, ended = demo.chat(msgs, tools)
        call = parse_tool_call(reply)
        assert ended and call is not None, reply  # always well-formed JSON inside <tool_call>...</tool_call>
        assert call["name"] in ("calculator", "current_time")
        ok += check(reply)
    assert ok / len(items) >= THRESHOLDS["tool_call"]
