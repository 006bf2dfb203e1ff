"""PIT's iterative inference (reference pit.md §4, Algorithm 2), evaluated as the paper does.

    y_0 = M_P(x)                      a sample of the original policy (the model PIT improves) on a held-out prompt
    y_i = M_PIT(x, y_{i-1})           i = 1..iterations: the policy improves its own previous output

The held-out prompts are the reward-model fold's validation pairs, which no policy trains on. y_0 comes from a file
(``y0_path``, an interaction-log shard): written once from ``original_policy`` when absent, then read by every run
that names it, so all arms of a comparison improve the very same y_0. For every iteration i, against y_0:

* ``exact_score`` (iter_0 = y_0's), ``exact_win_rate``, ``exact_lose_rate`` and ``exact_delta`` = win - lose (the
  paper's Δ; a tie counts in neither), by the task's exact score where it has one (the synthetic task): the headline;
* ``independent_rm_win_rate``: how often a judge the policy was *not* trained against (``independent_judge``: a
  second reward model trained on other data, or an LLM) prefers y_i: R(x, y_0, y_i) > R(x, y_0, y_0);
* ``rm_win_rate``: the same by ``judge``, the reward model the policy was trained against. It is not a measure of
  quality (RL raises it whether or not the answers got better) and is labelled so in the table.

With y_0 from the original policy, the same numbers with y_0 = the dataset's rejected response y_l follow under
``dataset/`` (the second table; ``dataset_table``). Without ``original_policy`` and ``y0_path`` y_0 = y_l and there
is only that one evaluation. Runs after every epoch (``every_epoch``) or once at the end of training; the last
numbers go to ``{log_dir}/pit_eval.json`` and the table is printed at the end of ``fit``. Each evaluation also logs
its judges' usage counters (``pit_eval/judge/*``, ``pit_eval/independent_judge/*``): an LLM judge's unparseable
answers are ties (reward 0), counted as ``judge_off_format``.

Early stopping (``early_stop_patience``): after every epoch the policy improves y_0 once on ``monitor_prompts``
further held-out prompts, kept apart from the reported ones so that choosing the epoch does not flatter the
reported numbers; when the mean exact score of y_1 there has not improved for ``early_stop_patience`` epochs,
training stops, and at the end of ``fit`` (before the module exports) the best epoch's weights are put back, so the
export, ``pit_eval.json`` and the table are that epoch's.
"""

from __future__ import annotations

from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.seed import isolate_rng

from callbacks.evaluation import save_run_json
from datamodules.interaction_log import Episode, Turn, read_shard, write_shard
from datamodules.pit import pair_of, policy_prompt
from feedback.base import Judge
from modules.distributed import is_sharded

#: table labels of the per-iteration metrics, in table order
LABELS = {"exact_score": "exact score", "exact_win_rate": "win (exact)", "exact_lose_rate": "lose (exact)",
          "exact_delta": "Δ = win - lose (exact)", "independent_rm_win_rate": "independent RM win rate",
          "rm_win_rate": "trained-against RM win rate (not a measure)"}
#: the second table's metrics: y_0 = the dataset's rejected responses
DATASET = "dataset/"


class IterativeImprovementEval(Callback):
    """Improve held-out y_0 ``iterations`` times with the PIT policy; report win / lose rates and Δ per iteration.

    Args:
        judge: the judge the policy was trained against (the rollouts' reward model,
            ``feedback.reward_model.RewardModelJudge``); its win rate is reported only as "trained-against RM win
            rate (not a measure)". None: no such figure.
        independent_judge: a judge the policy never trained against: a second reward model trained on another seed
            or data draw (``RewardModelJudge`` on its export), or ``feedback.llm_judge.LLMJudge``; its win rate is the
            table's "independent RM win rate". None: exact scores only.
        iterations: improvement iterations k.
        num_prompts: held-out prompts reported (the first of the reward-model fold's validation share).
        temperature: sampling temperature of the improvements (the paper finds 0.4-0.6 best; 0 is greedy).
        every_epoch: evaluate after every epoch (else once, at the end of training).
        seed: sampling seed of the improvements and of y_0 (the training RNG is left untouched).
        original_policy: folder of the original policy M_P (``cli.py fit ... --data.init_args.stage policy_sft``
            exports it as ``policy/hf_model``); y_0 are its samples, generated once into ``y0_path``.
        y0_path: the y_0 file (interaction-log shard, one episode per held-out prompt, id = the pair's id). Read if
            it exists, else written from ``original_policy``; default ``{log_dir}/y0.jsonl``. Point every arm of a
            comparison at one file. Setting only ``y0_path`` requires the file to exist.
        y0_temperature: sampling temperature of y_0 (1.0: as the rollouts sample round 2's references).
        dataset_table: with y_0 from the original policy, also evaluate y_0 = the dataset's y_l (``dataset/*``).
        monitor_prompts: held-out prompts kept apart for early stopping (the last ones of the validation share;
            the reported prompts are the first ``num_prompts`` of the rest). Give every run of a comparison the same
            value: it decides which prompts are reported and which y_0 the file holds.
        early_stop_patience: stop training after this many epochs without a higher mean exact score of y_1 on the
            monitor prompts, and export the best epoch's weights (None: train every epoch, export the last). Needs
            ``every_epoch``, ``monitor_prompts`` > 0 and a task with an exact score. A curriculum's round 2 only
            starts after ``round1_epochs``: a patience below that may stop before it.
    """

    def __init__(self, judge: Judge | None = None, independent_judge: Judge | None = None, iterations: int = 3,
                 num_prompts: int = 200, temperature: float = 0.0, every_epoch: bool = True, seed: int = 0,
                 original_policy: str | None = None, y0_path: str | None = None, y0_temperature: float = 1.0,
                 dataset_table: bool = True, monitor_prompts: int = 0, early_stop_patience: int | None = None) -> None:
        if early_stop_patience is not None:
            if early_stop_patience < 1:
                raise ValueError(f"early_stop_patience={early_stop_patience}: give at least 1 epoch (None: no early stopping)")
            if not every_epoch:
                raise ValueError("early_stop_patience needs an evaluation after every epoch: set every_epoch: true")
            if monitor_prompts < 1:
                raise ValueError("early_stop_patience needs held-out prompts to monitor apart from the reported ones: "
                                 "set monitor_prompts (e.g. 100)")
        if monitor_prompts < 0:
            raise ValueError(f"monitor_prompts={monitor_prompts}: must be 0 or more")
        self.judge, self.independent_judge = judge, independent_judge
        self.iterations, self.num_prompts, self.temperature = iterations, num_prompts, temperature
        self.every_epoch, self.seed = every_epoch, seed
        self.original_policy, self.y0_path, self.y0_temperature = original_policy, y0_path, y0_temperature
        self.dataset_table, self.monitor_prompts, self.early_stop_patience = dataset_table, monitor_prompts, early_stop_patience
        self.last: dict[str, list[float]] = {}
        self.usage: dict[str, float] = {}
        self._y0: dict[str, str] | None = None
        # early stopping: (epoch, monitored score) per evaluation, epochs since the best, the best epoch's record
        self.monitored: list[tuple[int, float]] = []
        self.wait = 0
        self.best: dict | None = None

    @property
    def y0_source(self) -> str:
        """Where y_0 comes from: ``original_policy`` (its samples, via the y_0 file) or ``dataset`` (y_l)."""
        return "original_policy" if self.original_policy is not None or self.y0_path is not None else "dataset"

    # ---- hooks ---------------------------------------------------------------------------------------------------

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        # refused here, before the model is built and the first rollouts are written (on_fit_start)
        if self.early_stop_patience is not None and is_sharded(trainer):
            # the best epoch's weights are kept per rank, but a checkpoint holds rank 0's callback state only: a
            # resumed sharded run would restore rank 0's shards on every rank
            raise ValueError("early_stop_patience keeps the best epoch's weights per process, which sharded strategies "
                             "(FSDP) cannot resume: unset it, or train with DDP or one device")

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # a run killed after early stopping decided (its last checkpoint saved) but before it exported: still stopped
        if self.early_stop_patience is not None and self.wait >= self.early_stop_patience:
            trainer.should_stop = True
            rank_zero_info(f"resumed after early stopping: no more training, exporting epoch {self.best['epoch']}")

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self.every_epoch:
            return
        self._evaluate(trainer, pl_module)
        if self.early_stop_patience is not None:
            self._early_stopping(trainer, pl_module)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # here, not in on_fit_end: the strategy's teardown (before on_fit_end) has moved the model to the CPU
        if not self.every_epoch:
            self._evaluate(trainer, pl_module)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Callbacks' on_fit_end runs before the module's (which exports): put the best epoch back first.
        if self.early_stop_patience is not None and self.best is not None:
            self._keep_best(trainer, pl_module)
        rank_zero_info(self.table())

    def state_dict(self) -> dict:
        """Early stopping's state (the best epoch's weights included), so a resumed run keeps counting."""
        if self.early_stop_patience is None:
            return {}
        return {"monitored": self.monitored, "wait": self.wait, "best": self.best}

    def load_state_dict(self, state_dict: dict) -> None:
        if state_dict:
            self.monitored = [tuple(m) for m in state_dict["monitored"]]
            self.wait, self.best = state_dict["wait"], state_dict["best"]

    # ---- evaluation ----------------------------------------------------------------------------------------------

    def held_out(self, datamodule) -> tuple[list[Episode], list[Episode]]:
        """``(reported, monitor)`` held-out pairs: the reward-model fold's validation share; the last
        ``monitor_prompts`` are the monitor set, the first ``num_prompts`` of the rest are reported."""
        pool = datamodule.split("rm")[1]
        if self.monitor_prompts >= len(pool):
            raise ValueError(f"monitor_prompts={self.monitor_prompts} leaves none of the {len(pool)} held-out pairs to "
                             "report: lower monitor_prompts or give the data more pairs")
        monitor = pool[len(pool) - self.monitor_prompts :] if self.monitor_prompts else []
        return pool[: min(self.num_prompts, len(pool) - self.monitor_prompts)], monitor

    def evaluate(self, pl_module: LightningModule, datamodule, judge: bool = True,
                 y0: dict[str, str] | None = None) -> dict[str, list[float]]:
        """Per-iteration metrics (lists indexed by iteration, 0 = y_0). ``y0``: the original policy's y_0 by
        held-out pair id (None: y_0 = the dataset's y_l). Every rank runs it (the policy's generation is split over
        the ranks, all get every answer); ``judge``: also ask the judges (rank 0 only)."""
        reported, _ = self.held_out(datamodule)
        dataset_pairs = [(x, y_l) for x, _, y_l in map(pair_of, reported)]
        judges = {name: j for name, j in (("independent_rm_win_rate", self.independent_judge),
                                          ("rm_win_rate", self.judge)) if judge and j is not None}
        score = datamodule.preferences.score
        if y0 is None:
            return self._improve_and_compare(pl_module, dataset_pairs, score, judges)
        metrics = self._improve_and_compare(pl_module, [(e.prompt, y0[e.id]) for e in reported], score, judges)
        if self.dataset_table:
            second = self._improve_and_compare(pl_module, dataset_pairs, score, judges)
            metrics |= {DATASET + name: values for name, values in second.items()}
        return metrics

    def _improve_and_compare(self, pl_module: LightningModule, pairs: list[tuple[str, str]], score,
                             judges: dict[str, Judge]) -> dict[str, list[float]]:
        """Algorithm 2 from ``pairs`` = (x, y_0): metrics of every y_i against its y_0."""
        exact0 = [score(x, y0) for x, y0 in pairs]
        exact = exact0[0] is not None
        metrics: dict[str, list[float]] = {}
        if exact:
            metrics |= {"exact_score": [sum(exact0) / len(exact0)], "exact_win_rate": [0.0], "exact_lose_rate": [0.0],
                        "exact_delta": [0.0]}
        # the "no change" level of each judge: R(x, y_0, y_0)
        base = {name: j.score([(x, y0, y0) for x, y0 in pairs]) for name, j in judges.items()}
        metrics |= {name: [0.0] for name in judges}
        current = pairs
        with isolate_rng():
            torch.manual_seed(self.seed)
            for _ in range(self.iterations):
                improved = pl_module.improve(current, self.temperature)
                current = [(x, y) for (x, _), y in zip(pairs, improved)]
                if exact:
                    s = [score(x, y) for x, y in current]
                    win = sum(b > a for a, b in zip(exact0, s)) / len(s)
                    lose = sum(b < a for a, b in zip(exact0, s)) / len(s)
                    metrics["exact_score"].append(sum(s) / len(s))
                    metrics["exact_win_rate"].append(win)
                    metrics["exact_lose_rate"].append(lose)
                    metrics["exact_delta"].append(win - lose)
                for name, j in judges.items():
                    gaps = j.score([(x, y0, y) for (x, y0), (_, y) in zip(pairs, current)])
                    metrics[name].append(sum(g > b0 for g, b0 in zip(gaps, base[name])) / len(gaps))
        return metrics

    # ---- y_0 from the original policy ----------------------------------------------------------------------------

    def y0_file(self, trainer: Trainer) -> Path:
        return Path(self.y0_path) if self.y0_path else Path(trainer.log_dir or ".") / "y0.jsonl"

    def original_policy_y0(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, str]:
        """y_0 of every held-out pair (reported and monitor), by pair id, from the y_0 file; written first from
        ``original_policy`` when the file is absent (every rank samples its share, rank 0 writes, all read)."""
        reported, monitor = self.held_out(trainer.datamodule)
        episodes = reported + monitor
        path = self.y0_file(trainer)
        if not trainer.strategy.broadcast(path.exists()):
            if self.original_policy is None:
                raise FileNotFoundError(f"{path}: no y_0 file; set the IterativeImprovementEval callback's "
                                        "original_policy to generate it, or point y0_path at an existing one")
            with isolate_rng():
                torch.manual_seed(self.seed + 7919 * trainer.global_rank)
                model = self.load_original_policy(pl_module)
                answers = pl_module.respond([policy_prompt(e.prompt) for e in episodes], self.y0_temperature, model, "y0")
            del model
            if trainer.is_global_zero:
                write_shard(path, [Episode(id=e.id, task=e.task, iteration=0, prompt=e.prompt, outcome="correct",
                                           turns=(Turn("reference", text.strip(), "original_policy"),))
                                   for e, (text, _) in zip(episodes, answers)])
            trainer.strategy.barrier("y0 file")
            rank_zero_info(f"wrote y_0 of {len(episodes)} held-out prompts from {self.original_policy} to {path}")
        found = {e.id: e for e in read_shard(path)}
        missing = [e.id for e in episodes if e.id not in found]
        wrong = [e.id for e in episodes if e.id in found and found[e.id].prompt != e.prompt]
        if missing or wrong:
            raise ValueError(f"{path} does not hold y_0 of these held-out prompts ({len(missing)} missing, e.g. "
                             f"{missing[:3]}; {len(wrong)} with another prompt, e.g. {wrong[:3]}): it was made with "
                             "other data, num_prompts or monitor_prompts. Delete it to sample it again, or set y0_path")
        return {e.id: found[e.id].turns[0].text for e in episodes}

    def load_original_policy(self, pl_module: LightningModule) -> torch.nn.Module:
        """The original policy M_P, loaded with the PIT module's own loading options, on its device."""
        from transformers import AutoModelForCausalLM

        from modules.pretrained import load_pretrained

        options = {k: pl_module.hparams.get(k) for k in ("attn_implementation", "model_kwargs")}
        model = load_pretrained(AutoModelForCausalLM, self.original_policy, dtype=pl_module.hparams.get("dtype", "float32"),
                                flag="IterativeImprovementEval's original_policy", device=pl_module.device, **options)
        return model.to(pl_module.device).eval().requires_grad_(False)

    # ---- running, logging, early stopping ------------------------------------------------------------------------

    def _evaluate(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.y0_source == "original_policy" and self._y0 is None:
            self._y0 = self.original_policy_y0(trainer, pl_module)
        roles = {"judge": self.judge, "independent_judge": self.independent_judge}
        for j in roles.values():
            if j is not None:
                j.reset_usage()
        self.last = self.evaluate(pl_module, trainer.datamodule, judge=trainer.is_global_zero, y0=self._y0)
        # per evaluation: an LLM judge's off-format answers are ties (reward 0); these counters say how many
        self.usage = {f"{role}/{name}": value for role, j in roles.items() if j is not None and trainer.is_global_zero
                      for name, value in j.usage().items()}
        self._save(trainer, trainer.current_epoch)
        if not trainer.is_global_zero:
            return
        if trainer.logger is not None:  # the logger directly: this also runs where self.log cannot
            scalars = {f"pit_eval/{name}/iter_{i}": value for name, values in self.last.items()
                       for i, value in enumerate(values)}
            scalars |= {f"pit_eval/{name}": value for name, value in self.usage.items()}
            trainer.logger.log_metrics(scalars, step=trainer.global_step)
        if isinstance(trainer.logger, TensorBoardLogger):
            trainer.logger.experiment.add_text("pit_eval/table", self.table(), global_step=trainer.global_step)

    def _save(self, trainer: Trainer, epoch: int, **extra) -> None:
        """``pit_eval.json``: the metric lists, where y_0 came from, the evaluated epoch and the judges' usage."""
        save_run_json(trainer, "pit_eval.json", {"y0": self.y0_source, "epoch": epoch, **self.last,
                                                 "judge_usage": self.usage, **extra})

    def monitor_score(self, pl_module: LightningModule, datamodule) -> float:
        """Mean exact score of y_1 on the monitor prompts (y_0 as the reported ones': the file's, or y_l)."""
        _, monitor = self.held_out(datamodule)
        pairs = [(e.prompt, self._y0[e.id] if self._y0 is not None else pair_of(e)[2]) for e in monitor]
        with isolate_rng():
            torch.manual_seed(self.seed)
            improved = pl_module.improve(pairs, self.temperature)
        scores = [datamodule.preferences.score(x, y) for (x, _), y in zip(pairs, improved)]
        if any(s is None for s in scores):
            raise ValueError("early_stop_patience monitors the exact score, which this task does not have: unset "
                             "early_stop_patience")
        return sum(scores) / len(scores)

    def _early_stopping(self, trainer: Trainer, pl_module: LightningModule) -> None:
        epoch, score = trainer.current_epoch, self.monitor_score(pl_module, trainer.datamodule)
        self.monitored.append((epoch, score))
        if self.best is None or score > self.best["score"]:
            # trainable weights only (LoRA: the adapters and value head; frozen ones never change), kept on the CPU
            weights = {name: p.detach().to("cpu", copy=True) for name, p in pl_module.named_parameters()
                       if p.requires_grad}
            self.best = {"epoch": epoch, "score": score, "metrics": dict(self.last), "usage": dict(self.usage),
                         "weights": weights}
            self.wait = 0
        else:
            self.wait += 1
            if self.wait >= self.early_stop_patience:  # every rank computed the same score: all stop together
                trainer.should_stop = True
                rank_zero_info(f"early stopping after epoch {epoch}: the monitored exact score ({score:.3f}) has not "
                               f"beaten epoch {self.best['epoch']}'s {self.best['score']:.3f} for {self.wait} epochs")
        if trainer.is_global_zero and trainer.logger is not None:
            trainer.logger.log_metrics({"pit_eval/early_stop/monitor_exact_score": score,
                                        "pit_eval/early_stop/best_epoch": float(self.best["epoch"])},
                                       step=trainer.global_step)

    def _keep_best(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Put the best epoch's weights back (before the module's export) and report its numbers."""
        best, last_epoch = self.best, self.monitored[-1][0]
        if best["epoch"] != last_epoch:
            params = dict(pl_module.named_parameters())
            with torch.no_grad():
                for name, saved in best["weights"].items():
                    params[name].copy_(saved)
        self.last, self.usage = best["metrics"], best["usage"]
        history = [[e, s] for e, s in self.monitored]
        self._save(trainer, best["epoch"], early_stop={"kept_epoch": best["epoch"], "last_epoch": last_epoch,
                                                       "monitor_exact_score": history})
        rank_zero_info(f"early stopping: exporting epoch {best['epoch']}'s policy (monitored exact score "
                       f"{best['score']:.3f}; the last epoch trained was {last_epoch})")
        if trainer.is_global_zero and trainer.logger is not None:
            trainer.logger.log_metrics({"pit_eval/early_stop/kept_epoch": float(best["epoch"])}, step=trainer.global_step)

    def table(self) -> str:
        if not self.last:
            return "(no PIT evaluation yet)"
        source = {"original_policy": "samples of the original policy", "dataset": "the dataset's rejected responses"}
        parts = [(f"y_0 = {source[self.y0_source]}", "")]
        if any(name.startswith(DATASET) for name in self.last):
            parts.append((f"y_0 = {source['dataset']}", DATASET))
        text = []
        for title, prefix in parts:
            names = [n for n in LABELS if prefix + n in self.last]
            rows = [" | ".join(["iteration", *(LABELS[n] for n in names)]), " | ".join(["---"] * (len(names) + 1))]
            for i in range(self.iterations + 1):
                values = [self.last[prefix + n] for n in names]
                rows.append(" | ".join([str(i), *(f"{v[i]:.3f}" if i < len(v) else "" for v in values)]))
            text.append(f"PIT iterative improvement (held-out; iteration 0 = the references), {title}:\n" + "\n".join(rows))
        if self.usage:
            text.append("judge usage: " + ", ".join(f"{k} {v:g}" for k, v in self.usage.items()))
        return "\n\n".join(text)

