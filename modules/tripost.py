"""TriPosT: teach a small model to self-improve from interactive demonstrations (Yu et al., NAACL 2024).

Read top to bottom: the schedule (warm-up "ft rationale" stage, then TriPosT iterations), the model, the
weighted SFT loss, the optimiser, and the test-time self-improvement loop that rollouts and evaluation share.
The rollout callback (``callbacks/rollouts.py``) collects and edits trajectories at each iteration boundary;
``datamodules/tripost.py`` turns them into weighted training examples.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from transformers import AutoModelForCausalLM, LlamaForCausalLM, PreTrainedModel

from datamodules.examples import updated_header
from datamodules.interaction_log import Episode
from feedback.base import Teacher
from feedback.editing import edit_traces
from modules.common import TinyLlama, export_at_fit_end, tiny_llama_config
from modules.distributed import generate_in_fit, shard_fsdp2
from modules.finite import check_losses, check_weights_before_saving
from modules.generation import Completion, Generation
from modules.pretrained import Dtype, LoRA, add_lora, load_pretrained
from tasks.base import CORRECT_MARKER, FEEDBACK_HEADER, UPDATED_HEADER, Question, Task


@dataclass
class Trace:
    """What the policy wrote for one question: attempts and, after each, its own feedback (None if it wrote none).

    ``continuations`` and ``forced_updates`` count the extra ``generate`` calls ``self_improve`` made for it (an
    output cut off at ``max_new_tokens`` continued; an update asked for with the ``Updated Answer:`` header);
    ``cut_off``: an output was still cut off after ``max_continuations`` (what it cut short is kept as written,
    except an update, which is dropped).
    """

    attempts: list[str] = field(default_factory=list)
    feedbacks: list[str | None] = field(default_factory=list)
    continuations: int = 0
    forced_updates: int = 0
    cut_off: bool = False


class TriPosTModule(LightningModule):
    """TriPosT's policy and its weighted SFT replay.

    Schedule: ``warmup_epochs`` of SFT on gold rationales (stage 0, "ft rationale"), then TriPosT iterations of
    ``epochs_per_iteration`` epochs each, so ``trainer.max_epochs = warmup_epochs + T * epochs_per_iteration``
    runs T iterations. Each iteration continues from the previous weights (not re-initialised) and trains only on
    the data collected at its start, as the reference code does. The learning rate warms up and decays within
    every stage (reference: WarmupDecayLR per iteration).

    Loss: next-token cross-entropy with per-token weights from the DataModule (1 on the attempt, ``w`` on feedback
    and improvement, 0 on padding and, by default, the question), normalised by the number of learned tokens,
    ``sum(CE * w) / count(w > 0)`` as in the reference code: ``w`` raises the self-improvement section's share of
    the gradient *and* the effective step size.

    Speed/memory: ``gradient_checkpointing`` trades compute for activation memory (generation turns it off, as the
    KV cache needs); the model is built in ``configure_model`` so sharded strategies never hold it whole.
    Resume: weights, optimiser, epoch and the DataModule's current iteration come from the checkpoint; the
    interaction logs on disk are reused, never regenerated.

    Args:
        model: a Hugging Face causal LM (hub name or folder); its tokenizer comes from the same place unless
            ``--data.init_args.tokenizer`` says otherwise. None builds ``tiny`` from scratch with the DataModule's
            tokenizer.
        tiny: dimensions of the from-scratch model.
        dtype: the pretrained weights' dtype (``auto``: as saved); train bfloat16 weights with
            ``--trainer.precision=bf16-mixed`` (LoRA adapters stay float32) or ``bf16-true``.
        attn_implementation: passed to ``from_pretrained`` (``sdpa``, ``eager``, ``flash_attention_2``, ...).
        model_kwargs: further ``from_pretrained`` keywords (e.g. ``{revision: main}``).
        lora: train LoRA adapters (PEFT) instead of every weight; the export merges them and writes the adapter
            alone to ``{export_dir}/adapter``.
        warmup_epochs: epochs of the ft-rationale stage before the first rollouts; 0 starts the iterations at once
            (give ``model`` an ft-rationale model, as the paper starts TriPosT from its ft-rationale checkpoint).
        epochs_per_iteration: epochs of training on each iteration's interaction log.
        lr: peak learning rate of the warm-up stage.
        iteration_lr: peak learning rate inside TriPosT iterations (None: same as ``lr``).
        weight_decay: AdamW weight decay.
        warmup_ratio: fraction of each stage spent warming the learning rate up linearly.
        min_lr_ratio: the cosine decay ends at ``min_lr_ratio * peak`` at the end of each stage.
        max_rounds: test-time self-improvement rounds (attempt, feedback, update) at most.
        max_new_tokens: tokens generated per ``generate`` call at most.
        max_continuations: more ``generate`` calls each test-time round may make for a question (the reference's
            limit is 2: at most 3 calls, reference §6): one continues an output cut off at ``max_new_tokens`` (the
            prompt's and the generated ids fed back as they are), or asks for the update the model did not write
            after its error feedback and EOS (re-prompted with the training text up to the ``Updated Answer:``
            header). An output still cut off after them is kept as written and judged as is (an attempt cut
            mid-way has no final response), except an update, which is dropped. 0 turns both off.
        generation_batch_size: prompts per ``generate`` call (the ``hf`` engine; vLLM batches on its own).
        generation: the engine that samples the policy's rollouts and evaluations (``hf``: transformers'
            ``generate``, or ``vllm``) and its settings (``modules.generation.Generation``), e.g.
            ``--model.init_args.generation.engine=vllm``.
        gradient_checkpointing: recompute activations in the backward pass (Hugging Face's; under FSDP1 the
            strategy's ``activation_checkpointing_policy`` does the same per wrapped layer).
        cpu_offload: under FSDP2 (``ModelParallelStrategy``) keep the sharded parameters, gradients and optimiser
            state in CPU memory (under FSDP1 use ``--trainer.strategy.cpu_offload=true``).
        export_dir: where ``on_fit_end`` writes the trained model and tokenizer with ``save_pretrained``;
            default ``{trainer.log_dir}/hf_model``.
    """

    def __init__(
        self,
        model: str | None = None,
        tiny: TinyLlama | None = None,
        dtype: Dtype = "float32",
        attn_implementation: str | None = None,
        model_kwargs: dict | None = None,
        lora: LoRA | None = None,
        warmup_epochs: int = 4,
        epochs_per_iteration: int = 2,
        lr: float = 3e-3,
        iteration_lr: float | None = None,
        weight_decay: float = 0.01,
        warmup_ratio: float = 0.1,
        min_lr_ratio: float = 0.1,
        max_rounds: int = 3,
        max_new_tokens: int = 512,
        max_continuations: int = 2,
        generation_batch_size: int = 64,
        generation: Generation | None = None,
        gradient_checkpointing: bool = False,
        cpu_offload: bool = False,
        export_dir: str | None = None,
    ) -> None:
        super().__init__()
        if max_continuations < 0:
            raise ValueError(f"--model.init_args.max_continuations={max_continuations}: must be >= 0 (0: never "
                             "continue a cut-off output nor ask for a missing update)")
        self.save_hyperparameters()
        self.tiny = tiny or TinyLlama()
        self.lora = lora  # the typed object (LightningCLI turns hparams into plain dicts)
        self.generation = generation or Generation()
        self.vllm_engine = None  # with generation.engine=vllm: started at the first generation
        self.model: PreTrainedModel | None = None
        self.generated_tokens = 0  # by ``generate`` over all ranks, for rollout throughput

    # ---- schedule ----------------------------------------------------------------------------------------------

    def stage_of(self, epoch: int) -> tuple[int, int, int]:
        """``(stage, epoch within stage, epochs in stage)``; stage 0 is the warm-up, stage k the k-th iteration."""
        w, e = self.hparams.warmup_epochs, self.hparams.epochs_per_iteration
        if epoch < w:
            return 0, epoch, w
        return 1 + (epoch - w) // e, (epoch - w) % e, e

    def stage_name(self, epoch: int) -> str:
        """The stage as the tables name it: ``ft rationale`` (warm-up) or ``TriPosT iteration k``."""
        stage = self.stage_of(epoch)[0]
        return "ft rationale (warm-up)" if stage == 0 else f"TriPosT iteration {stage}"

    def peak_lr(self, epoch: int) -> tuple[str, float]:
        """The flag and value of the peak learning rate of ``epoch``'s stage."""
        if self.stage_of(epoch)[0] > 0 and self.hparams.iteration_lr is not None:
            return "--model.init_args.iteration_lr", self.hparams.iteration_lr
        return "--model.init_args.lr", self.hparams.lr

    def finished_stage(self, epoch: int) -> int | None:
        """The stage that ends with ``epoch`` (0 = warm-up), or None if training continues inside a stage."""
        stage, position, length = self.stage_of(epoch)
        return stage if position == length - 1 else None

    @property
    def num_iterations(self) -> int:
        return (self.trainer.max_epochs - self.hparams.warmup_epochs) // self.hparams.epochs_per_iteration

    def setup(self, stage: str) -> None:
        if stage != "fit":
            return
        w, e, max_epochs = self.hparams.warmup_epochs, self.hparams.epochs_per_iteration, self.trainer.max_epochs
        if w < 0 or e < 1:
            raise ValueError(f"need warmup_epochs >= 0 and epochs_per_iteration >= 1, got {w} and {e}")
        if max_epochs is None or max_epochs < w or (max_epochs - w) % e:
            raise ValueError(
                f"--trainer.max_epochs={max_epochs} must be warmup_epochs + T * epochs_per_iteration "
                f"(= {w} + T * {e}) to run T whole TriPosT iterations; e.g. --trainer.max_epochs={w + 2 * e}"
            )
        if self.trainer.reload_dataloaders_every_n_epochs != 1:
            raise ValueError(
                "TriPosT trains on new data after every rollout round: set --trainer.reload_dataloaders_every_n_epochs=1"
            )

    # ---- model -------------------------------------------------------------------------------------------------

    @property
    def tokenizer(self):
        return self.trainer.datamodule.tokenizer

    def configure_model(self) -> None:
        if self.model is not None:  # idempotent: Lightning may call it more than once
            return
        tokenizer = self.tokenizer
        if self.hparams.model is None:
            self.model = LlamaForCausalLM(tiny_llama_config(self.tiny, tokenizer, tie_word_embeddings=True))
        else:
            if self.trainer.datamodule.tokenizer_path is None:
                raise ValueError(
                    f"pretrained model {self.hparams.model!r} needs its own tokenizer: set "
                    f"--data.init_args.tokenizer={self.hparams.model}"
                )
            self.model = load_pretrained(AutoModelForCausalLM, self.hparams.model, flag="--model.init_args.model",
                                         dtype=self.hparams.dtype, attn_implementation=self.hparams.attn_implementation,
                                         model_kwargs=self.hparams.model_kwargs, device=self.trainer.strategy.root_device)
            if len(tokenizer) > self.model.get_input_embeddings().num_embeddings:
                self.model.resize_token_embeddings(len(tokenizer))
        if self.lora is not None:
            self.model = add_lora(self.model, self.lora, "CAUSAL_LM", "--model.init_args.lora")
        if self.hparams.gradient_checkpointing:  # non-reentrant: frozen embeddings (LoRA) give inputs no grad
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        shard_fsdp2(self, [self.model], cpu_offload=self.hparams.cpu_offload)

    def teardown(self, stage: str) -> None:
        if self.vllm_engine is not None:  # its GPU memory goes back; a later generation starts a new one
            self.vllm_engine.close()
            self.vllm_engine = None

    def on_fit_end(self) -> None:
        export_at_fit_end(self.trainer, self.model, self.tokenizer, self.hparams.export_dir, "hf_model")

    # ---- weighted SFT --------------------------------------------------------------------------------------------

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        loss = weighted_lm_loss(logits, batch["input_ids"], batch["loss_weights"])
        check_losses(self, self.stage_name(self.current_epoch), batch_idx, peak=self.peak_lr(self.current_epoch),
                     loss=loss)
        learned = (batch["loss_weights"] > 0).sum()
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(batch["input_ids"]))
        self.log("train/learned_tokens", learned.float(), on_step=False, on_epoch=True, reduce_fx="sum")
        self.log("train/stage", float(self.stage_of(self.current_epoch)[0]), on_step=False, on_epoch=True)
        return loss

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        check_weights_before_saving(self, self.stage_name(self.current_epoch), self.peak_lr(self.current_epoch))

    def configure_optimizers(self):
        optimizer = adamw(self.model, self.hparams.lr, self.hparams.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: self._lr_factor())
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _lr_factor(self) -> float:
        """Warm-up then cosine decay inside the current stage, for the batch trained next, from the trainer's
        position (so resume is exact). The scheduler steps after each batch, so after an epoch's last batch the
        next batch opens the next epoch, and perhaps a new stage with its own warm-up and peak."""
        if self._trainer is None:  # LambdaLR evaluates the factor once when it is built
            return 0.0
        epoch = self.trainer.current_epoch
        batches = self.trainer.num_training_batches  # inf or 0 before the epoch's dataloader exists
        step_in_epoch = self.trainer.fit_loop.epoch_loop.batch_progress.current.ready
        if 0 < batches < float("inf") and step_in_epoch >= batches:
            epoch, step_in_epoch = epoch + 1, 0
        stage, position, length = self.stage_of(epoch)
        fraction = step_in_epoch / batches if 0 < batches < float("inf") else 0.0
        progress = min((position + fraction) / length, 1.0)
        peak = self.hparams.lr if stage == 0 or self.hparams.iteration_lr is None else self.hparams.iteration_lr
        return peak / self.hparams.lr * stage_lr_factor(progress, self.hparams.warmup_ratio, self.hparams.min_lr_ratio)

    # ---- rollouts (called by callbacks.rollouts.OnlineRollouts) ---------------------------------------------------

    @property
    def rollouts_before_training(self) -> bool:
        """With no warm-up (``warmup_epochs=0``, e.g. starting from an ft-rationale checkpoint, the paper's M_0),
        iteration 1's rollouts come before the first epoch; otherwise they follow the warm-up."""
        return self.hparams.warmup_epochs == 0

    def rollout(self, datamodule, iteration: int, rollouts) -> tuple[list[Question], list[Trace], str]:
        """The policy's self-improvement traces on the training questions, and who wrote them (every rank;
        generation is split over the ranks and gathered, so every rank returns the same traces)."""
        if not isinstance(rollouts.teacher, Teacher):
            raise TypeError(f"TriPosT needs a teacher that writes feedback and improvements, got "
                            f"{type(rollouts.teacher).__name__}: set the OnlineRollouts teacher to e.g. "
                            "feedback.scripted.ScriptedTeacher")
        questions = rollouts.questions(datamodule, iteration)
        start, tokens = time.perf_counter(), self.generated_tokens
        traces = self.self_improve(datamodule.task, questions, rollouts.max_rounds, temperature=rollouts.temperature,
                                   progress=f"rollouts it{iteration}")
        seconds = time.perf_counter() - start
        rollouts.record("time/rollout_s", seconds)
        rollouts.record("rollouts/tokens_per_s", (self.generated_tokens - tokens) / seconds)  # all ranks together
        return questions, traces, "policy"

    def feedback(self, datamodule, iteration: int, samples: tuple[list[Question], list[Trace], str],
                 rollouts) -> list[Episode]:
        """TriPosT's interactive editing (reference §2.2): ``rollouts.teacher`` edits every trace into an episode
        (rank 0 only: an LLM teacher is asked once)."""
        task, (questions, traces, author) = datamodule.task, samples
        start = time.perf_counter()
        episodes = edit_traces(task, rollouts.teacher, questions, [(t.attempts, t.feedbacks) for t in traces],
                               iteration=iteration, prompts=[task.prompt(q) for q in questions],
                               max_updates=rollouts.max_updates, policy_name=author)
        rollouts.record("time/teacher_s", time.perf_counter() - start)
        return episodes

    # ---- test-time self-improvement (shared by evaluation and rollouts) -------------------------------------------

    def generate(self, prompts: list[list[int]], temperature: float, progress: str | None = None) -> list[Completion]:
        """Complete token-id prompts with the policy; under a distributed strategy every rank must call this with
        the same prompts (``modules.distributed.generate_in_fit``)."""
        return generate_in_fit(self, prompts, temperature, progress=progress)

    def self_improve(
        self, task: Task, questions: list[Question], max_rounds: int, temperature: float = 0.0, progress: str | None = None
    ) -> list[Trace]:
        """TriPosT's inference loop (reference §6): the model writes an attempt and its own feedback, and an updated
        answer after error feedback; the next round re-prompts with the question and the latest attempt only.
        Stops on the "correct" marker, when the model writes no feedback or no update, or after ``max_rounds``.

        Within a round, as the reference does, up to ``max_continuations`` more calls per question (see
        ``_round_outputs``): an output cut off at ``max_new_tokens`` is continued, and an output that stops after
        error feedback without an update is re-prompted with the ``Updated Answer:`` header. An output still cut
        off after them is kept as written (an attempt or feedback cut mid-way is judged as is), but an update cut
        short never becomes the latest attempt: the trace ends at the attempt before it."""
        tok = self.tokenizer
        prompts = [task.prompt(q) for q in questions]
        traces = [Trace() for _ in questions]
        inputs, active = [tok.encode(p, add_special_tokens=True) for p in prompts], list(range(len(questions)))
        for round_ in range(max_rounds):
            if not active:
                break
            outputs = self._round_outputs(prompts, traces, {i: inputs[i] for i in active}, temperature,
                                          f"{progress} round {round_ + 1}" if progress else None)
            still_active = []
            for i in active:
                text, cut = outputs[i]
                attempt, feedback, updated, _ = _parse_sections(text)
                trace = traces[i]
                if round_ == 0:
                    trace.attempts.append(attempt)
                trace.feedbacks.append(feedback)
                trace.cut_off |= cut
                # a cut-off output whose update was parsed was cut inside that update (else it would not be cut)
                if feedback is None or CORRECT_MARKER in feedback or not updated or cut:
                    continue
                trace.attempts.append(updated)
                # one text, as training tokenises an attempt after its prompt (datamodules.tokenizer.encode_sections)
                inputs[i] = tok.encode(prompts[i] + updated + "\n", add_special_tokens=True)
                still_active.append(i)
            active = still_active
        for trace in traces:  # the last update may have had no round left for its feedback
            trace.feedbacks += [None] * (len(trace.attempts) - len(trace.feedbacks))
        return traces

    def _round_outputs(self, prompts: list[str], traces: list[Trace], inputs: dict[int, list[int]],
                       temperature: float, progress: str | None) -> dict[int, tuple[str, bool]]:
        """One round of ``self_improve`` for the questions in ``inputs`` (index -> prompt ids): each one's output
        text (all that follows ``prompts[i]``, a forced re-prompt's part included) and whether it is still cut
        short after ``max_continuations`` more calls. Each call batches every question that needs it."""
        tok, cap = self.tokenizer, self.hparams.max_continuations
        context = dict(inputs)  # the ids each question's generated ids follow
        prefix = dict.fromkeys(inputs, "")  # output text before the generated ids: a forced re-prompt's, else none
        generated: dict[int, list[int]] = {i: [] for i in inputs}
        outputs, pending = {}, list(inputs)
        for call in range(cap + 1):
            if not pending:
                break
            completions = self.generate([context[i] + generated[i] for i in pending], temperature,
                                        progress=f"{progress} call {call + 1}" if progress and call else progress)
            still_pending = []
            for i, completion in zip(pending, completions):
                generated[i] = generated[i] + completion.tokens  # fed back as ids: nothing is re-tokenised
                text = prefix[i] + tok.decode(generated[i], skip_special_tokens=True)
                attempt, feedback, updated, finished = _parse_sections(text)
                correct = feedback is not None and CORRECT_MARKER in feedback
                finished = finished or correct  # nothing the loop uses is cut short: no need to go on
                if call < cap and not completion.stopped and not finished:
                    traces[i].continuations += 1
                    still_pending.append(i)
                elif call < cap and completion.stopped and feedback and not correct and not updated and not prefix[i]:
                    # the reference's manual re-prompt, laid out as training writes an improvement example
                    # (datamodules.examples.improvement_section); round 1's latest attempt is the one just written
                    latest = traces[i].attempts[-1] if traces[i].attempts else attempt
                    prefix[i] = f"{latest}\n{FEEDBACK_HEADER} {feedback}\n{updated_header(prompts[i])}\n"
                    context[i], generated[i] = tok.encode(prompts[i] + prefix[i], add_special_tokens=True), []
                    traces[i].forced_updates += 1
                    still_pending.append(i)
                else:
                    outputs[i] = (text, not completion.stopped and not finished)
            pending = still_pending
        return outputs


def adamw(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW over the trained parameters (LoRA: the adapters only), no decay on norms and biases."""
    trained = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW([{"params": [p for p in trained if p.ndim >= 2], "weight_decay": weight_decay},
                              {"params": [p for p in trained if p.ndim < 2], "weight_decay": 0.0}],
                             lr=lr, betas=(0.9, 0.95))


def stage_lr_factor(progress: float, warmup_ratio: float, min_lr_ratio: float) -> float:
    """The learning rate's fraction of its peak at ``progress`` (0..1) through a stage: linear warm-up over
    ``warmup_ratio`` (from 1e-3, never 0), then cosine decay to ``min_lr_ratio``."""
    warm = min(1.0, progress / warmup_ratio) if warmup_ratio > 0 else 1.0
    return max(warm, 1e-3) * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def weighted_lm_loss(logits: torch.Tensor, input_ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``sum_t CE_t * w_t / count(w_t > 0)`` over next-token predictions; ``w_t`` weighs predicting token t.

    logits: [B, T, V]; input_ids, weights: [B, T].
    """
    # Shift the targets left instead of slicing the logits: logits[:, :-1] would copy all of [B, T, V].
    targets = F.pad(input_ids[:, 1:], (0, 1), value=0)
    w = F.pad(weights[:, 1:], (0, 1), value=0.0)  # the last position predicts nothing
    flat = logits.flatten(0, 1)
    ce = F.cross_entropy(flat if flat.dtype == torch.float32 else flat.float(), targets.flatten(), reduction="none")
    return (ce.view_as(w) * w).sum() / (w > 0).sum().clamp(min=1)


def parse_generation(text: str) -> tuple[str, str | None, str | None]:
    """Split generated text into ``(attempt, feedback, updated attempt)``; missing parts are None.

    The attempt is everything before the first ``Feedback:`` line; the update is what follows an
    ``Updated Answer:`` header line right after the feedback, up to any further ``Feedback:``. Generation that
    drifts into a new ``Q:`` is cut there.
    """
    return _parse_sections(text)[:3]


def _parse_sections(text: str) -> tuple[str, str | None, str | None, bool]:
    """``parse_generation``'s parts, and whether the text goes on past them (into a new ``Q:``, or a further
    ``Feedback:`` after the update): then a generation cut off after them cut none of them short."""
    # whitespace around a line never matters: a tokenizer may decode "\n▁Feedback" as "\n Feedback"
    lines = [line.strip() for line in text.split("\n")]
    question = next((i for i, line in enumerate(lines) if line.startswith("Q:")), None)
    if question is not None:
        lines = lines[:question]
    header = next((i for i, line in enumerate(lines) if line.startswith(FEEDBACK_HEADER)), None)
    if header is None:
        return _join(lines), None, None, question is not None
    attempt, feedback = _join(lines[:header]), lines[header][len(FEEDBACK_HEADER) :].strip()
    rest = lines[header + 1 :]
    if not rest or not rest[0].startswith(UPDATED_HEADER.split(":")[0]):
        return attempt, feedback, None, question is not None
    end = next((i for i, line in enumerate(rest) if line.startswith(FEEDBACK_HEADER)), None)
    return attempt, feedback, _join(rest[1:end]) or None, question is not None or end is not None


def _join(lines: list[str]) -> str:
    return "\n".join(line for line in lines if line.strip())
