"""PIT's iterative inference (reference pit.md §4), evaluated: y_0 = reference, y_i = M_PIT(x, y_{i-1}).

On held-out prompts (the reward-model fold's validation pairs, which no policy trains on) the policy improves its
own previous output ``iterations`` times. For every iteration i it reports, against the original response y_0:

* ``pit_eval/rm_win_rate/iter_i``: how often the reward model says y_i improves on y_0 (R(x, y_i, y_0) > R(x, y_0, y_0));
* ``pit_eval/exact_score/iter_i`` (iter_0 = the references), ``pit_eval/exact_win_rate/iter_i`` and
  ``pit_eval/exact_lose_rate/iter_i``: on tasks with an exact score (the synthetic one).

References are the dataset's rejected responses, or the original policy's samples with ``original_policy``.
Runs after every epoch and at the end of ``fit``; the table is printed at the end.
"""

from __future__ import annotations

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.seed import isolate_rng

from callbacks.evaluation import save_run_json
from datamodules.pit import pair_of
from feedback.base import Judge


class IterativeImprovementEval(Callback):
    """Apply the PIT policy k times to held-out references and report win rates per iteration.

    Args:
        judge: who judges improvements: ``feedback.reward_model.RewardModelJudge`` or ``feedback.llm_judge.LLMJudge``
            (None: exact scores only).
        iterations: improvement iterations k.
        num_prompts: held-out prompts evaluated (from the reward-model fold's validation share).
        temperature: sampling temperature (the paper finds 0.4-0.6 best; 0 is greedy).
        every_epoch: also evaluate after every epoch (else only at the end of ``fit``).
        seed: sampling seed (the training RNG is left untouched).
    """

    def __init__(self, judge: Judge | None = None, iterations: int = 3, num_prompts: int = 200,
                 temperature: float = 0.0, every_epoch: bool = True, seed: int = 0) -> None:
        self.judge, self.iterations, self.num_prompts = judge, iterations, num_prompts
        self.temperature, self.every_epoch, self.seed = temperature, every_epoch, seed
        self.last: dict[str, list[float]] = {}

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.every_epoch:
            self._evaluate(trainer, pl_module)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self.every_epoch:
            self._evaluate(trainer, pl_module)
        rank_zero_info(self.table())

    def evaluate(self, pl_module: LightningModule, datamodule, judge: bool = True) -> dict[str, list[float]]:
        """Per-iteration metrics (lists indexed by iteration, 0 = the references). Every rank runs it (the policy's
        generation is split over the ranks, all get every answer); ``judge``: also ask the judge (rank 0 only)."""
        held_out = datamodule.split("rm")[1][: self.num_prompts]
        pairs = [(x, l) for x, _, l in map(pair_of, held_out)]
        score = datamodule.preferences.score
        exact0 = [score(x, y0) for x, y0 in pairs]
        exact = exact0[0] is not None
        metrics: dict[str, list[float]] = {}
        if exact:
            metrics |= {"exact_score": [sum(exact0) / len(exact0)], "exact_win_rate": [0.0], "exact_lose_rate": [0.0]}
        judge = judge and self.judge is not None
        if judge:
            metrics["rm_win_rate"] = [0.0]
            base = self.judge.score([(x, y0, y0) for x, y0 in pairs])
        current = pairs
        with isolate_rng():
            torch.manual_seed(self.seed)
            for _ in range(self.iterations):
                improved = pl_module.improve(current, self.temperature)
                current = [(x, y) for (x, _), y in zip(pairs, improved)]
                if exact:
                    s = [score(x, y) for x, y in current]
                    metrics["exact_score"].append(sum(s) / len(s))
                    metrics["exact_win_rate"].append(sum(b > a for a, b in zip(exact0, s)) / len(s))
                    metrics["exact_lose_rate"].append(sum(b < a for a, b in zip(exact0, s)) / len(s))
                if judge:
                    gaps = self.judge.score([(x, y0, y) for (x, y0), (_, y) in zip(pairs, current)])
                    metrics["rm_win_rate"].append(sum(g > b0 for g, b0 in zip(gaps, base)) / len(gaps))
        return metrics

    def _evaluate(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.last = self.evaluate(pl_module, trainer.datamodule, judge=trainer.is_global_zero)
        save_run_json(trainer, "pit_eval.json", self.last)
        if not trainer.is_global_zero:
            return
        if trainer.logger is not None:  # the logger directly: this also runs in on_fit_end, where self.log cannot
            trainer.logger.log_metrics({f"pit_eval/{name}/iter_{i}": value for name, values in self.last.items()
                                        for i, value in enumerate(values)}, step=trainer.global_step)
        if isinstance(trainer.logger, TensorBoardLogger):
            trainer.logger.experiment.add_text("pit_eval/table", self.table(), global_step=trainer.global_step)

    def table(self) -> str:
        if not self.last:
            return "(no PIT evaluation yet)"
        names = list(self.last)
        rows = [" | ".join(["iteration", *names]), " | ".join(["---"] * (len(names) + 1))]
        for i in range(self.iterations + 1):
            rows.append(" | ".join([str(i), *[f"{self.last[n][i]:.3f}" if i < len(self.last[n]) else "" for n in names]]))
        return "PIT iterative improvement (held-out; iteration 0 = the references):\n" + "\n".join(rows)
