"""PPO pieces for PIT's RL stage, as plain tensor functions (each checked against hand-computed tensors in tests).

Shapes: sequences are ``[B, T]`` token ids; per-token quantities are ``[B, T-1]``, position t scoring the
prediction of token t+1; ``response_mask`` [B, T-1] is 1 where token t+1 belongs to the response (not the prompt,
not padding). The KL-shaped reward follows the usual RLHF recipe: every response token pays
``-kl_coef * (log π(a_t) - log π_ref(a_t))`` and the last one also gets the sequence's gap reward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def token_logprobs(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """log π(token t+1 | ≤ t): logits [B, T, V], input_ids [B, T] -> [B, T-1]."""
    return torch.gather(F.log_softmax(logits[:, :-1].float(), dim=-1), 2, input_ids[:, 1:, None]).squeeze(2)


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of each next-token distribution: [B, T, V] -> [B, T-1]."""
    logp = F.log_softmax(logits[:, :-1].float(), dim=-1)
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
