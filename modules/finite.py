"""Stop a diverged run where it diverges: the first non-finite training loss, non-finite weights at a checkpoint,
and non-finite weights before sampling each raise ``NonFiniteError`` with the stage, the step, the learning rate
and what to try. Without these a NaN loss trains on for the whole epoch, is saved as ``last.ckpt`` and surfaces
later as ``probability tensor contains either inf, nan or element < 0`` inside sampling.

The loss check runs in ``training_step``, before the backward pass, so the weights never see the bad loss; the
checkpoint check runs in ``on_save_checkpoint``, so every checkpoint holds finite weights and ``--ckpt_path last``
resumes from the last good state. Under several processes every rank takes the same decision (one all-reduce).
"""

from __future__ import annotations

import torch
from lightning.pytorch import LightningModule
from torch.distributed.tensor import DTensor


class NonFiniteError(FloatingPointError):
    """Training diverged: a loss or the weights are NaN or infinite."""


def _advice(module: LightningModule, at_this_step: bool, peak: tuple[str, float] | None) -> str:
    trainer = module.trainer
    clip = trainer.gradient_clip_val
    flag, value = peak or ("--model.init_args.lr", module.hparams.lr)
    rate = f"peak {flag}={value:g}"
    if at_this_step and trainer.optimizers:  # between steps the scheduler has already moved on: the peak only
        rate = f"{trainer.optimizers[0].param_groups[0]['lr']:.3g} at this step ({rate})"
    return (f"Learning rate: {rate}; gradient clipping: {'off' if clip is None else f'--trainer.gradient_clip_val={clip:g}'}. "
            f"Try a lower {flag} (a resumed run keeps its checkpoint's learning rate, so start again in a new "
            "--trainer.logger.init_args.save_dir), turn clipping on (--trainer.gradient_clip_val=1.0, which a resume "
            "takes), and check the data (an example with no learned tokens, an extreme reward). No checkpoint holds "
            "non-finite weights: --ckpt_path last resumes from the last good one.")


def _decided_by_any_rank(module: LightningModule, bad: bool) -> bool:
    """True on every rank if any rank saw a problem (a lone raising rank would leave the others hanging); without
    a trainer (a step by hand), this process's own finding."""
    return bad if module._trainer is None else bool(module.trainer.strategy.reduce_boolean_decision(bad, all=False))


def check_losses(module: LightningModule, where: str, batch_idx: int, *, peak: tuple[str, float] | None = None,
                 **losses: torch.Tensor) -> None:
    """Raise if any of the named training losses is NaN or infinite (call it before returning the loss).
    ``peak``: the flag and value of the stage's peak learning rate (default ``--model.init_args.lr``)."""
    values = torch.stack([loss.detach().float().reshape(()) for loss in losses.values()])
    bad = not bool(torch.isfinite(values).all())  # the step's one device sync; the message is built only on failure
    if not _decided_by_any_rank(module, bad):
        return
    named = ", ".join(f"{name} = {value:.4g}" for name, value in zip(losses, values.tolist()))
    if module._trainer is None:
        raise NonFiniteError(f"{where}: non-finite training loss: {named}")
    trainer = module.trainer
    if trainer.world_size > 1:
        named += " on this rank" if bad else " here, but non-finite on another rank"
    raise NonFiniteError(
        f"{where}: non-finite training loss at step {trainer.global_step + 1} (epoch {trainer.current_epoch}, batch "
        f"{batch_idx}; {trainer.global_step} optimizer steps before it were finite): {named}. The run stops before "
        "this loss reaches the weights. " + _advice(module, at_this_step=True, peak=peak))


def non_finite_parameters(model: torch.nn.Module) -> list[str]:
    """Names of the floating-point parameters holding a NaN or an infinity (a sharded parameter: this rank's shard)."""
    named = [(name, p.to_local() if isinstance(p, DTensor) else p) for name, p in model.named_parameters()]
    named = [(name, p) for name, p in named if p.is_floating_point() and p.numel()]
    if not named:
        return []
    finite = torch.stack([torch.isfinite(p.detach()).all() for _, p in named]).tolist()  # one device sync
    return [name for (name, _), ok in zip(named, finite) if not ok]


def check_weights_before_saving(module: LightningModule, where: str, peak: tuple[str, float] | None = None) -> None:
    """``on_save_checkpoint``: refuse to write a checkpoint whose weights are not finite."""
    bad = non_finite_parameters(module)
    if not _decided_by_any_rank(module, bool(bad)):
        return
    trainer = module.trainer
    raise NonFiniteError(
        f"{where}: refusing to write a checkpoint at step {trainer.global_step} (epoch {trainer.current_epoch}): "
        f"{_which(bad)}. The losses were finite, so an update overflowed (gradients or learning rate too large). "
        + _advice(module, at_this_step=False, peak=peak))


def check_weights_before_sampling(module: LightningModule, model: torch.nn.Module, what: str) -> None:
    """Refuse to sample from non-finite weights (sampling would fail with an unrelated-looking error)."""
    bad = non_finite_parameters(model)
    if not _decided_by_any_rank(module, bool(bad)):
        return
    advice = _advice(module, at_this_step=False, peak=None) if module._trainer is not None else "Check how the weights were produced."
    raise NonFiniteError(f"refusing to generate with {what}: {_which(bad)}; training diverged before these rollouts "
                         "or evaluation. " + advice)


def _which(bad: list[str]) -> str:
    if not bad:
        return "weight tensors on another rank are not finite"
    return f"{len(bad)} weight tensors are not finite ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''})"
