"""Online rollouts with teacher feedback at the end of each TriPosT stage (DESIGN.md, "the flow").

When a stage ends (the warm-up, or an iteration's ``epochs_per_iteration`` epochs), the current policy is rolled
out on the task's training questions, the teacher edits every trajectory, and the edited episodes (all of them,
failed and dropped ones included, with their reasons) are written as the next iteration's interaction-log shard.
The DataModule then trains on that shard from the next epoch on. No rollouts follow the last iteration.

Resume: a shard is written atomically and never rewritten; if the next iteration's shard already exists (the run
was killed after writing it), it is reused instead of being collected again, so nothing is lost or duplicated.
"""

from __future__ import annotations

import time
from collections import Counter

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.seed import isolate_rng

from callbacks.evaluation import trajectory_markdown
from datamodules.interaction_log import Episode, list_shards, shard_path, write_shard
from feedback.base import Teacher, TeacherUnavailable
from feedback.editing import edit_traces
from feedback.scripted import ScriptedTeacher


class OnlineRollouts(Callback):
    """Roll out the policy, have the teacher edit the trajectories, and write the next iteration's shard.

    Args:
        teacher: who writes feedback and improvements (``feedback.ScriptedTeacher`` for verifiable tasks).
        temperature: sampling temperature of the rollouts (the reference samples at 1.0; 0 is greedy).
        max_rounds: self-improvement rounds the policy runs per question before editing (attempt, own
            feedback, own update); the warm-up model writes attempts only.
        max_updates: teacher improvement rounds per trajectory at most (reference: 5).
        num_questions: roll out on the first N training questions only (None: all of them, as the reference).
        num_samples_logged: edited trajectories shown as text in TensorBoard per round.
        seed: rollouts of iteration k sample with seed ``seed + k`` (the training RNG is left untouched), so a
            round redone after a resume asks an LLM teacher the same questions and is answered from its cache.
    """

    def __init__(
        self,
        teacher: Teacher | None = None,
        temperature: float = 1.0,
        max_rounds: int = 2,
        max_updates: int = 5,
        num_questions: int | None = None,
        num_samples_logged: int = 3,
        seed: int = 0,
    ) -> None:
        self.teacher = teacher or ScriptedTeacher()
        self.temperature = temperature
        self.max_rounds = max_rounds
        self.max_updates = max_updates
        self.num_questions = num_questions
        self.num_samples_logged = num_samples_logged
        self.seed = seed

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        shards = list_shards(trainer.datamodule.log_dir)
        if shards and trainer.ckpt_path is None:
            raise FileExistsError(
                f"{trainer.datamodule.log_dir} already holds interaction-log shards {sorted(shards)} from an earlier "
                "run. Resume it with --ckpt_path last, or start a new run in another directory "
                "(--trainer.logger.init_args.save_dir, or --data.init_args.log_dir)."
            )

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        stage = pl_module.finished_stage(trainer.current_epoch)
        if stage is None or stage >= pl_module.num_iterations:
            return
        iteration, datamodule = stage + 1, trainer.datamodule
        path = shard_path(datamodule.log_dir, iteration)
        if path.exists():
            rank_zero_info(f"iteration {iteration}: reusing existing shard {path} (resumed run)")
        elif trainer.is_global_zero:
            episodes = self.collect(trainer, pl_module, iteration)
            write_shard(path, episodes)
            self._log(trainer, pl_module, episodes, iteration)
        trainer.strategy.barrier("rollouts")
        datamodule.use_iteration(iteration)

    def collect(self, trainer: Trainer, pl_module: LightningModule, iteration: int) -> list[Episode]:
        datamodule, task = trainer.datamodule, trainer.datamodule.task
        questions = datamodule.train_questions()[: self.num_questions]
        start = time.perf_counter()
        with isolate_rng():
            torch.manual_seed(self.seed + iteration)
            traces = pl_module.self_improve(
                task, questions, self.max_rounds, temperature=self.temperature, progress=f"rollouts it{iteration}"
            )
        rollout_s = time.perf_counter() - start
        self.teacher.reset_usage()
        try:
            episodes = edit_traces(
                task,
                self.teacher,
                questions,
                [(t.attempts, t.feedbacks) for t in traces],
                iteration=iteration,
                prompts=[task.prompt(q) for q in questions],
                max_updates=self.max_updates,
            )
        except TeacherUnavailable as error:  # nothing is written: the resumed run redoes this round (cached calls)
            raise TeacherUnavailable(f"iteration {iteration} rollouts failed: {error}") from None
        pl_module.log("time/rollout_s", rollout_s, rank_zero_only=True)
        pl_module.log("time/teacher_s", time.perf_counter() - start - rollout_s, rank_zero_only=True)
        for name, value in self.teacher.usage().items():
            pl_module.log(f"teacher/{name}", value, rank_zero_only=True)
        return episodes

    def _log(self, trainer: Trainer, pl_module: LightningModule, episodes: list[Episode], iteration: int) -> None:
        outcomes = Counter(e.outcome for e in episodes)
        reasons = Counter(e.reason for e in episodes if e.reason)
        for outcome in ("correct", "improved", "feedback_only", "failed", "dropped"):
            pl_module.log(f"rollouts/{outcome}", float(outcomes[outcome]), rank_zero_only=True)
        rank_zero_info(f"iteration {iteration} rollouts: {dict(outcomes)}; reasons: {dict(reasons.most_common(5))}")
        if not any(outcomes[o] for o in ("correct", "improved", "feedback_only")):
            rank_zero_warn(f"iteration {iteration}: no usable trajectory in {len(episodes)} rollouts")
        logger = trainer.logger
        if isinstance(logger, TensorBoardLogger):
            samples = [e for e in episodes if e.outcome == "improved"][: self.num_samples_logged]
            text = "\n\n---\n\n".join(_markdown(e) for e in samples) or "(no improved trajectory)"
            logger.experiment.add_text("rollouts/samples", text, global_step=trainer.global_step)


def _markdown(episode: Episode) -> str:
    title = f"**{episode.id}** ({episode.outcome}), gold `{episode.gold}`"
    return trajectory_markdown(title, episode.prompt, [(f"{t.role} by {t.by}", t.text) for t in episode.turns])
