"""The CPU engine's sampler: parameter validation, penalties, bans and the sampling distribution."""

from __future__ import annotations

import math

import pytest
import torch

from engine.sampling import SamplingParams, apply_penalties, hits_stop_sequence, sample_next


def draw(logits: torch.Tensor, params: SamplingParams, n: int, output_ids: list[int] | None = None) -> list[int]:
    generator = params.make_generator()
    return [sample_next(logits, params, [], output_ids or [], generator) for _ in range(n)]


def log_probs(*probs: float) -> torch.Tensor:
    return torch.tensor([math.log(p) for p in probs])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_tokens": 0},
        {"temperature": -0.5},
        {"top_p": 0.0},
        {"top_p": 1.01},
        {"top_k": -1},
        {"repetition_penalty": 0.0},
        {"repetition_penalty": -1.0},
        {"min_tokens": -1},
        {"seed": -1},
        {"seed": 2**64},
    ],
)
def test_invalid_params_raise_value_error(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        SamplingParams(**kwargs)


def test_valid_edges_are_accepted() -> None:
    params = SamplingParams(max_tokens=1, temperature=0, top_p=1.0, top_k=0, seed=2**64 - 1, min_tokens=0)
    assert params.greedy
    assert SamplingParams(top_k=1).greedy
    assert not SamplingParams(temperature=0.7, top_k=5).greedy
    params.make_generator()  # the largest uint64 seed is usable


def test_greedy_picks_argmax() -> None:
    logits = torch.tensor([0.1, 3.0, -2.0, 2.9, 0.0])
    assert draw(logits, SamplingParams(temperature=0.0), 5) == [1] * 5
    assert draw(logits, SamplingParams(temperature=1.0, top_k=1), 5) == [1] * 5


def test_same_seed_same_samples_different_seeds_differ() -> None:
    logits = torch.zeros(50)  # uniform: 20 draws from two seeds agreeing by chance has probability 50**-20
    first = draw(logits, SamplingParams(seed=1234), 20)
    assert draw(logits, SamplingParams(seed=1234), 20) == first
    assert draw(logits, SamplingParams(seed=4321), 20) != first


def test_top_k_never_samples_outside_the_top_k() -> None:
    logits = torch.tensor([1.0, 5.0, 0.5, 4.5, 2.0, 3.0])  # top 2: ids 1 and 3
    samples = draw(logits, SamplingParams(top_k=2, temperature=1.5, seed=7), 500)
    assert set(samples) == {1, 3}


def test_top_p_keeps_the_smallest_set_reaching_the_mass() -> None:
    logits = log_probs(0.1, 0.5, 0.3, 0.05, 0.05)
    # sorted mass: 0.5, 0.8, 0.9, 0.95, 1.0 → top_p=0.75 keeps {1, 2}; top_p=0.45 keeps {1} alone; 0.55 needs {1, 2}
    # (exact boundaries such as 0.5 are left alone: softmax rounding decides them)
    samples = draw(logits, SamplingParams(top_p=0.75, seed=3), 600)
    assert set(samples) == {1, 2}
    share = samples.count(1) / len(samples)
    assert abs(share - 0.5 / 0.8) < 0.08  # renormalised over the kept set
    assert set(draw(logits, SamplingParams(top_p=0.45, seed=3), 200)) == {1}
    assert set(draw(logits, SamplingParams(top_p=0.55, seed=3), 400)) == {1, 2}
    assert set(draw(logits, SamplingParams(top_p=0.85, seed=3), 600)) == {0, 1, 2}


def test_temperature_sharpens_the_distribution() -> None:
    logits = log_probs(0.6, 0.4)
    cold = draw(logits, SamplingParams(temperature=0.1, seed=11), 400)
    assert cold.count(0) / len(cold) > 0.95  # 0.6**10 / (0.6**10 + 0.4**10) ≈ 0.98


def test_repetition_penalty_divides_positive_and_multiplies_negative_logits() -> None:
    logits = torch.tensor([2.0, -2.0, 2.0, -2.0, 1.0])
    params = SamplingParams(repetition_penalty=2.0)
    out = apply_penalties(logits, params, prompt_ids=[0, 1], output_ids=[1, 4, 4])
    assert out.tolist() == [1.0, -4.0, 2.0, -2.0, 0.5]
    assert logits.tolist() == [2.0, -2.0, 2.0, -2.0, 1.0]  # the input is not modified


def test_presence_and_frequency_penalties_cover_output_only() -> None:
    logits = torch.zeros(5)
    params = SamplingParams(presence_penalty=0.5, frequency_penalty=0.25)
    out = apply_penalties(logits, params, prompt_ids=[0, 0, 0], output_ids=[1, 2, 2, 2])
    # id 1: 0.5 + 0.25*1; id 2: 0.5 + 0.25*3; prompt-only id 0 untouched
    assert out.tolist() == pytest.approx([0.0, -0.75, -1.25, 0.0, 0.0])


def test_negative_presence_penalty_encourages_repeats() -> None:
    out = apply_penalties(torch.zeros(3), SamplingParams(presence_penalty=-1.0), [], [2])
    assert out.tolist() == [0.0, 0.0, 1.0]


def test_no_penalties_leave_logits_unchanged() -> None:
    logits = torch.tensor([1.0, -1.0, 0.5])
    assert torch.equal(apply_penalties(logits, SamplingParams(), [0, 1], [2, 2]), logits)


def test_min_tokens_bans_end_id_until_reached() -> None:
    logits = torch.tensor([0.0, 0.0, 10.0])  # end_id=2 would always win
    params = SamplingParams(temperature=0.0, end_id=2, min_tokens=3)
    generator = params.make_generator()
    assert sample_next(logits, params, [5], [], generator) != 2
    assert sample_next(logits, params, [5], [0, 1], generator) != 2
    assert sample_next(logits, params, [5], [0, 1, 0], generator) == 2
    sampled = draw(logits, SamplingParams(temperature=1.0, end_id=2, min_tokens=1, seed=0), 100)
    assert 2 not in sampled


def test_single_token_bad_word_is_always_banned() -> None:
    logits = torch.tensor([0.0, 10.0, 1.0])
    params = SamplingParams(temperature=0.0, bad_token_seqs=[[1]])
    assert sample_next(logits, params, [], [], params.make_generator()) == 2
    assert 1 not in draw(logits, SamplingParams(seed=1, bad_token_seqs=[[1]]), 200)


def test_multi_token_bad_word_is_banned_only_after_its_prefix() -> None:
    logits = torch.tensor([0.0, 0.0, 0.0, 10.0, 1.0])
    params = SamplingParams(temperature=0.0, bad_token_seqs=[[1, 2, 3], []])
    generator = params.make_generator()
    assert sample_next(logits, params, [], [], generator) == 3  # no prefix yet
    assert sample_next(logits, params, [], [1], generator) == 3  # only half of the prefix
    assert sample_next(logits, params, [], [2, 1], generator) == 3  # prefix tokens in the wrong order
    assert sample_next(logits, params, [], [0, 1, 2], generator) == 4  # prefix complete: 3 banned
    assert sample_next(logits, params, [1, 2], [], generator) == 3  # the prompt does not complete the prefix


def test_hits_stop_sequence() -> None:
    params = SamplingParams(stop_token_seqs=[[7, 8], [9], []])
    assert hits_stop_sequence(params, [1, 7, 8])
    assert hits_stop_sequence(params, [9])
    assert not hits_stop_sequence(params, [7, 8, 1])
    assert not hits_stop_sequence(params, [8])
    assert not hits_stop_sequence(params, [])
    assert not hits_stop_sequence(SamplingParams(), [1, 2, 3])


def test_a_mixed_batch_samples_each_row_by_its_own_parameters() -> None:
    from engine.sampling import sample_batch

    logits = torch.tensor([[0.0, 3.0, 2.0, 1.0, -1.0]]).repeat(4, 1)
    params = [SamplingParams(temperature=0), SamplingParams(top_k=2, seed=1), SamplingParams(top_p=0.5, seed=2),
              SamplingParams(temperature=0, repetition_penalty=10.0)]
    prompts, outputs = [[], [], [], [1]], [[], [], [], []]
    seen: list[set[int]] = [set() for _ in params]
    generators = [p.make_generator() for p in params]
    for _ in range(200):
        for row, token in enumerate(sample_batch(logits, params, prompts, outputs, generators)):
            seen[row].add(token)
    assert seen[0] == {1}  # greedy
    assert seen[1] == {1, 2}  # top-2 of 5, both drawn in 200 tries
    assert seen[2] == {1}  # token 1 alone holds more than half the mass
    assert seen[3] == {2}  # the penalised prompt token loses its lead
    replay = [p.make_generator() for p in params]
    first = sample_batch(logits, params, prompts, outputs, replay)
    assert first == sample_batch(logits, params, prompts, outputs, [p.make_generator() for p in params])


def test_batched_draws_follow_the_distribution_seeded_or_not() -> None:
    from engine.sampling import sample_batch

    probs = torch.tensor([0.5, 0.3, 0.2, 0.0])
    logits = torch.log(probs.clamp_min(1e-12)).repeat(2, 1)
    params = [SamplingParams(seed=5), SamplingParams()]
    generators = [p.make_generator() for p in params]
    counts = torch.zeros(2, 4)
    for _ in range(3000):
        for row, token in enumerate(sample_batch(logits, params, [[], []], [[], []], generators)):
            counts[row, token] += 1
    for row in range(2):
        assert counts[row, 3] == 0  # a zero-probability token is never drawn
        assert torch.allclose(counts[row] / 3000, probs, atol=0.04), counts[row]
