"""Factories for engine tests: a tiny random Llama, requests, and a sink that records what the engine emits."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import torch

from engine.block_manager import BlockManager
from engine.engine import Engine, EngineConfig
from engine.model import Llama, ModelArgs
from engine.request import FinishReason, GenerationRequest, StepOutput
from engine.sampling import SamplingParams
from engine.scheduler import Scheduler, SchedulerConfig
from engine.sequence import Sequence


def make_model(seed: int = 0, **overrides: int) -> Llama:
    torch.manual_seed(seed)
    args = ModelArgs(**{"vocab_size": 97, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256,
                        **overrides})
    model = Llama(args).eval()
    with torch.no_grad():  # larger weights → peaked logits, so greedy choices are far from ties
        for p in model.parameters():
            p.mul_(4.0) if p.dim() > 1 else None
    return model


def make_engine(model: Llama, **config: object) -> Engine:
    return Engine(model, EngineConfig(**{"block_size": 4, "num_blocks": 256, **config}))


def make_block_manager(num_blocks: int = 16, block_size: int = 4,
                       enable_prefix_caching: bool = True) -> BlockManager:
    return BlockManager(num_blocks, block_size, enable_prefix_caching)


def make_scheduler(num_blocks: int = 16, block_size: int = 4, max_num_seqs: int = 8,
                   max_num_batched_tokens: int = 64, enable_prefix_caching: bool = True) -> Scheduler:
    return Scheduler(SchedulerConfig(max_num_seqs, max_num_batched_tokens),
                     make_block_manager(num_blocks, block_size, enable_prefix_caching))


def make_seq(request_id: str, prompt: int | list[int], priority: int = 0, arrival_ns: int = 0,
             max_tokens: int = 16) -> Sequence:
    """A sequence with an explicit arrival time. An int prompt is a length: its token ids are derived from the
    request id, so two requests never share a prefix by accident."""
    if isinstance(prompt, int):
        base = 1000 * (1 + zlib.crc32(request_id.encode()) % 1000)
        prompt = list(range(base, base + prompt))
    request = GenerationRequest(request_id, prompt, greedy(max_tokens), priority=priority, arrival_ns=arrival_ns)
    return Sequence(request)


def make_prompt(length: int, seed: int, vocab: int = 97) -> list[int]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(3, vocab, (length,), generator=generator).tolist()


def greedy(max_tokens: int, **kw: object) -> SamplingParams:
    return SamplingParams(max_tokens=max_tokens, temperature=0.0, **kw)


@dataclass
class RecordingSink:
    tokens: list[int] = field(default_factory=list)
    finished: FinishReason | None = None
    error: Exception | None = None
    cancelled: bool = False
    cached_tokens: int = 0

    def is_cancelled(self) -> bool:
        return self.cancelled

    def emit(self, output: StepOutput) -> None:
        self.tokens.extend(output.new_token_ids)
        self.cached_tokens = output.cached_tokens
        if output.finished:
            self.finished = output.finish_reason

    def fail(self, error: Exception) -> None:
        self.error = error


def submit(engine: Engine, request_id: str, prompt: list[int], params: SamplingParams,
           priority: int = 0) -> RecordingSink:
    sink = RecordingSink()
    engine.submit(GenerationRequest(request_id, prompt, params, priority=priority), sink)
    return sink


@torch.inference_mode()
def reference_greedy(model: Llama, prompt: list[int], max_tokens: int) -> list[int]:
    """Full recompute every step: the plain forward with no cache at all."""
    tokens = list(prompt)
    for _ in range(max_tokens):
        logits = model(torch.tensor([tokens]))[0, -1]
        tokens.append(int(torch.argmax(logits)))
    return tokens[len(prompt):]
