"""Our Llama and the batched paged engine against Hugging Face's `LlamaForCausalLM` on the same weights.

transformers is present in the environment as a dependency of the embedding-model package; it is used here only as
the reference implementation."""

from __future__ import annotations

import pytest
import torch

from engine.model import Llama, ModelArgs
from tests.unit.engine_factories import greedy, make_engine, make_prompt, submit

transformers = pytest.importorskip("transformers")


def _pair(rope_scaling: dict | None, tie: bool) -> tuple[Llama, torch.nn.Module]:
    torch.manual_seed(3)
    args = ModelArgs(vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                     rope_scaling=rope_scaling, tie_word_embeddings=tie)
    ours = Llama(args).eval()
    with torch.no_grad():
        for p in ours.parameters():
            p.mul_(4.0) if p.dim() > 1 else None
    config = transformers.LlamaConfig(**args.to_hf_config())
    theirs = transformers.LlamaForCausalLM(config).eval()
    missing, unexpected = theirs.load_state_dict(ours.state_dict(), strict=False)
    assert not unexpected and all("rotary" in k or (tie and k == "lm_head.weight") for k in missing)
    if tie:
        theirs.tie_weights()
    return ours, theirs


@pytest.mark.parametrize("rope_scaling, tie", [
    (None, False),
    (None, True),
    ({"rope_type": "linear", "factor": 2.0}, False),
    ({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
      "original_max_position_embeddings": 64}, True),
])
@torch.inference_mode()
def test_logits_match_transformers(rope_scaling: dict | None, tie: bool) -> None:
    ours, theirs = _pair(rope_scaling, tie)
    ids = torch.tensor([make_prompt(40, seed=1), make_prompt(40, seed=2)])
    assert torch.allclose(ours(ids), theirs(ids).logits.float(), atol=1e-4)


@torch.inference_mode()
def test_paged_engine_greedy_equals_transformers_generate() -> None:
    ours, theirs = _pair(None, False)
    engine = make_engine(ours)
    prompts = {f"r{i}": make_prompt(n, seed=20 + i) for i, n in enumerate([5, 23, 41])}
    sinks = {rid: submit(engine, rid, p, greedy(12)) for rid, p in prompts.items()}
    engine.run_until_done()
    for rid, prompt in prompts.items():
        out = theirs.generate(torch.tensor([prompt]), max_new_tokens=12, min_new_tokens=12, do_sample=False,
                              pad_token_id=0, eos_token_id=None)
        assert sinks[rid].tokens == out[0, len(prompt):].tolist(), rid
