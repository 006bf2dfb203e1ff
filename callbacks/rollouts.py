"""Online rollouts with teacher feedback at the end of each stage (DESIGN.md, "the flow"), for both methods.

TriPosT: when a stage ends (the warm-up, or an iteration's ``epochs_per_iteration`` epochs), the current policy is
rolled out on the task's training questions, the teacher edits every trajectory, and the edited episodes (all of
them, failed and dropped ones included, with their reasons) are written as the next iteration's interaction-log
shard. PIT's RL: before the first epoch and after every epoch, the policy improves the RL prompts' references and
the judge scores them; that shard is the next epoch's PPO buffer. The DataModule then trains on the shard from the
next epoch on; no rollouts follow the last iteration. What a rollout is belongs to the module (``rollout``: the
policy samples; ``feedback``: the teacher or judge turns samples into episodes); this callback decides when, writes
and reuses shards, seeds, syncs ranks and logs.

Ranks: every rank samples its share of the prompts and gets all samples back (so sharded models decode in
lock-step); rank 0 alone asks the teacher and writes the shard while the others wait; then every rank reads it.

Resume: a shard is written atomically and never rewritten; if the next iteration's shard already exists (the run
was killed after writing it), it is reused instead of being collected again, so nothing is lost or duplicated.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.seed import isolate_rng

from callbacks.evaluation import trajectory_markdown
from datamodules.interaction_log import Episode, list_shards, shard_path, write_shard
from feedback.base import Judge, Teacher, TeacherUnavailable
from feedback.scripted import ScriptedTeacher
from tasks.base import Question


class OnlineRollouts(Callback):
    """Roll out the policy, have the teacher (or judge) give feedback, and write the next iteration's shard.

    When: at the end of each stage the module reports (``finished_stage``), and before the first epoch for modules
    that train on rollouts from the start (``rollouts_before_training``: PIT's RL). What a rollout is belongs to
    the module (``rollout`` and ``feedback``); this callback keeps the shards, resume, ranks and logging.

    Args:
        teacher: TriPosT: who writes feedback and improvements (``feedback.scripted.ScriptedTeacher``,
            ``feedback.openai.OpenAITeacher``, ...). PIT: the judge scoring improvements
            (``feedback.reward_model.RewardModelJudge``, or an LLM: ``feedback.llm_judge.LLMJudge``).
        temperature: sampling temperature of the rollouts (the reference samples at 1.0; 0 is greedy).
        max_rounds: self-improvement rounds the policy runs per question before editing (attempt, own
            feedback, own update); the warm-up model writes attempts only.
        max_updates: teacher improvement rounds per trajectory at most (reference: 5).
        num_questions: roll out on N training questions per round (None: all of them, as the reference): a sample
            drawn afresh for every iteration, seeded by ``seed`` and the iteration (so the same after a resume and on
            every rank), as the reference collects new data each iteration; each question's episode in the shard
            names it.
        num_samples_logged: edited trajectories shown as text in TensorBoard per round.
        seed: rollouts of iteration k sample with seed ``seed + k`` (the training RNG is left untouched), so a
            round redone after a resume asks an LLM teacher the same questions and is answered from its cache.
    """

    def __init__(
        self,
        teacher: Teacher | Judge | None = None,
        temperature: float = 1.0,
        max_rounds: int = 2,
        max_updates: int = 5,
        num_questions: int | None = None,
        num_samples_logged: int = 3,
        seed: int = 0,
    ) -> None:
        if num_questions is not None and num_questions < 1:
            raise ValueError(f"num_questions={num_questions}: roll out on at least 1 question (None: all of them)")
        self.teacher = teacher or ScriptedTeacher()
        self.temperature = temperature
        self.max_rounds = max_rounds
        self.max_updates = max_updates
        self.num_questions = num_questions
        self.num_samples_logged = num_samples_logged
        self.seed = seed
        self.metrics: dict[str, float] = {}
        self.history: list[dict[str, float]] = []  # every round's scalars, in order
        self._found_shards: list[int] = []  # shards on disk when fit started

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._found_shards = sorted(list_shards(trainer.datamodule.rollout_dir))  # checked in on_train_start
        # PIT's RL trains on rollouts from its first epoch on, so they exist before the first dataloader. Under
        # strategies that restore a checkpoint after setup (FSDP2), a resumed run is not known yet here: its
        # shard exists and is reused, and the restored state then says which iteration to train on.
        if pl_module.rollouts_before_training and trainer.ckpt_path is None:
            self._round(trainer, pl_module, 1)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Checked here, where every strategy has restored its checkpoint (trainer.ckpt_path is set on a resume).
        if self._found_shards and trainer.ckpt_path is None:
            folder = trainer.checkpoint_callback.dirpath if trainer.checkpoint_callback is not None else None
            if folder is not None and any(Path(folder).glob("*.ckpt")):
                how = "Resume it with --ckpt_path last"
            else:  # e.g. stopped in its first epoch, or by an error before any training (warmup_epochs=0)
                how = (f"That run wrote no checkpoint, so it cannot be resumed: delete {trainer.datamodule.rollout_dir} "
                       "to start again there")
            raise FileExistsError(
                f"{trainer.datamodule.rollout_dir} already holds interaction-log shards {self._found_shards} from an "
                f"earlier run. {how}, or start a new run in another directory (--trainer.logger.init_args.save_dir, "
                "or --data.init_args.log_dir)."
            )

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        stage = pl_module.finished_stage(trainer.current_epoch)
        if stage is None or stage >= pl_module.num_iterations or trainer.should_stop:  # stopping: no next iteration
            return
        self._round(trainer, pl_module, stage + 1)

    def _round(self, trainer: Trainer, pl_module: LightningModule, iteration: int) -> None:
        datamodule = trainer.datamodule
        path = shard_path(datamodule.rollout_dir, iteration)
        if trainer.strategy.broadcast(path.exists()):  # rank 0 decides: every rank must take the same branch
            rank_zero_info(f"iteration {iteration}: reusing existing shard {path} (resumed run)")
        else:
            self.metrics = {}
            episodes = self.collect(trainer, pl_module, iteration)
            if trainer.is_global_zero:
                write_shard(path, episodes)
                self._log(trainer, pl_module, episodes, iteration)
                if trainer.logger is not None:  # the logger directly: rounds also run in on_fit_start (no self.log)
                    trainer.logger.log_metrics(self.metrics, step=trainer.global_step)
                self.history.append({"iteration": iteration, **self.metrics})
        trainer.strategy.barrier("rollouts")
        datamodule.use_iteration(iteration)

    def collect(self, trainer: Trainer, pl_module: LightningModule, iteration: int) -> list[Episode] | None:
        """Every rank samples (``pl_module.rollout``: generation is split over the ranks and gathered); rank 0 alone
        asks the teacher (``pl_module.feedback``) and returns the episodes, the other ranks None. A failure on rank 0
        is broadcast, so the others stop too instead of waiting for a shard that never comes."""
        self.teacher.reset_usage()
        start = time.perf_counter()
        episodes, error = None, None
        with isolate_rng():
            torch.manual_seed(self.seed + iteration + 7919 * trainer.global_rank)
            samples = self.sample(trainer, pl_module, iteration)
            if trainer.is_global_zero:
                try:
                    episodes = pl_module.feedback(trainer.datamodule, iteration, samples, self)
                except Exception as exception:  # noqa: BLE001 - re-raised below, after the other ranks are told
                    error = exception
        message = trainer.strategy.broadcast(None if error is None else f"{type(error).__name__}: {error}")
        if isinstance(error, TeacherUnavailable):  # nothing is written: the resumed run redoes this round (cached)
            raise TeacherUnavailable(f"iteration {iteration} rollouts failed: {error}") from None
        if error is not None:
            raise error
        if message is not None:
            raise RuntimeError(f"iteration {iteration} rollouts failed on rank 0: {message}")
        self.record("time/rollouts_total_s", time.perf_counter() - start)
        for name, value in self.teacher.usage().items():
            self.record(f"teacher/{name}", value)
        return episodes

    def questions(self, datamodule, iteration: int) -> list[Question]:
        """The training questions of iteration ``iteration``'s rollouts (see ``num_questions``), in dataset order."""
        questions = datamodule.train_questions()
        if self.num_questions is None or self.num_questions >= len(questions):
            return questions
        rng = random.Random(f"rollout-questions/{self.seed}/{iteration}")  # str seeds hash the same in every process
        return [questions[i] for i in sorted(rng.sample(range(len(questions)), self.num_questions))]

    def sample(self, trainer: Trainer, pl_module: LightningModule, iteration: int):
        """What the teacher gives feedback on: the policy's rollouts (every rank)."""
        return pl_module.rollout(trainer.datamodule, iteration, self)

    def record(self, name: str, value: float) -> None:
        """A scalar of the current round (modules call it from ``rollout`` and ``feedback``); logged when the round ends."""
        self.metrics[name] = float(value)

    def _log(self, trainer: Trainer, pl_module: LightningModule, episodes: list[Episode], iteration: int) -> None:
        outcomes = Counter(e.outcome for e in episodes)
        reasons = Counter(e.reason for e in episodes if e.reason)
        for outcome in ("correct", "improved", "feedback_only", "failed", "dropped"):
            self.record(f"rollouts/{outcome}", outcomes[outcome])
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


class TeacherDemos(OnlineRollouts):
    """"ft SI demo" (TriPosT reference §7): the teacher writes the whole self-improvement demonstration, the
    attempt included, with no interaction with the student; the TriPosT module then trains on it as on an
    iteration's shard (same editing, turn splitting and re-balancing). Use one iteration after the warm-up
    (``epochs_per_iteration`` = the epochs TriPosT's iterations would take) for the reference's single round.

    Attempts: the gold rationale, and with probability ``error_rate`` one with a slip that changes the answer
    (``Task.slipped_rationale``: a calculation slip or two swapped words in the last step), standing in for a
    teacher sampling at temperature 1; the teacher's feedback and improvements then fix it as in TriPosT.

    Args:
        teacher: writes feedback and improvements (as ``OnlineRollouts``).
        error_rate: fraction of attempts that contain a slip.
        max_updates, num_questions, num_samples_logged, seed: as ``OnlineRollouts``.
    """

    def __init__(self, teacher: Teacher | None = None, error_rate: float = 0.5, max_updates: int = 5,
                 num_questions: int | None = None, num_samples_logged: int = 3, seed: int = 0) -> None:
        if not 0.0 <= error_rate <= 1.0:
            raise ValueError(f"error_rate must be in [0, 1], got {error_rate}")
        super().__init__(teacher, temperature=1.0, max_rounds=1, max_updates=max_updates, num_questions=num_questions,
                         num_samples_logged=num_samples_logged, seed=seed)
        self.error_rate = error_rate

    def sample(self, trainer: Trainer, pl_module: LightningModule, iteration: int):
        from modules.tripost import Trace

        task = trainer.datamodule.task
        questions = self.questions(trainer.datamodule, iteration)
        rng = random.Random(f"si-demo/{self.seed}/{iteration}")  # the same on every rank
        golds = [task.gold_rationale(q) for q in questions]
        attempts = [task.slipped_rationale(q, rng) if rng.random() < self.error_rate else gold
                    for q, gold in zip(questions, golds)]
        self.record("demos/slipped", sum(a != gold for a, gold in zip(attempts, golds)))
        return questions, [Trace([a], [None]) for a in attempts], "teacher demo"
