"""Pretrained Hugging Face models in the modules: loading options, and LoRA adapters through PEFT.

Loading: a hub name or a folder, with ``dtype``, ``attn_implementation`` and any other ``from_pretrained`` keyword
(``model_kwargs``); a name that loads nothing is an error naming the flag.

LoRA: PEFT's adapters on the chosen linear layers; the base weights are frozen, so the optimiser holds state for
the adapters only (and for a new head PEFT keeps trainable: the reward model's score head). A PIT policy's frozen KL
reference is the same model with its adapters disabled, not a second copy. The export at fit end writes the merged
weights as a plain Hugging Face folder (loads without PEFT) and the adapter alone in ``{export}/adapter``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from transformers import PreTrainedModel

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "auto": "auto"}
Dtype = Literal["float32", "bfloat16", "auto"]


@dataclass
class LoRA:
    """LoRA adapters (PEFT) on a pretrained model; only the adapters (and a new head) are trained.

    Args:
        r: rank of each adapter.
        alpha: the adapters' update is scaled by ``alpha / r``.
        dropout: dropout on each adapter's input.
        target_modules: names of the modules to adapt (e.g. ``[q_proj, v_proj]``), or ``all-linear`` (every linear
            layer except the output head).
    """

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] | str = field(default="all-linear")


def load_pretrained(auto_class, name_or_path: str, *, flag: str, dtype: Dtype = "float32",
                    attn_implementation: str | None = None, model_kwargs: dict[str, Any] | None = None,
                    device: torch.device | None = None, **kwargs) -> PreTrainedModel:
    """``auto_class.from_pretrained`` with the modules' loading options; ``flag`` names the option that gave
    ``name_or_path`` in errors; ``device``: where it will run (bfloat16 is refused where it cannot compute)."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r}: expected one of {sorted(DTYPES)}")
    if device is not None:
        check_dtype(dtype, device)
    options = {**(model_kwargs or {}), **kwargs, "dtype": DTYPES[dtype]}
    if attn_implementation is not None:
        options["attn_implementation"] = attn_implementation
    try:
        return auto_class.from_pretrained(name_or_path, **options)
    except (OSError, ValueError) as error:  # no such folder or hub name, offline miss, no config, a refused option
        raise FileNotFoundError(
            f"{flag}={name_or_path!r} could not be loaded as a Hugging Face model: {error}. Give a hub name (offline it "
            f"must be in the local cache, e.g. HuggingFaceTB/SmolLM2-135M-Instruct) or a folder with config.json and "
            f"weights, and check dtype, attn_implementation and model_kwargs"
        ) from error


def unwrapped(model: torch.nn.Module) -> torch.nn.Module:
    """The Hugging Face model inside a PEFT wrapper (adapters injected), or ``model`` itself: what ``generate`` and
    a sequence classifier's parts run, so FSDP units and generation settings belong there."""
    from peft import PeftModel

    return model.get_base_model() if isinstance(model, PeftModel) else model


def check_dtype(dtype: Dtype, device: torch.device) -> None:
    """Refuse bfloat16 weights on a GPU that has no bfloat16 arithmetic (before Ampere)."""
    if dtype == "bfloat16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"--model.init_args.dtype=bfloat16: {torch.cuda.get_device_name(device)} cannot compute in bfloat16; use "
                         "float32 weights with --trainer.precision=16-mixed")


def add_lora(model: PreTrainedModel, lora: LoRA, task_type: Literal["CAUSAL_LM", "SEQ_CLS"], flag: str):
    """``model`` wrapped by PEFT with ``lora``'s adapters (``SEQ_CLS`` also trains the new score head)."""
    from peft import LoraConfig, get_peft_model
    from peft.utils import NoMatchingPeftModuleError

    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                        target_modules=lora.target_modules, task_type=task_type)
    try:
        return get_peft_model(model, config)
    except NoMatchingPeftModuleError as error:
        from transformers.pytorch_utils import Conv1D  # GPT-2's linear layers

        linear = sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                         if isinstance(module, (torch.nn.Linear, Conv1D))})
        raise ValueError(f"{flag}.target_modules={lora.target_modules!r} matches no module of this model ({error}); "
                         f"its linear layers are named {linear}, or use all-linear") from error


_LORA_KEY = re.compile(r"\.lora_(A|B|dropout|embedding_A|embedding_B|magnitude_vector)\.")


def merged_state_dict(peft_model, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The plain Hugging Face state dict of ``peft_model`` with its adapters merged (``W + alpha/r * B @ A``),
    from ``state``, its full state dict (under FSDP gathered on rank 0). Our own because PEFT merges modules in
    place, and a sharded model's modules hold only shards."""
    config = peft_model.peft_config["default"]
    scaling = config.lora_alpha / (config.r ** 0.5 if config.use_rslora else config.r)
    merged = {}
    for key, value in state.items():
        if _LORA_KEY.search(key) or ".original_module." in key:
            continue
        name = key.removeprefix("base_model.model.").replace(".modules_to_save.default.", ".")
        if ".base_layer." in name:
            name = name.replace(".base_layer.", ".")
            stem = key[: key.index(".base_layer.")]
            if key.endswith(".weight"):
                if f"{stem}.lora_A.default.weight" not in state:  # e.g. an adapted embedding: not merged here
                    raise NotImplementedError(f"cannot merge the adapter of {stem}: LoRA on linear layers only")
                delta = state[f"{stem}.lora_B.default.weight"].float() @ state[f"{stem}.lora_A.default.weight"].float()
                if config.fan_in_fan_out:  # GPT-2's Conv1D stores its weight transposed
                    delta = delta.T
                value = (value.float() + scaling * delta).to(value.dtype)
        merged[name] = value
    return merged
