"""PPO pieces against hand-computed tensors."""

import math

import pytest
import torch

from modules.ppo import (
    entropy,
    gae,
    group_advantages,
    policy_loss,
    sequence_rewards,
    shaped_rewards,
    token_logprobs,
    value_loss,
    whiten,
)


def test_token_logprobs_pick_the_next_token():
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [1 / 3, 1 / 3, 1 / 3]]]))
    ids = torch.tensor([[0, 1, 2]])  # position 0 predicts 1 (p=.25), position 1 predicts 2 (p=.1)
    assert torch.allclose(token_logprobs(logits, ids), torch.log(torch.tensor([[0.25, 0.1]])))
    assert torch.allclose(entropy(logits)[0, 0], torch.tensor(-(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))))


def test_shaped_rewards_charge_kl_per_token_and_pay_the_score_at_the_end():
    logp = torch.tensor([[-1.0, -1.0, -2.0, -1.0, 0.0]])
    ref = torch.tensor([[-1.5, -1.0, -1.0, -1.5, 0.0]])
    mask = torch.tensor([[0.0, 1.0, 1.0, 1.0, 0.0]])  # response = positions 1..3, then padding
    rewards, kl = shaped_rewards(torch.tensor([2.0]), logp, ref, mask, kl_coef=0.1)
    assert torch.allclose(kl, torch.tensor([[0.0, 0.0, -1.0, 0.5, 0.0]]))
    assert torch.allclose(rewards, torch.tensor([[0.0, 0.0, 0.1, -0.05 + 2.0, 0.0]]))


def test_gae_by_hand():
    # one row, response at positions 1..3; gamma = 0.9, lam = 0.5
    rewards = torch.tensor([[0.0, 0.0, 0.0, 1.0, 0.0]])
    values = torch.tensor([[9.0, 0.5, 0.6, 0.7, 9.0]])
    mask = torch.tensor([[0.0, 1.0, 1.0, 1.0, 0.0]])
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.5)
    d3 = 1.0 + 0.9 * 0 - 0.7          # 0.3
    d2 = 0.0 + 0.9 * 0.7 - 0.6        # 0.03
    d1 = 0.0 + 0.9 * 0.6 - 0.5        # 0.04
    a3, a2 = d3, d2 + 0.45 * d3
    a1 = d1 + 0.45 * a2
    assert torch.allclose(adv, torch.tensor([[0.0, a1, a2, a3, 0.0]]), atol=1e-6)
    assert torch.allclose(ret, torch.tensor([[0.0, a1 + 0.5, a2 + 0.6, a3 + 0.7, 0.0]]), atol=1e-6)


def test_clipped_surrogate_and_clip_fraction_by_hand():
    old = torch.zeros(1, 3)
    new = torch.log(torch.tensor([[1.5, 0.5, 1.1]]))  # ratios 1.5, 0.5, 1.1
    adv = torch.tensor([[1.0, 1.0, -2.0]])
    mask = torch.ones(1, 3)
    loss, clipfrac = policy_loss(new, old, adv, mask, clip=0.2)
    # token 0: min(1.5, 1.2) = 1.2; token 1: min(0.5, 0.8) = 0.5; token 2: min(-2.2, -2.2) = -2.2
    assert math.isclose(loss.item(), -(1.2 + 0.5 - 2.2) / 3, rel_tol=1e-6)
    assert math.isclose(clipfrac.item(), 2 / 3, rel_tol=1e-6)


def test_value_loss_takes_the_worse_of_clipped_and_unclipped():
    values, old, returns = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 0.0]]), torch.tensor([[2.0, 0.1]])
    loss = value_loss(values, old, returns, torch.ones(1, 2), clip=0.2)
    # token 0: max((1-2)^2, (0.2-2)^2) = 3.24; token 1: max(0.01, 0.01)
    assert math.isclose(loss.item(), 0.5 * (3.24 + 0.01) / 2, rel_tol=1e-6)


def test_whitening_uses_masked_entries_only():
    x, mask = torch.tensor([[1.0, 3.0, 100.0]]), torch.tensor([[1.0, 1.0, 0.0]])
    assert torch.allclose(whiten(x, mask), torch.tensor([[-1.0, 1.0, 0.0]]), atol=1e-4)


def test_clipped_surrogate_is_pessimistic_for_negative_advantages():
    # the wrong form -min(ρ, clip(ρ))·A agrees with the right one whenever A > 0; only A < 0 outside the
    # clip range tells them apart: there the loss must be max(-ρA, -clip(ρ)A), the larger penalty
    old = torch.zeros(1, 3)
    new = torch.log(torch.tensor([[0.5, 1.5, 0.9]]))  # ratios 0.5 (< 1 - ε), 1.5 (> 1 + ε), 0.9 (inside)
    adv = torch.tensor([[-1.0, -2.0, -1.0]])
    new.requires_grad_(True)
    loss, clipfrac = policy_loss(new, old, adv, torch.ones(1, 3), clip=0.2)
    # token 0: max(-0.5·-1, -0.8·-1) = max(0.5, 0.8) = 0.8   (wrong form: -min(0.5, 0.8)·-1 = 0.5)
    # token 1: max(-1.5·-2, -1.2·-2) = max(3.0, 2.4) = 3.0   (wrong form: -min(1.5, 1.2)·-2 = 2.4)
    # token 2: max(0.9, 0.9) = 0.9
    assert math.isclose(loss.item(), (0.8 + 3.0 + 0.9) / 3, rel_tol=1e-6)
    assert math.isclose(clipfrac.item(), 2 / 3, rel_tol=1e-6)  # tokens 0 and 1 lie outside 1 ± 0.2
    # the clipped token 0 gives no gradient; token 1 keeps -A·ρ/3 = 2·1.5/3 = 1.0, token 2: 1·0.9/3 = 0.3
    loss.backward()
    assert torch.allclose(new.grad, torch.tensor([[0.0, 1.0, 0.3]]), atol=1e-6)


def test_log_probs_and_entropy_at_temperature_are_those_of_logits_over_t():
    # rollouts at T = 0.5 sample from softmax(logits / 0.5): for logits log(.5, .25, .25) that is ∝ (.25, .0625,
    # .0625) = (2/3, 1/6, 1/6); for log(.1, .8, .1): ∝ (.01, .64, .01) = (1/66, 64/66, 1/66)
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [1 / 3, 1 / 3, 1 / 3]]]))
    ids = torch.tensor([[0, 0, 1]])  # position 0 predicts token 0, position 1 predicts token 1
    expected = torch.log(torch.tensor([[2 / 3, 64 / 66]]))
    assert torch.allclose(token_logprobs(logits, ids, 0.5), expected, atol=1e-6)
    assert torch.allclose(token_logprobs(logits, ids, torch.tensor([0.5])), expected, atol=1e-6)  # one per row
    assert torch.allclose(token_logprobs(logits, ids), torch.log(torch.tensor([[0.5, 0.8]])))  # T = 1 as before
    h = -(2 / 3 * math.log(2 / 3) + 2 * (1 / 6) * math.log(1 / 6))
    assert math.isclose(entropy(logits, 0.5)[0, 0].item(), h, rel_tol=1e-5)
    # rows at different temperatures: row 1 at T = 2 takes sqrt: ∝ (.7071, .5, .5)
    two = torch.cat([logits, logits])
    got = token_logprobs(two, torch.cat([ids, ids]), torch.tensor([0.5, 2.0]))
    assert torch.allclose(got[1, 0], torch.log(torch.tensor(0.5**0.5 / (0.5**0.5 + 2 * 0.5))), atol=1e-6)
    with pytest.raises(ValueError, match="temperature > 0"):
        token_logprobs(logits, ids, 0.0)


def test_sequence_rewards_subtract_beta_times_the_summed_kl():
    logp = torch.tensor([[-1.0, -1.0, -2.0, -1.0, 0.0]])
    ref = torch.tensor([[-1.5, -1.0, -1.0, -1.5, 0.0]])
    mask = torch.tensor([[0.0, 1.0, 1.0, 1.0, 0.0]])
    rewards, kl = sequence_rewards(torch.tensor([2.0]), logp, ref, mask, kl_coef=0.1)
    # response kl: 0 - 1 + 0.5 = -0.5, so 2 - 0.1 · -0.5 = 2.05: the shaped rewards' total, paid at once
    assert torch.allclose(rewards, torch.tensor([2.05]))
    assert torch.allclose(kl, torch.tensor([[0.0, 0.0, -1.0, 0.5, 0.0]]))
    shaped, _ = shaped_rewards(torch.tensor([2.0]), logp, ref, mask, kl_coef=0.1)
    assert torch.allclose(shaped.sum(1), rewards)


def test_rloo_and_grpo_advantages_by_hand():
    rewards = torch.tensor([1.0, 0.0, 0.5])
    groups = torch.zeros(3, dtype=torch.long)
    # RLOO: 1 - mean(0, .5) = .75; 0 - mean(1, .5) = -.75; .5 - mean(1, 0) = 0
    assert torch.allclose(group_advantages(rewards, groups, "rloo"), torch.tensor([0.75, -0.75, 0.0]))
    # GRPO, sample std: mean .5, deviations (.5, -.5, 0), variance (.25 + .25 + 0) / (3 - 1) = .25, std .5;
    # (the population std would be sqrt(.5 / 3) = .408, giving ±1.22)
    eps = 1e-4
    assert torch.allclose(group_advantages(rewards, groups, "grpo"),
                          torch.tensor([0.5 / (0.5 + eps), -0.5 / (0.5 + eps), 0.0]), atol=1e-6)
    # two prompts interleaved: the second's samples all tie, so both estimators give it 0 (GRPO: 0 / ε, not nan)
    mixed, ids = torch.tensor([1.0, 7.0, 0.0, 7.0, 0.5, 7.0]), torch.tensor([3, 9, 3, 9, 3, 9])
    assert torch.allclose(group_advantages(mixed, ids, "rloo"), torch.tensor([0.75, 0.0, -0.75, 0.0, 0.0, 0.0]))
    assert torch.allclose(group_advantages(mixed, ids, "grpo")[1::2], torch.zeros(3))
    # groups of two: RLOO is the difference, GRPO ±(d/2) / (|d|/sqrt 2 + ε) = ±0.7070
    pair = group_advantages(torch.tensor([3.0, 1.0]), torch.tensor([0, 0]), "grpo")
    assert torch.allclose(pair, torch.tensor([1.0, -1.0]) / (2**0.5 + eps), atol=1e-6)
    assert torch.allclose(group_advantages(torch.tensor([3.0, 1.0]), torch.tensor([0, 0]), "rloo"),
                          torch.tensor([2.0, -2.0]))


def test_a_group_of_one_sample_is_refused():
    with pytest.raises(ValueError, match=r"at least 2 samples.*sizes \[1, 2\].*samples_per_prompt"):
        group_advantages(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0, 0, 1]), "rloo")
