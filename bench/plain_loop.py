"""The plain PyTorch training step of ``TriPosTModule``'s stage 0, without Lightning: ``weighted_lm_loss``, gradient
clipping and an optimiser step (use the module's own ``modules.tripost.adamw``). The throughput benchmark measures
Lightning against it; the warm-up probe trains with it."""

from __future__ import annotations

import torch

from modules.tripost import weighted_lm_loss


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """One optimiser step on a collated batch; returns the loss."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    loss = weighted_lm_loss(logits, batch["input_ids"], batch["loss_weights"])
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad()
    return loss.detach()
