"""PPO pieces for PIT's RL stage, as plain tensor functions (each checked against hand-computed tensors in tests).

Shapes: sequences are ``[B, T]`` token ids; per-token quantities are ``[B, T-1]``, position t scoring the
prediction of token t+1; ``response_mask`` [B, T-1] is 1 where token t+1 belongs to the response (not the prompt,
not padding). The KL-shaped reward follows the usual RLHF recipe: every response token pays
``-kl_coef * (log π(a_t) - log π_ref(a_t))`` and the last one also gets the sequence's gap reward.

Critic-free estimators (``group_advantages``): the same prompt is sampled k times; each response's sequence reward
is its gap reward minus ``kl_coef`` times its summed per-token KL (``sequence_rewards``, the same penalty as the
shaped rewards, paid at once), and its advantage compares it with the other samples of its prompt: RLOO
(Ahmadian et al. 2024, TRL's ``RLOOTrainer``) or GRPO (Shao et al. 2024, TRL's ``GRPOTrainer``).

Temperature: rollouts sample from ``softmax(logits / T)``; PPO's ratios and KL must be of that distribution, so
``token_logprobs`` and ``entropy`` take the rollout temperature (a float or one per row).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def tempered(logits: torch.Tensor, temperature: torch.Tensor | float | None) -> torch.Tensor:
    """``logits / T`` in float32: the logits of the distribution that sampled at temperature T (a float, or [B],
    one per row); None or 1 leaves them as they are. T must be > 0 (greedy decoding has no distribution)."""
    logits = logits.float()
    if temperature is None:
        return logits
    if isinstance(temperature, torch.Tensor):
        if (temperature <= 0).any():
            raise ValueError(f"temperature {temperature.tolist()}: log-probs need a sampling temperature > 0")
        return logits / temperature.to(logits.device, logits.dtype).view(-1, *[1] * (logits.dim() - 1))
    if temperature <= 0:
        raise ValueError(f"temperature {temperature}: log-probs need a sampling temperature > 0")
    return logits if temperature == 1 else logits / temperature


def token_logprobs(logits: torch.Tensor, input_ids: torch.Tensor,
                   temperature: torch.Tensor | float | None = None) -> torch.Tensor:
    """log π_T(token t+1 | ≤ t) under ``softmax(logits / T)``: logits [B, T, V], input_ids [B, T] -> [B, T-1]."""
    logp = F.log_softmax(tempered(logits[:, :-1], temperature), dim=-1)
    return torch.gather(logp, 2, input_ids[:, 1:, None]).squeeze(2)


def entropy(logits: torch.Tensor, temperature: torch.Tensor | float | None = None) -> torch.Tensor:
    """Entropy of each next-token distribution ``softmax(logits / T)``: [B, T, V] -> [B, T-1]."""
    logp = F.log_softmax(tempered(logits[:, :-1], temperature), dim=-1)
    return -(logp.exp() * logp).sum(-1)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """Normalise ``x`` to unit variance (and zero mean) over the masked entries; masked-out entries become 0."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        out = out + mean
    return out * mask


def shaped_rewards(score: torch.Tensor, logprobs: torch.Tensor, ref_logprobs: torch.Tensor,
                   response_mask: torch.Tensor, kl_coef: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards ``-kl_coef * kl_t`` plus ``score`` [B] on each row's last response token; returns
    ``(rewards, kl)`` [B, T-1], with ``kl_t = log π - log π_ref`` on response tokens (0 elsewhere)."""
    kl = (logprobs - ref_logprobs) * response_mask
    rewards = -kl_coef * kl
    positions = torch.arange(response_mask.shape[1], device=response_mask.device).expand_as(response_mask)
    last = (positions * response_mask).argmax(dim=1)  # index of the last response token
    rewards = rewards.clone()
    rewards[torch.arange(len(score)), last] += score
    return rewards * response_mask, kl


def sequence_rewards(score: torch.Tensor, logprobs: torch.Tensor, ref_logprobs: torch.Tensor,
                     response_mask: torch.Tensor, kl_coef: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The critic-free estimators' reward of each whole response: ``score - kl_coef * sum_t kl_t`` [B], with
    ``kl_t = log π - log π_ref`` over the response tokens (the shaped rewards' penalty, summed); returns
    ``(rewards, kl)``, kl [B, T-1] as ``shaped_rewards`` gives it."""
    kl = (logprobs - ref_logprobs) * response_mask
    return score - kl_coef * kl.sum(1), kl


#: GRPO's ε in ``(r - mean) / (std + ε)``, TRL's value: a group whose rewards all tie gets advantages 0, not nan
GRPO_EPS = 1e-4


def group_advantages(rewards: torch.Tensor, groups: torch.Tensor, estimator: str) -> torch.Tensor:
    """One advantage per response [N] from the sequence rewards [N] of the k >= 2 samples of each prompt
    (``groups`` [N]: equal ids = samples of one prompt):

    * ``rloo``: ``r_i - mean_{j != i} r_j``, the leave-one-out baseline;
    * ``grpo``: ``(r_i - mean(r)) / (std(r) + 1e-4)`` with the *sample* standard deviation (divisor k - 1), as
      ``torch.std`` and TRL's ``GRPOTrainer`` compute it.
    """
    if estimator not in ("rloo", "grpo"):
        raise ValueError(f"unknown advantage estimator {estimator!r}: rloo or grpo")
    _, group, counts = torch.unique(groups, return_inverse=True, return_counts=True)
    if (counts < 2).any():
        raise ValueError(f"{estimator}: every prompt needs at least 2 samples to compare, found groups of sizes "
                         f"{sorted(set(counts.tolist()))} (--model.init_args.samples_per_prompt)")
    rewards = rewards.float()
    sums = torch.zeros(len(counts), device=rewards.device).index_add_(0, group, rewards)
    k = counts.to(rewards.dtype)[group]
    if estimator == "rloo":
        return rewards - (sums[group] - rewards) / (k - 1)
    mean = (sums / counts)[group]
    squares = torch.zeros(len(counts), device=rewards.device).index_add_(0, group, (rewards - mean) ** 2)
    std = torch.sqrt(squares / (counts - 1))[group]
    return (rewards - mean) / (std + GRPO_EPS)


def gae(rewards: torch.Tensor, values: torch.Tensor, response_mask: torch.Tensor, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over the response tokens of each row; returns ``(advantages, returns)``.

    ``delta_t = r_t + gamma * V_{t+1} - V_t`` with ``V`` past the last response token taken as 0, and
    ``A_t = delta_t + gamma * lam * A_{t+1}``; prompt and padding positions get 0.
    """
    mask = response_mask.float()
    advantages = torch.zeros_like(rewards)
    next_value = torch.zeros(rewards.shape[0], device=rewards.device)
    next_advantage = torch.zeros_like(next_value)
    for t in reversed(range(rewards.shape[1])):
        m = mask[:, t]
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        advantage = delta + gamma * lam * next_advantage
        advantages[:, t] = advantage * m
        # outside the response carry nothing across (a row's response is one contiguous span)
        next_value = torch.where(m > 0, values[:, t], next_value * 0)
        next_advantage = torch.where(m > 0, advantage, next_advantage * 0)
    return advantages, (advantages + values) * mask


def policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                response_mask: torch.Tensor, clip: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate ``-min(ρA, clip(ρ, 1±clip)A)`` averaged over response tokens; returns
    ``(loss, clip_fraction)``."""
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1 - clip, 1 + clip) * advantages
    loss = masked_mean(-torch.min(unclipped, clipped), response_mask)
    clip_fraction = masked_mean(((ratio - 1).abs() > clip).float(), response_mask)
    return loss, clip_fraction


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, response_mask: torch.Tensor,
               clip: float = 0.2) -> torch.Tensor:
    """Clipped value loss ``0.5 * max((V - R)^2, (clip(V, V_old ± clip) - R)^2)`` over response tokens."""
    clipped = old_values + torch.clamp(values - old_values, -clip, clip)
    return 0.5 * masked_mean(torch.max((values - returns) ** 2, (clipped - returns) ** 2), response_mask)
