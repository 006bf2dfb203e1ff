"""How the TriPosT and PIT modules run under Lightning's strategies: FSDP2 sharding, generation, full-state export.

Training needs nothing from us under ``ddp`` and ``fsdp`` (FSDP1: Lightning wraps the module; the wrap and
activation-checkpointing policies are strategy flags). Four things do:

- FSDP2 (``ModelParallelStrategy``) shards whatever ``configure_model`` shards: :func:`shard_fsdp2` puts every
  decoder layer (the model's ``_no_split_modules`` classes) and then the whole model in its own ``fully_shard`` unit.
- Generation inside training (rollouts, evaluation): every rank takes the same prompt list, generates its slice
  and all-gathers the results (:func:`generate_across_ranks`), so the work is split and every rank ends with the
  same answers. Under sharding every forward is a collective: ranks pad their slices to equal counts and decode
  in lock-step (``synced_gpus``) so none hangs waiting for another; FSDP1 also gathers the root's parameters
  (embeddings, final norm, head), which its ``forward`` would do but ``generate`` bypasses.
- Engine: ``--model.init_args.generation.engine=vllm`` samples the policy with a vLLM engine per rank
  (``modules.vllm_engine``), on the same split of the prompts; other models always use ``generate``.
- Export: :func:`full_state_dict` assembles the unsharded weights (a collective), rank 0 saves them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import ExitStack

import torch
import torch.distributed as dist
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.strategies import FSDPStrategy, ModelParallelStrategy
from transformers import PreTrainedModel

from modules.finite import check_weights_before_sampling
from modules.generation import Completion, generate
from modules.pretrained import merged_state_dict, unwrapped


def is_sharded(trainer: Trainer | None) -> bool:
    """True under FSDP1 or FSDP2, where a forward pass is a collective every rank must join."""
    return trainer is not None and isinstance(trainer.strategy, (FSDPStrategy, ModelParallelStrategy))


def shard_fsdp2(module: LightningModule, models: Sequence[torch.nn.Module], cpu_offload: bool = False) -> None:
    """Under ``ModelParallelStrategy``: ``fully_shard`` each decoder layer of the Hugging Face models in ``models``
    (classes named in their ``_no_split_modules``), then each model as a whole (its embeddings, norm and head).
    Other strategies: nothing (DDP replicates, FSDP1 wraps by its ``auto_wrap_policy``)."""
    if module._trainer is None or not isinstance(module.trainer.strategy, ModelParallelStrategy):
        return
    from torch.distributed.fsdp import CPUOffloadPolicy, fully_shard

    mesh = module.device_mesh
    if mesh["tensor_parallel"].size() != 1:
        raise ValueError(
            f"tensor parallelism is not supported (tensor_parallel_size={mesh['tensor_parallel'].size()}): set "
            "--trainer.strategy.tensor_parallel_size=1 --trainer.strategy.data_parallel_size=<devices * nodes>"
        )
    options = {"mesh": mesh["data_parallel"]}
    if cpu_offload and mesh.device_type == "cpu":
        raise ValueError("cpu_offload moves the GPU shards to CPU memory, but this run is on CPU already: "
                         "drop --model.init_args.cpu_offload")
    if cpu_offload:
        options["offload_policy"] = CPUOffloadPolicy()
    for model in models:
        model = unwrapped(model)  # LoRA: generate calls the wrapped HF model, so it must be the unit's root
        layer_names = set(getattr(model, "_no_split_modules", None) or [])
        for sub in model.modules():
            if type(sub).__name__ in layer_names:
                fully_shard(sub, **options)
        fully_shard(model, **options)


def generation_context(trainer: Trainer | None) -> ExitStack:
    """What ``generate`` inside training needs: the precision plugin's forward context (the autocast training
    runs under, so ``bf16-mixed`` layers get matching inputs), and under FSDP1 the root's parameters gathered
    (embeddings, final norm, head: in no wrapped layer, and ``generate`` bypasses the root's ``forward``; the
    wrapped layers gather theirs as they run)."""
    stack = ExitStack()
    if trainer is None:
        return stack
    stack.enter_context(trainer.precision_plugin.forward_context())
    if isinstance(trainer.strategy, FSDPStrategy):
        from torch.distributed.fsdp import FullyShardedDataParallel

        stack.enter_context(FullyShardedDataParallel.summon_full_params(trainer.strategy.model, recurse=False,
                                                                        writeback=False))
    return stack


def generate_across_ranks(model: PreTrainedModel, prompts: Sequence[Sequence[int]], *, synced: bool,
                          **kwargs) -> list[Completion]:
    """``generate`` with the prompts split over the ranks; every rank must pass the same ``prompts`` and gets all
    the completions, in order. ``synced``: the model is sharded, so every rank runs the same number of ``generate``
    calls (slices padded to equal length) and decoding steps (``synced_gpus``). One process: plain ``generate``."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1 or not prompts:
        return generate(model, prompts, **kwargs)
    return across_ranks(prompts, lambda mine: generate(model, mine, synced_gpus=synced, **kwargs), pad=synced)


def across_ranks(prompts: Sequence[Sequence[int]], complete: Callable[[list[Sequence[int]]], list[Completion]],
                 pad: bool = False) -> list[Completion]:
    """``complete`` run by every rank on its share of ``prompts`` (rank r takes r, r + world, ...), the results
    all-gathered in order. ``pad``: equal shares (padded with the first prompt, whose completions are dropped),
    for engines whose steps are collectives. One process: ``complete(prompts)``."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1 or not prompts:
        return complete(list(prompts))
    rank, world = dist.get_rank(), dist.get_world_size()
    mine = [prompts[i] for i in range(rank, len(prompts), world)]
    if pad:  # equal slices give equal batch counts
        mine += [prompts[0]] * (math.ceil(len(prompts) / world) - len(mine))
    completions = complete(mine)[: len(range(rank, len(prompts), world))]
    gathered: list[list[Completion] | None] = [None] * world
    dist.all_gather_object(gathered, completions)
    results: list[Completion | None] = [None] * len(prompts)
    for r, part in enumerate(gathered):
        results[r::world] = part
    return results  # type: ignore[return-value]


def generate_in_fit(module: LightningModule, prompts: Sequence[Sequence[int]], temperature: float,
                    model: PreTrainedModel | None = None, progress: str | None = None) -> list[Completion]:
    """Rollouts' and evaluations' sampling for the TriPosT and PIT modules: ``model`` (default: the trained policy,
    ``module.model``) completes token-id prompts with the module's ``max_new_tokens`` and
    ``generation_batch_size``, split over the ranks (every rank passes the same prompts and gets every
    completion), under the trainer's precision and, for the sharded policy, in lock-step; with
    ``module.generation.engine == "vllm"`` the policy samples through the module's vLLM engine (started at the first
    call, its weights reloaded whenever the policy's changed). Generated tokens (EOS included) are added to
    ``module.generated_tokens``."""
    tok, trainer = module.tokenizer, module._trainer
    policy = model is None  # another model (PIT's original policy) is a plain copy on every rank: no lock-step
    check_weights_before_sampling(module, module.model if policy else model, "the policy" if policy else "this model")
    if policy and module.generation.engine == "vllm":
        from modules.vllm_engine import start_engine

        if module.vllm_engine is None:
            module.vllm_engine = start_engine(module)
        module.vllm_engine.sync_weights(module, lambda: policy_weights(module), check=not is_sharded(trainer))
        module.vllm_engine.check_prompts(prompts)
        completions = across_ranks(prompts, lambda mine: module.vllm_engine.generate(
            mine, eos_token_id=tok.eos_token_id, max_new_tokens=module.hparams.max_new_tokens, temperature=temperature))
    else:
        with generation_context(trainer):
            completions = generate_across_ranks(
                module.model if policy else model, prompts, synced=policy and is_sharded(trainer),
                eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, temperature=temperature,
                max_new_tokens=module.hparams.max_new_tokens, batch_size=module.hparams.generation_batch_size,
                progress=progress)
    module.generated_tokens += sum(len(c.tokens) + c.stopped for c in completions)
    return completions


def policy_weights(module: LightningModule) -> dict[str, torch.Tensor]:
    """``module.model``'s full Hugging Face state dict on this rank, LoRA adapters merged, for a vLLM engine per
    rank: under FSDP gathered from every rank's shards onto each (a collective)."""
    model = module.model
    state = full_state_dict(module._trainer, model, every_rank=True)
    return merged_state_dict(model, state) if unwrapped(model) is not model else state


def full_state_dict(trainer: Trainer | None, model: torch.nn.Module, prefix: str = "model.",
                    every_rank: bool = False) -> dict[str, torch.Tensor]:
    """``model``'s unsharded weights. Under FSDP a collective (call it on every rank); rank 0 gets them on CPU, or
    with ``every_rank`` every rank on its device. ``prefix``: ``model``'s attribute name in the LightningModule
    (FSDP1 shards the LightningModule as a whole)."""
    if not is_sharded(trainer):
        return model.state_dict()
    state = gathered_state_dict(trainer.strategy.model, every_rank=every_rank)
    return {name[len(prefix):]: tensor for name, tensor in state.items() if name.startswith(prefix)}


def gathered_state_dict(root: torch.nn.Module, every_rank: bool = False) -> dict[str, torch.Tensor]:
    """The full state dict of a module sharded by FSDP1 or FSDP2 (names without FSDP's wrappers): on rank 0's CPU,
    or with ``every_rank`` on every rank's device (a vLLM engine per rank needs it whole)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(root, options=StateDictOptions(full_state_dict=True, cpu_offload=not every_rank))
