"""PIT's policy M_PIT(x, y_ref) -> y (reference pit.md §3): SFT, then PPO against the gap reward, with a curriculum.

Stage ``sft``: next-token loss on the response of the DataModule's examples: ``T(x, y_l) -> y_w`` (PIT's SFT), or
``x -> y_w`` with the DataModule's ``stage: policy_sft`` (the plain "original policy" whose answers round 2
improves).

Stage ``rl``: one epoch = one PPO iteration. The rollout callback (``callbacks.rollouts.OnlineRollouts``) samples
responses to the RL fold's prompts ``T(x, y_ref)`` before the first epoch and after every epoch (at its
``temperature``, recorded in the buffer), the judge (the gap reward model) scores them, and the buffer is written as
an interaction-log shard; the next epoch optimises on it. At the epoch's start every buffer row is scored once (the
whole buffer on every rank) by the current policy (old log-probs, values) and the frozen SFT policy (reference
log-probs), all of ``softmax(logits / T)`` at the rollout temperature T, the distribution that sampled. Advantages
(``advantage``):

* ``gae`` (PPO): rewards are KL-shaped per token (``kl_coef``) with the gap reward at the last token; advantages
  come from GAE and are whitened over the buffer. Critic: a linear value head on the policy's last hidden state,
  trained with a clipped value loss.
* ``rloo`` / ``grpo`` (critic-free, the advantages of TRL's ``RLOOTrainer`` / ``GRPOTrainer``; unlike TRL's GRPO,
  whose KL is a loss term, the KL penalty here is in the reward, so GRPO's division by the group's std scales it
  too and ``kl_coef`` means a different strength for each estimator): each prompt is sampled
  ``samples_per_prompt`` = k times; a response's sequence reward is its gap reward minus ``kl_coef`` times its
  summed per-token KL (the same penalty); its advantage compares it with its prompt's other samples
  (``modules.ppo.group_advantages``) and is broadcast over its tokens. No value head, no value loss.

Then ``ppo_epochs`` passes of clipped-surrogate minibatch steps, the minibatches rebuilt every pass.

Curriculum: epochs ``< round1_epochs`` use the dataset's references (round 1, easy); later epochs use references
sampled once from ``original_policy`` (round 2, hard), saved as ``references_round2.jsonl`` next to the buffers.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Literal

import torch
from lightning.pytorch import LightningModule
from transformers import AutoModelForCausalLM, LlamaForCausalLM, PreTrainedModel

from datamodules.interaction_log import Episode, Turn, read_shard, write_shard
from datamodules.pit import pair_of, pit_prompt, policy_prompt
from feedback.base import Judge
from modules.common import TinyLlama, export_at_fit_end, tiny_llama_config, warmup_cosine_schedule
from modules.distributed import generate_in_fit, generation_context, shard_fsdp2
from modules.finite import check_losses, check_weights_before_saving
from modules.generation import Completion, Generation
from modules.ppo import (
    entropy,
    gae,
    group_advantages,
    masked_mean,
    policy_loss,
    sequence_rewards,
    shaped_rewards,
    token_logprobs,
    value_loss,
    whiten,
)
from modules.pretrained import Dtype, LoRA, add_lora, load_pretrained
from modules.tripost import weighted_lm_loss


class PITPolicy(LightningModule):
    """The PIT policy (SFT or RL stage; see the module docstring).

    Args:
        stage: ``sft`` or ``rl``.
        model: a Hugging Face causal LM (hub name or folder; the RL stage: the SFT stage's export); None builds
            ``tiny``.
        tiny: dimensions of the from-scratch model.
        dtype, attn_implementation, model_kwargs: ``from_pretrained`` options for ``model`` and
            ``original_policy`` (see ``modules.tripost.TriPosTModule``).
        lora: train LoRA adapters (PEFT) instead of every weight (the value head trains whole). In RL the frozen KL
            reference is then the same model with its adapters disabled, not a second copy.
        lr: peak learning rate (warm-up then cosine to 10%; constant in RL).
        weight_decay: AdamW weight decay.
        kl_coef: β, the per-token KL penalty to the frozen SFT policy (gae: in the shaped per-token rewards;
            rloo/grpo: summed over the response and subtracted from its gap reward).
        advantage: ``gae`` (PPO with a value head), ``rloo`` (leave-one-out baseline: ``r_i - mean_{j≠i} r_j``) or
            ``grpo`` (``(r_i - mean r) / (std r + 1e-4)``, sample std) over the ``samples_per_prompt`` samples of
            each prompt; the critic-free two build no value head and ignore ``value_clip``, ``vf_coef``,
            ``gamma``, ``lam``. All three keep PPO's clipped surrogate.
        samples_per_prompt: k, responses sampled per RL prompt and rollout (rloo/grpo: at least 2). The buffer
            then holds ``num_rl_prompts * k`` responses: the PPO (gae) run with as many samples uses
            ``num_rl_prompts * k`` prompts and k = 1.
        clip: PPO ratio clip.
        value_clip: clip of the value update (gae).
        vf_coef: weight of the value loss (gae).
        gamma, lam: GAE discount and λ (gae).
        round1_epochs: RL epochs with dataset references before switching to round 2.
        original_policy: path of the policy whose samples are round 2's references (needed when
            ``max_epochs > round1_epochs``).
        max_new_tokens: generated tokens per response at most, for every generation of this module: rollouts,
            round-2 references and evaluation (``improve``). Keep it equal across the runs you compare (the SFT
            stage's evaluation is the "SFT only" arm).
        temperature: sampling temperature of the round-2 references only (the original policy's answers). Rollouts
            sample at the rollout callback's ``--trainer.callbacks.temperature``, which the buffer records and the
            PPO/RLOO/GRPO log-probs use; evaluation at its own callback's.
        generation_batch_size: prompts per ``generate`` call (the ``hf`` engine; vLLM batches on its own).
        generation: the engine that samples the policy's rollouts and evaluations (``hf``: transformers'
            ``generate``, or ``vllm``) and its settings (``modules.generation.Generation``), e.g.
            ``--model.init_args.generation.engine=vllm``.
        gradient_checkpointing: recompute activations in the backward pass (Hugging Face's; under FSDP1 the
            strategy's ``activation_checkpointing_policy`` does the same per wrapped layer).
        cpu_offload: under FSDP2 (``ModelParallelStrategy``) keep the sharded parameters, gradients and optimiser
            state in CPU memory (under FSDP1 use ``--trainer.strategy.cpu_offload=true``). The frozen reference of
            the KL penalty is not sharded: every rank holds a copy.
        export_dir: where ``on_fit_end`` saves model and tokenizer; default ``{trainer.log_dir}/hf_model``.
    """

    def __init__(self, stage: Literal["sft", "rl"] = "sft", model: str | None = None, tiny: TinyLlama | None = None,
                 dtype: Dtype = "float32", attn_implementation: str | None = None, model_kwargs: dict | None = None,
                 lora: LoRA | None = None, lr: float = 3e-3, weight_decay: float = 0.0, kl_coef: float = 0.05,
                 clip: float = 0.2, value_clip: float = 0.2, vf_coef: float = 0.1, gamma: float = 1.0,
                 lam: float = 0.95, advantage: Literal["gae", "rloo", "grpo"] = "gae", samples_per_prompt: int = 1,
                 round1_epochs: int = 2, original_policy: str | None = None,
                 max_new_tokens: int = 48, temperature: float = 1.0, generation_batch_size: int = 64,
                 generation: Generation | None = None,
                 gradient_checkpointing: bool = False, cpu_offload: bool = False,
                 export_dir: str | None = None) -> None:
        super().__init__()
        if advantage not in ("gae", "rloo", "grpo"):
            raise ValueError(f"--model.init_args.advantage={advantage!r}: gae, rloo or grpo")
        if samples_per_prompt < 1:
            raise ValueError(f"--model.init_args.samples_per_prompt={samples_per_prompt}: sample at least 1")
        if advantage != "gae" and samples_per_prompt < 2:
            raise ValueError(f"--model.init_args.advantage={advantage} compares the samples of each prompt: set "
                             f"--model.init_args.samples_per_prompt to 2 or more (got {samples_per_prompt})")
        self.save_hyperparameters()
        self.tiny = tiny or TinyLlama()
        self.lora = lora  # the typed object (LightningCLI turns hparams into plain dicts)
        self.generation = generation or Generation()
        self.vllm_engine = None  # with generation.engine=vllm: started at the first generation
        self.model: PreTrainedModel | None = None
        self.value_head: torch.nn.Linear | None = None
        self._frozen: dict[str, PreTrainedModel] = {}  # not a submodule: not trained, not in checkpoints
        self._buffer: dict[int, dict[str, torch.Tensor]] = {}  # per buffer row: its epoch-start scoring
        self._epoch_start, self.optimisation_s = 0.0, 0.0
        self._no_change: dict[tuple[str, str], float] = {}  # judge scores of unchanged references, per (x, y_ref)
        self.generated_tokens = 0  # by ``respond`` over all ranks, for rollout throughput

    # ---- schedule (the rollout callback's protocol, shared with TriPosT) ------------------------------------------

    @property
    def rollouts_before_training(self) -> bool:
        return self.hparams.stage == "rl"

    def finished_stage(self, epoch: int) -> int | None:
        """Every RL epoch ends a stage: its rollouts feed the next epoch (iteration ``epoch + 2``)."""
        return epoch + 1 if self.hparams.stage == "rl" else None

    @property
    def num_iterations(self) -> int:
        return self.trainer.max_epochs

    def round_of(self, iteration: int) -> int:
        """Curriculum round of the buffer ``iteration`` (trained in epoch ``iteration - 1``)."""
        return 1 if iteration - 1 < self.hparams.round1_epochs else 2

    # ---- models --------------------------------------------------------------------------------------------------

    @property
    def critic(self) -> bool:
        """PPO with a value head (``advantage: gae``); RLOO and GRPO have none."""
        return self.hparams.advantage == "gae"

    @property
    def tokenizer(self):
        return self.trainer.datamodule.tokenizer

    def configure_model(self) -> None:
        if self.model is not None:
            return
        tok = self.tokenizer
        if self.hparams.model is None:
            self.model = LlamaForCausalLM(tiny_llama_config(self.tiny, tok))
        else:
            self.model = self._load(self.hparams.model, "--model.init_args.model")
        if self.hparams.stage == "rl":
            if self.hparams.model is None:
                raise ValueError("the rl stage starts from the SFT policy: set --model.init_args.model to its export")
            if self.lora is not None and self.lora.dropout > 0:  # old and new log-probs would see different masks
                raise ValueError(f"--model.init_args.lora.dropout={self.lora.dropout}: PPO's ratios need the same "
                                 "forward for scoring and updates; set it to 0 in the rl stage")
            if self.lora is None:  # with LoRA the reference is the policy with its adapters disabled
                self._frozen["reference"] = self._load(self.hparams.model, "--model.init_args.model").eval().requires_grad_(False)
            if self.critic:
                self.value_head = torch.nn.Linear(self.model.config.hidden_size, 1)
                torch.nn.init.zeros_(self.value_head.weight)
                torch.nn.init.zeros_(self.value_head.bias)
        if self.lora is not None:
            self.model = add_lora(self.model, self.lora, "CAUSAL_LM", "--model.init_args.lora")
        if self.hparams.gradient_checkpointing:  # non-reentrant: frozen embeddings (LoRA) give inputs no grad
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        shard_fsdp2(self, [self.model] + ([self.value_head] if self.value_head is not None else []),
                    cpu_offload=self.hparams.cpu_offload)

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.hparams.stage == "rl":
            if self.trainer.reload_dataloaders_every_n_epochs != 1:
                raise ValueError("PPO trains on a new buffer every epoch: set --trainer.reload_dataloaders_every_n_epochs=1")
            if self.trainer.max_epochs > self.hparams.round1_epochs and self.hparams.original_policy is None:
                raise ValueError(f"epochs after round1_epochs={self.hparams.round1_epochs} are round 2, whose references "
                                 "come from the original policy: set --model.init_args.original_policy")

    def _load(self, path: str, flag: str) -> PreTrainedModel:
        return load_pretrained(AutoModelForCausalLM, path, flag=flag, dtype=self.hparams.dtype,
                               attn_implementation=self.hparams.attn_implementation,
                               model_kwargs=self.hparams.model_kwargs, device=self.trainer.strategy.root_device)

    def reference_logprobs(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Log-probs [B, T-1] of the frozen SFT policy of the KL penalty: the policy with its LoRA adapters disabled,
        or a copy reloaded from ``model`` (kept out of checkpoints)."""
        if self.lora is not None:
            with self.model.disable_adapter():
                return self._forward(self.model, batch, values=False)[1]
        return self._forward(self._frozen["reference"], batch, values=False)[1]

    def on_fit_start(self) -> None:
        if self._frozen:
            self._frozen["reference"].to(self.device)

    def teardown(self, stage: str) -> None:
        if self.vllm_engine is not None:  # its GPU memory goes back; a later generation starts a new one
            self.vllm_engine.close()
            self.vllm_engine = None

    def on_fit_end(self) -> None:
        export_at_fit_end(self.trainer, self.model, self.tokenizer, self.hparams.export_dir, "hf_model")

    # ---- generation ----------------------------------------------------------------------------------------------

    def sample(self, prompts: list[str], temperature: float, model: PreTrainedModel | None = None,
               progress: str | None = None) -> list[Completion]:
        """A completion (token ids, stopped) for each prompt, sampled from ``model`` (default: the policy). Under a
        distributed strategy every rank must call this with the same prompts: each generates a share and all get
        every answer."""
        tok = self.tokenizer
        return generate_in_fit(self, [tok.encode(p, add_special_tokens=True) for p in prompts], temperature, model,
                               progress)

    def respond(self, prompts: list[str], temperature: float, model: PreTrainedModel | None = None,
                progress: str | None = None) -> list[tuple[str, bool]]:
        """``(text, stopped)`` for each prompt (``sample``, decoded)."""
        return [(self.tokenizer.decode(c.tokens, skip_special_tokens=True), c.stopped)
                for c in self.sample(prompts, temperature, model, progress)]

    def improve(self, pairs: list[tuple[str, str]], temperature: float) -> list[str]:
        """One PIT step for each ``(x, y_ref)``: the improved response."""
        return [text.strip() for text, _ in self.respond([pit_prompt(x, y) for x, y in pairs], temperature)]

    def references(self, iteration: int, rollout_dir: Path, rl_fold: list[Episode]) -> list[tuple[str, str]]:
        """``(x, y_ref)`` of the RL prompts for buffer ``iteration``: dataset references in round 1, the original
        policy's samples in round 2 (sampled once and kept as a shard)."""
        pairs = [(x, l) for x, _, l in map(pair_of, rl_fold)]
        if self.round_of(iteration) == 1:
            return pairs
        path = rollout_dir / "references_round2.jsonl"
        strategy = self.trainer.strategy
        if not strategy.broadcast(path.exists()):  # every rank samples its share, rank 0 writes, all read
            original = self._load(self.hparams.original_policy, "--model.init_args.original_policy").to(self.device)
            samples = self.respond([policy_prompt(x) for x, _ in pairs], self.hparams.temperature, original, "round-2 refs")
            if self.trainer.is_global_zero:
                write_shard(path, [Episode(id=f"{e.id}/ref2", task=e.task, iteration=iteration, prompt=x,
                                           turns=(Turn("reference", text.strip(), "original_policy"),), outcome="correct")
                                   for e, (x, _), (text, _) in zip(rl_fold, pairs, samples)])
            strategy.barrier("round-2 references")
        return [(e.prompt, e.turns[0].text) for e in read_shard(path)]

    # ---- rollouts (called by callbacks.rollouts.OnlineRollouts) ---------------------------------------------------

    def rollout(self, datamodule, iteration: int, rollouts) -> tuple[list[Episode], list[tuple[str, str]], list]:
        """Improve the RL prompts' references (every rank: generation is split over the ranks and gathered)."""
        if not isinstance(rollouts.teacher, Judge):
            raise TypeError(f"PIT's rollouts are scored by a reward model, got {type(rollouts.teacher).__name__}: set "
                            "the OnlineRollouts teacher to feedback.reward_model.RewardModelJudge or feedback.llm_judge.LLMJudge")
        if rollouts.temperature <= 0:  # PPO's ratios and KL are log-probs of the distribution that sampled
            raise ValueError(f"--trainer.callbacks.temperature={rollouts.temperature}: RL rollouts must sample "
                             "(temperature > 0); greedy decoding has no log-probs to train on")
        fold = datamodule.rl_fold()
        pairs = self.references(iteration, datamodule.rollout_dir, fold)
        k = self.hparams.samples_per_prompt  # a prompt's k samples are neighbours: feedback groups them by position
        start, tokens = time.perf_counter(), self.generated_tokens
        responses = self.sample([pit_prompt(x, y) for x, y in pairs for _ in range(k)], rollouts.temperature,
                                progress=f"rollouts it{iteration}")
        seconds = time.perf_counter() - start
        rollouts.record("time/generation_s", seconds)
        rollouts.record("rollouts/tokens_per_s", (self.generated_tokens - tokens) / seconds)  # all ranks together
        return fold, pairs, responses

    def feedback(self, datamodule, iteration: int, samples, rollouts) -> list[Episode]:
        """Score each improvement with the judge (gap reward) and, where the task has one, the exact score; the
        episodes are the next epoch's PPO buffer (rank 0 only). The k samples of one prompt share ``question_id``
        (the RL fold episode's id, their group) and are told apart by ``/s{j}`` in their ids; every episode
        records the rollout ``temperature``."""
        judge, (fold, pairs, completions) = rollouts.teacher, samples
        tok, k = self.tokenizer, self.hparams.samples_per_prompt
        fold, pairs = [e for e in fold for _ in range(k)], [p for p in pairs for _ in range(k)]  # as rollout sampled
        # the text exactly as sampled (a leading space kept), and the ids themselves for PPO: nothing re-tokenised
        texts = [tok.decode(c.tokens, skip_special_tokens=True) for c in completions]
        start = time.perf_counter()
        gaps = judge.score([(x, y_ref, y) for (x, y_ref), y in zip(pairs, texts)])
        no_change = self._no_change_rewards(judge, pairs)
        rollouts.record("time/scoring_s", time.perf_counter() - start)
        by = "dataset" if self.round_of(iteration) == 1 else "original_policy"
        episodes = []
        for i, (e, (x, y_ref), y, completion, gap, base) in enumerate(zip(fold, pairs, texts, completions, gaps,
                                                                          no_change)):
            scores = {"gap_reward": gap, "reference_gap": base, "stopped": float(completion.stopped),
                      "temperature": float(rollouts.temperature)}
            sampled = tuple(completion.tokens) + ((tok.eos_token_id,) if completion.stopped else ())
            quality = [datamodule.preferences.score(x, y_ref), datamodule.preferences.score(x, y.strip())]
            if quality[0] is not None:
                scores["quality"] = quality
            sample = f"/s{i % k}" if k > 1 else ""
            episodes.append(Episode(id=f"{e.id}/it{iteration}{sample}", task=e.task, iteration=iteration, prompt=x,
                                    question_id=e.id,
                                    turns=(Turn("reference", y_ref, by), Turn("response", y, "policy", sampled)),
                                    outcome="improved" if gap > base else "failed", scores=scores))
        self._log_rollouts(episodes, iteration, rollouts.record)
        return episodes

    def _no_change_rewards(self, judge: Judge, pairs: list[tuple[str, str]]) -> list[float]:
        """R(x, y_ref, y_ref), the "no improvement" level of each reference. References stay the same for a whole
        round and the judge is frozen, so each is scored once, not every epoch."""
        new = list(dict.fromkeys(p for p in pairs if p not in self._no_change))
        self._no_change.update(zip(new, judge.score([(x, y_ref, y_ref) for x, y_ref in new])))
        return [self._no_change[p] for p in pairs]

    def _log_rollouts(self, episodes: list[Episode], iteration: int, record) -> None:
        mean = lambda xs: float(sum(xs) / max(1, len(xs)))  # noqa: E731
        record("pit/round", float(self.round_of(iteration)))
        record("pit/gap_reward_rollouts", mean([e.scores["gap_reward"] for e in episodes]))
        record("pit/gap_reward_references", mean([e.scores["reference_gap"] for e in episodes]))
        record("pit/response_length", mean([len(e.turns[1].text.split()) for e in episodes]))
        scored = [e.scores["quality"] for e in episodes if "quality" in e.scores]
        if scored:
            record("pit/exact_score_references", mean([q[0] for q in scored]))
            record("pit/exact_score_rollouts", mean([q[1] for q in scored]))
        k = self.hparams.samples_per_prompt
        if k > 1:  # groups whose samples all score the same give RLOO/GRPO nothing to learn from
            gaps = [e.scores["gap_reward"] for e in episodes]
            spread = [statistics.pstdev(gaps[i : i + k]) for i in range(0, len(gaps), k)]
            record("pit/gap_reward_group_std", mean(spread))

    # ---- training ------------------------------------------------------------------------------------------------

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        if self.hparams.stage == "sft":
            logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            loss = weighted_lm_loss(logits, batch["input_ids"], batch["loss_weights"])
            check_losses(self, self.stage_name, batch_idx, loss=loss)
            self.log("sft/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(batch["input_ids"]))
            return loss
        return self._ppo_step(batch, batch_idx)

    @property
    def stage_name(self) -> str:
        if self.hparams.stage == "sft":
            return "PIT SFT"
        iteration = self.current_epoch + 1  # epoch e trains on buffer e + 1
        return f"PIT RL epoch {self.current_epoch} (buffer {iteration}, round {self.round_of(iteration)})"

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        check_weights_before_saving(self, self.stage_name)

    def _forward(self, model: PreTrainedModel, batch: dict[str, torch.Tensor], values: bool):
        """``(logits, log-probs [B, T-1], values [B, T-1] or None)``; the log-probs are of ``softmax(logits / T)``
        at the batch's rollout ``temperature`` (absent: 1), the distribution the buffer was sampled from."""
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=values)
        logprobs = token_logprobs(out.logits, batch["input_ids"], batch.get("temperature"))  # [B, T-1]
        # V(state before t+1); the head's own dtype (float32 over bfloat16 weights at 32-true precision)
        v = self.value_head(out.hidden_states[-1].to(self.value_head.weight.dtype)).squeeze(-1)[:, :-1] if values else None
        return out.logits, logprobs, v

    def on_train_epoch_start(self) -> None:
        """Score every buffer row once with the policy as it is now (old log-probs, values) and the frozen
        reference, then compute the advantages over the whole buffer (GAE whitened over it, or per prompt group).
        The minibatches change every pass, so the results are kept per row (``_buffer``), unpadded."""
        self._epoch_start = time.perf_counter()
        if self.hparams.stage != "rl":
            return
        self._buffer = {}
        stats: dict[str, list[torch.Tensor]] = {"reward": [], "kl": [], "length": []}
        loader = self.trainer.train_dataloader
        # every minibatch of every pass, the same list on every rank (a distributed sampler shares out the batches,
        # not the rows): each rank scores the whole buffer in the same order, so sharded forwards stay in lock-step
        # and group advantages and whitening see every row
        batches = loader.dataset  # the DataModule's list of minibatches (datamodules.pit.ppo_minibatches)
        # as training_step runs: under the precision's autocast (else bf16-mixed ratios start off 1) and, under
        # FSDP1, with the root's parameters gathered (these forwards bypass the wrapped root's forward)
        with torch.no_grad(), generation_context(self.trainer):
            for batch in batches:
                rows = batch["rows"].tolist()
                if all(r in self._buffer for r in rows):
                    continue  # later passes hold the same rows
                batch = {k: v.to(self.device) for k, v in batch.items()}
                _, old_logprobs, old_values = self._forward(self.model, batch, values=self.critic)
                ref_logprobs = self.reference_logprobs(batch)
                mask = batch["response_mask"]
                scored = {"old_logprobs": old_logprobs, "mask": mask}
                if self.critic:
                    rewards, kl = shaped_rewards(batch["score"], old_logprobs, ref_logprobs, mask, self.hparams.kl_coef)
                    advantages, returns = gae(rewards, old_values * mask, mask, self.hparams.gamma, self.hparams.lam)
                    scored |= {"old_values": old_values * mask, "advantages": advantages, "returns": returns}
                else:
                    sequence, kl = sequence_rewards(batch["score"], old_logprobs, ref_logprobs, mask,
                                                    self.hparams.kl_coef)
                    scored |= {"sequence_reward": sequence, "group": batch["group"]}
                lengths = batch["attention_mask"].sum(1) - 1  # right padding: a row's positions are its first n
                for i, row in enumerate(rows):
                    if row not in self._buffer:
                        self._buffer[row] = {k: v[i, : lengths[i]] if v.dim() == 2 else v[i] for k, v in scored.items()}
                stats["reward"].append(batch["score"])
                stats["kl"].append(kl.sum(1))
                stats["length"].append(mask.sum(1))
        self._buffer = dict(sorted(self._buffer.items()))
        rows = list(self._buffer.values())
        if self.critic:  # whitened over the whole buffer, not per minibatch
            whitened = whiten(torch.cat([r["advantages"] for r in rows]), torch.cat([r["mask"] for r in rows]))
            for r, part in zip(rows, whitened.split([len(r["mask"]) for r in rows])):
                r["advantages"] = part
        else:
            sequence = torch.stack([r["sequence_reward"] for r in rows])
            advantages = group_advantages(sequence, torch.stack([r["group"] for r in rows]), self.hparams.advantage)
            for r, advantage in zip(rows, advantages):
                r["advantages"] = advantage * r["mask"]  # the response's one advantage on each of its tokens
            self.log("ppo/sequence_reward", sequence.mean(), on_step=False, on_epoch=True)
        for name, values in stats.items():
            self.log(f"ppo/{name}", torch.cat(values).float().mean(), on_step=False, on_epoch=True)

    def _cached(self, batch: dict[str, torch.Tensor], key: str) -> torch.Tensor:
        """``key`` of the minibatch's rows from the epoch-start scoring, right-padded with 0 to [B, T-1]."""
        rows = [self._buffer[row][key] for row in batch["rows"].tolist()]
        out = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True).float()  # one copy, not one per row
        return torch.nn.functional.pad(out, (0, batch["response_mask"].shape[1] - out.shape[1]))

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        self.optimisation_s = time.perf_counter() - self._epoch_start  # the epoch's scoring + updates so far

    def on_train_epoch_end(self) -> None:  # runs after the callbacks' (rollouts): optimisation_s excludes them
        self.log("time/optimisation_s", self.optimisation_s, rank_zero_only=True)

    def _ppo_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        mask = batch["response_mask"]
        old_logprobs = self._cached(batch, "old_logprobs")
        logits, logprobs, values = self._forward(self.model, batch, values=self.critic)
        pg_loss, clip_fraction = policy_loss(logprobs, old_logprobs, self._cached(batch, "advantages"), mask,
                                             self.hparams.clip)
        n = len(batch["input_ids"])
        if self.critic:
            vf_loss = value_loss(values, self._cached(batch, "old_values"), self._cached(batch, "returns"), mask,
                                 self.hparams.value_clip)
            loss = pg_loss + self.hparams.vf_coef * vf_loss
            check_losses(self, self.stage_name, batch_idx, policy_loss=pg_loss, value_loss=vf_loss)
            self.log("ppo/value_loss", vf_loss, on_step=False, on_epoch=True, batch_size=n)
        else:
            loss = pg_loss
            check_losses(self, self.stage_name, batch_idx, policy_loss=pg_loss)
        self.log("ppo/policy_loss", pg_loss, on_step=True, on_epoch=True, batch_size=n, prog_bar=True)
        self.log("ppo/clip_fraction", clip_fraction, on_step=False, on_epoch=True, batch_size=n)
        self.log("ppo/entropy", masked_mean(entropy(logits.detach(), batch.get("temperature")), mask), on_step=False,
                 on_epoch=True, batch_size=n)
        self.log("ppo/approx_kl_old", masked_mean(old_logprobs - logprobs.detach(), mask), on_step=False,
                 on_epoch=True, batch_size=n)
        return loss

    def configure_optimizers(self):
        params = [p for p in self.model.parameters() if p.requires_grad]  # LoRA: the adapters only
        params += list(self.value_head.parameters()) if self.value_head else []
        optimizer = torch.optim.AdamW(params, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        if self.hparams.stage == "rl":
            return optimizer
        return warmup_cosine_schedule(optimizer, self.trainer.estimated_stepping_batches)
