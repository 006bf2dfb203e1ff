"""The DataModule TriPosT trains from: gold rationales first, then each iteration's interaction-log shard.

Iteration 0 ("ft rationale") is plain SFT on the task's gold rationales. After iteration k's rollouts the rollout
callback writes ``iter_{k:03d}.jsonl`` and calls ``use_iteration(k)``; from the next epoch on (the Trainer must run
with ``reload_dataloaders_every_n_epochs=1``) the training set is that shard, turn-split and re-balanced
``r : 1 : 1`` with gold demos. Only the current iteration's data is used, as in the reference code. The current
iteration is part of the checkpoint, so a resumed run trains on the same data it was training on.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from datamodules.examples import (
    GOLD,
    IMPROVEMENT,
    NON_IMPROVEMENT,
    Example,
    count_kinds,
    gold_example,
    rebalance,
    split_turns,
)
from datamodules.interaction_log import read_shard, shard_path
from datamodules.tokenizer import encode_sections, load_tokenizer, task_tokenizer
from tasks.base import Question, Task, correct_feedback


class TriPosTDataModule(LightningDataModule):
    """Gold rationales and interaction logs of one task, tokenised with per-token loss weights.

    Args:
        task: the task (``class_path: tasks.MultistepArithmetic`` ...); its train questions are rolled out and its
            test questions evaluated.
        log_dir: where interaction-log shards and the trained tokenizer live; default
            ``{trainer.log_dir}/interaction_logs`` (the logger's folder). Bring your own logs by pointing it at a folder of
            ``iter_XXX.jsonl`` shards.
        tokenizer: a Hugging Face tokenizer path (for a pretrained model: the same path as the model). None trains
            a sentencepiece BPE tokenizer on the task text (the tiny offline default).
        vocab_size: vocabulary size of the trained tokenizer (at most; a small corpus may support fewer pieces).
        split_digits: the trained tokenizer spells numbers digit by digit (else BPE merges digits and symbols).
        batch_size: training examples per step (per device).
        improve_data_ratio: TriPosT's r in improvement : non-improvement : gold = r : 1 : 1; r <= 0 turns
            re-balancing off (all non-improvement examples kept).
        self_improve_weight: loss weight w on the feedback and improvement tokens (TriPosT: 1.5).
        wrong_attempt_weight: loss weight on attempts the teacher found wrong (the first attempt of improvement and
            feedback-only examples). 1 learns them like any answer, as the reference code does (its loss mask is all
            ones); 0 learns only what follows them, like the reference's ``mask_before_att_start_text``. A small
            model learns the wrong arithmetic it is shown, so masking is worth trying when TriPosT lowers accuracy.
        learn_prompt: also learn the question tokens. The reference code does (its loss mask is all ones); off by
            default because the question is random input a model cannot predict.
        max_length: examples longer than this many tokens are dropped (counted and reported).
        min_examples: an iteration trains only if its shard gives at least this many examples of its own
            (improvement and non-improvement, before re-balancing with gold); fewer stop the run with the counts
            and what to change. The reference collects until a minimum (MA 60, WS 60, DU 40, LD 20 examples).
            0 turns the check off: an empty shard then trains on gold demos alone, and the evaluation table marks
            that iteration's row "gold only".
        seed: seeds re-balancing and batch order; shard k is re-balanced with ``seed + k``.
    """

    def __init__(
        self,
        task: Task,
        log_dir: str | None = None,
        tokenizer: str | None = None,
        vocab_size: int = 1000,
        split_digits: bool = True,
        batch_size: int = 16,
        improve_data_ratio: float = 1.5,
        self_improve_weight: float = 1.5,
        wrong_attempt_weight: float = 1.0,
        learn_prompt: bool = False,
        max_length: int = 1024,
        min_examples: int = 20,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if min_examples < 0:
            raise ValueError(f"--data.init_args.min_examples={min_examples}: must be >= 0 (0 turns the check off)")
        for name, weight in (("self_improve_weight", self_improve_weight), ("wrong_attempt_weight", wrong_attempt_weight)):
            if weight < 0:
                raise ValueError(f"--data.init_args.{name}={weight}: a loss weight must be >= 0 (0 masks those tokens)")
        self.task = task
        self._log_dir = log_dir
        self.tokenizer_path = tokenizer
        self.vocab_size = vocab_size
        self.split_digits = split_digits
        self.batch_size = batch_size
        self.improve_data_ratio = improve_data_ratio
        self.self_improve_weight = self_improve_weight
        self.wrong_attempt_weight = wrong_attempt_weight
        self.learn_prompt = learn_prompt
        self.max_length = max_length
        self.min_examples = min_examples
        self.seed = seed
        self._encoded: dict[Example, dict[str, torch.Tensor]] = {}  # encode() of the examples in use
        self.iteration = 0
        self.tokenizer: PreTrainedTokenizerBase | None = None
        self.last_counts: dict[str, int] = {}

    # ---- setup -------------------------------------------------------------------------------------------------

    @property
    def log_dir(self) -> Path:
        if self._log_dir is None:  # resolved once: trainer.log_dir broadcasts, so not from rank 0 alone later
            root = self.trainer.log_dir if self.trainer is not None else None
            self._log_dir = str(Path(root or ".") / "interaction_logs")
        return Path(self._log_dir)

    @property
    def rollout_dir(self) -> Path:
        """Where the rollout callback writes iteration shards: the log folder itself."""
        return self.log_dir

    def setup(self, stage: str) -> None:
        self.log_dir  # resolve the folder on every rank now (see log_dir)
        if self.tokenizer is None:
            self.tokenizer = self._build_tokenizer()

    def _build_tokenizer(self) -> PreTrainedTokenizerBase:
        if self.tokenizer_path is not None:
            return load_tokenizer(self.tokenizer_path)
        corpus = lambda: [self.task.prompt(q) + self.task.gold_rationale(q) for q in self.task.questions("train")]  # noqa: E731
        return task_tokenizer(self.log_dir / "tokenizer", corpus, self.vocab_size, [self.task.answer_info],
                              self.split_digits, self.trainer)

    def train_questions(self) -> list[Question]:
        return self.task.questions("train")

    def test_questions(self) -> list[Question]:
        return self.task.questions("test")

    # ---- which data: iteration 0 = gold rationales, k >= 1 = shard k --------------------------------------------

    def use_iteration(self, iteration: int) -> None:
        """Train on shard ``iteration`` from the next (re)loaded dataloader on."""
        if iteration > 0 and not shard_path(self.log_dir, iteration).exists():
            raise FileNotFoundError(f"{shard_path(self.log_dir, iteration)}: no shard for iteration {iteration}")
        self.iteration = iteration

    def state_dict(self) -> dict:
        return {"iteration": self.iteration}

    def load_state_dict(self, state_dict: dict) -> None:
        self.iteration = state_dict["iteration"]

    def training_examples(self) -> list[Example]:
        """The current iteration's examples (before tokenisation)."""
        gold = [self.gold(q, with_feedback=self.iteration > 0) for q in self.train_questions()]
        if self.iteration == 0:
            self.last_counts = {GOLD: len(gold)}
            return gold
        path = shard_path(self.log_dir, self.iteration)
        episodes = read_shard(path)
        split = [example for episode in episodes for example in split_turns(episode)]
        improvement = [e for e in split if e.kind == IMPROVEMENT]
        non_improvement = [e for e in split if e.kind == NON_IMPROVEMENT]
        own = len(improvement) + len(non_improvement)
        if own < self.min_examples:
            outcomes = Counter(e.outcome for e in episodes)
            reasons = Counter(e.reason for e in episodes if e.reason).most_common(3)
            raise ValueError(
                f"iteration {self.iteration}: {path} gives {own} training examples ({len(improvement)} improvement, "
                f"{len(non_improvement)} non-improvement) from {len(episodes)} rollouts ({dict(outcomes)}; most "
                f"common reasons: {dict(reasons)}), fewer than --data.init_args.min_examples={self.min_examples}. "
                "Roll out on more questions (--trainer.callbacks.num_questions, or null for all), or give the policy "
                f"more room (max_new_tokens, a longer warm-up); to train on these anyway, {self._again(own)}.")
        examples = rebalance(improvement, non_improvement, gold, self.improve_data_ratio, self.seed + self.iteration)
        if not any(e.kind != GOLD for e in examples):  # r : 1 : 1 keeps no non-improvement without improvement
            if self.min_examples > 0:
                raise ValueError(
                    f"iteration {self.iteration}: {path} gives no improvement example, so re-balancing at "
                    f"--data.init_args.improve_data_ratio={self.improve_data_ratio} keeps none of its {own} "
                    "non-improvement examples. Roll out on more questions (--trainer.callbacks.num_questions), or "
                    "set --data.init_args.improve_data_ratio=0 to keep them all.")
            # min_examples=0 asked for this: gold demos alone, marked as such in the evaluation table
            rank_zero_warn(f"iteration {self.iteration}: the shard gave no training examples; training on gold only "
                           "(--data.init_args.min_examples=0)")
            examples = gold
        self.last_counts = dict(count_kinds(examples))
        return examples

    def _again(self, min_examples: int) -> str:
        """How to go on with ``--data.init_args.min_examples={min_examples}`` from here."""
        flag = f"--data.init_args.min_examples={min_examples}"
        if self.trainer is not None and self.trainer.global_step == 0:  # warmup_epochs=0: no checkpoint yet
            return (f"start again with {flag} (nothing was trained yet, so there is no checkpoint to resume: use a "
                    f"new --trainer.logger.init_args.save_dir, or delete {self.log_dir})")
        return f"resume with --ckpt_path last {flag}"

    def gold(self, question: Question, with_feedback: bool) -> Example:
        """The gold-rationale example of ``question``; ``with_feedback`` (TriPosT iterations) adds the "correct"
        feedback section after it."""
        rationale = self.task.gold_rationale(question)
        if not with_feedback:  # ft-rationale stage: the rationale alone, as the reference's baseline data
            return Example(GOLD, self.task.prompt(question), rationale.strip(), "", False, question.id)
        return gold_example(self.task.prompt(question), rationale, correct_feedback(rationale), question.id)

    # ---- tokenisation and batching ------------------------------------------------------------------------------

    def encode(self, example: Example) -> dict[str, torch.Tensor]:
        """Token ids and per-token loss weights of the example's text, tokenised as one text (``encode_sections``)
        so the ids are those the model reads and writes at test time, whatever the tokenizer.

        Weights: prompt 0 (1 with ``learn_prompt``), answer 1 (``wrong_attempt_weight`` if the teacher found it wrong),
        self-improvement section ``w`` (1 for directly-correct and gold examples), EOS as its segment. The model's
        loss is ``sum(CE * w) / count(w > 0)``.
        """
        ids, owners = encode_sections(self.tokenizer, [example.prompt, example.answer, example.self_improve])
        section_weight = (float(self.learn_prompt), 1.0 if example.attempt_correct else self.wrong_attempt_weight,
                          self.self_improve_weight if example.weighted else 1.0)
        weights = [section_weight[owner] for owner in owners] + [section_weight[2]]
        return {"input_ids": torch.tensor(ids + [self.tokenizer.eos_token_id]), "loss_weights": torch.tensor(weights)}

    def encoded_training_examples(self) -> list[dict[str, torch.Tensor]]:
        """The current iteration's examples, encoded; those longer than ``max_length`` are dropped, with a warning.
        Every epoch of an iteration (and, for gold examples, the next iterations) sees the same examples again, so
        each distinct one is encoded once and kept while it is in use."""
        examples = self.training_examples()
        self._encoded = {e: self._encoded.get(e) or self.encode(e) for e in dict.fromkeys(examples)}
        encoded = [self._encoded[e] for e in examples]
        kept = [e for e in encoded if len(e["input_ids"]) <= self.max_length]
        if len(kept) < len(encoded):
            rank_zero_warn(
                f"dropped {len(encoded) - len(kept)} of {len(encoded)} examples longer than max_length="
                f"{self.max_length} tokens (raise --data.init_args.max_length to keep them)"
            )
        return kept

    def train_dataloader(self) -> DataLoader:
        kept = self.encoded_training_examples()
        rank_zero_info(f"iteration {self.iteration}: training on {self.last_counts} ({len(kept)} examples)")
        self._log_mix(len(kept))
        epoch = self.trainer.current_epoch if self.trainer is not None else 0
        batches = length_grouped_batches([len(e["input_ids"]) for e in kept], self.batch_size, self.seed + epoch)
        pad = self.tokenizer.pad_token_id
        return DataLoader([collate([kept[i] for i in b], pad) for b in batches], batch_size=None, shuffle=False)


    def _log_mix(self, kept: int) -> None:
        """The training mix of this epoch (examples of each kind) as ``data/examples_*`` scalars."""
        if self.trainer is None or self.trainer.logger is None or not self.trainer.is_global_zero:
            return
        metrics = {f"data/examples_{kind}": float(self.last_counts.get(kind, 0)) for kind in (IMPROVEMENT, NON_IMPROVEMENT, GOLD)}
        self.trainer.logger.log_metrics({**metrics, "data/examples_total": float(kept)}, step=self.trainer.global_step)


def length_grouped_batches(lengths: Sequence[int], batch_size: int, seed: int, chunk: int = 256) -> list[list[int]]:
    """Shuffle, sort by length inside chunks of ``chunk`` examples, cut into batches, shuffle the batches.

    Random-order padding wastes about half the tokens on this kind of data; grouping by length keeps padding to a
    few percent while batch order stays random.
    """
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    batches = []
    for start in range(0, len(order), chunk):
        group = sorted(order[start : start + chunk], key=lambda i: lengths[i])
        batches += [group[i : i + batch_size] for i in range(0, len(group), batch_size)]
    rng.shuffle(batches)
    return batches


def collate(items: Sequence[dict[str, torch.Tensor]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest item; padding has weight 0 and attention mask 0."""
    length = max(len(item["input_ids"]) for item in items)
    input_ids = torch.full((len(items), length), pad_id, dtype=torch.long)
    weights = torch.zeros(len(items), length)
    attention_mask = torch.zeros(len(items), length, dtype=torch.long)
    for row, item in enumerate(items):
        n = len(item["input_ids"])
        input_ids[row, :n] = item["input_ids"]
        weights[row, :n] = item["loss_weights"]
        attention_mask[row, :n] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "loss_weights": weights}
