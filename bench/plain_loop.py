"""The plain PyTorch training step of ``TriPosTModule``'s stage 0, without Lightning: its AdamW parameter groups,
``weighted_lm_loss`` and gradient clipping. The throughput benchmark measures Lightning against it; the warm-up
probe trains with it."""

from __future__ import annotations

import torch

from modules.tripost import weighted_lm_loss


def adamw(model: torch.nn.Module, lr: float, weight_decay: float = 0.01) -> torch.optim.AdamW:
    """AdamW as ``TriPosTModule.configure_optimizers`` builds it: no decay on norms and biases."""
    trained = [p for p in model.parameters() if p.requires_grad]  # a PEFT model: its adapters
    decay = [p for p in trained if p.ndim >= 2]
    no_decay = [p for p in trained if p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.95))


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """One optimiser step on a collated batch; returns the loss."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    loss = weighted_lm_loss(logits, batch["input_ids"], batch["loss_weights"])
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad()
    return loss.detach()
