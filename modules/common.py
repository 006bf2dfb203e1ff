"""What the TriPosT and PIT LightningModules share: the tiny from-scratch Llama, its LR schedule, the HF export."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import LlamaConfig, PreTrainedModel

from modules.distributed import full_state_dict
from modules.pretrained import merged_state_dict, unwrapped


@dataclass
class TinyLlama:
    """Dimensions of the tiny Llama built from scratch when no pretrained model is given (the CPU default)."""

    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 512
    max_position_embeddings: int = 2048


def tiny_llama_config(tiny: TinyLlama, tokenizer, **overrides) -> LlamaConfig:
    """A Llama config of ``tiny``'s dimensions for ``tokenizer`` (vocabulary and special ids)."""
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=tiny.hidden_size,
        intermediate_size=tiny.intermediate_size,
        num_hidden_layers=tiny.num_layers,
        num_attention_heads=tiny.num_heads,
        num_key_value_heads=tiny.num_heads,
        max_position_embeddings=tiny.max_position_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **overrides,
    )


def warmup_cosine_schedule(optimizer: torch.optim.Optimizer, total_steps: int, warmup_ratio: float = 0.1,
                           min_ratio: float = 0.1) -> dict:
    """Linear warm-up over ``warmup_ratio`` of ``total_steps``, then cosine decay to ``min_ratio`` of the peak;
    as Lightning's ``configure_optimizers`` return value (stepped every batch)."""
    total = max(1, total_steps)
    warm = max(1, int(total * warmup_ratio))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = min(1.0, (step - warm) / max(1, total - warm))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def save_hf_folder(model: PreTrainedModel, tokenizer, directory: str | Path,
                   state_dict: dict[str, torch.Tensor] | None = None) -> Path:
    """Save model and tokenizer as a Hugging Face folder that plain transformers (or vLLM) can load;
    ``state_dict``: the full weights to write (a sharded model's own tensors are only its shards)."""
    directory = Path(directory)
    model.save_pretrained(directory, state_dict=state_dict)
    tokenizer.save_pretrained(directory)
    return directory


def export_at_fit_end(trainer, model: PreTrainedModel, tokenizer, export_dir: str | None, name: str) -> None:
    """``on_fit_end`` export: ``export_dir`` or ``{trainer.log_dir}/{name}``, from any strategy. Every rank resolves
    the folder (``trainer.log_dir`` is a broadcast) and helps assemble the full weights (a collective under FSDP);
    rank 0 writes."""
    directory = Path(export_dir or Path(trainer.log_dir or ".") / name)
    state = full_state_dict(trainer, model)
    if not trainer.is_global_zero:
        return
    if (base := unwrapped(model)) is not model:  # LoRA: merged into a plain folder, and the adapter alone beside it
        save_hf_folder(base, tokenizer, directory, merged_state_dict(model, state))
        model.save_pretrained(directory / "adapter", state_dict=state)
    else:
        save_hf_folder(model, tokenizer, directory, state)
