"""PIT's curriculum comparison at small scale, evaluated as the paper does: SFT only, RL round 1 only, RL round 2
only, both rounds; the same data, seeds and RL budget (epochs) for every arm; two tables (markdown + CSV) and one
plot (SVG).

    python -m experiments.pit_table --config experiments/pit_cpu.yaml

Per seed s, in ``{out_dir}/runs/seed{s}/``, the pipeline of ``configs/pit/`` runs once: the gap reward model R_PIT
(``rm``); an independent evaluation reward model (``rm_eval``: the same recipe on another draw of the preference
data, its own folds and tokenizer; the policy never trains against it); the original policy M_P (``policy``, whose
samples are round 2's references and the evaluation's y_0); PIT's SFT policy (``sft``). Then one RL run per arm from
the SFT policy, each ``rl_epochs`` epochs: round 1 only (all epochs on the dataset's references), round 2 only (all
on the original policy's samples), both (the first ``round1_epochs`` on round 1). "SFT only" is the SFT policy.
``kl_coefs``, ``rm_pairs`` and ``advantages`` add one set of RL arms per value (``both_rounds-kl0.05``,
``both_rounds-rm9000``, ``both_rounds-rloo`` ...); the critic-free estimators (RLOO, GRPO) sample
``samples_per_prompt`` answers on N / k prompts, so every arm rolls out N answers per epoch as PPO does. A value N of
``rm_pairs`` trains one more gap reward model per seed (``rm{N}``) on a reward-model fold of N pairs, from its own
draw of the synthetic writer (seed + 2000), with its own tokenizer trained on that draw as ``rm_eval``'s, so the SFT
and RL folds stay those of every other arm; that variant's arms train against it. Its training time grows with N:
9000 pairs take about 3x the 3000 of the configs' reward-model fold.

A seed changes the preference data draw and its folds (``--data.init_args.preferences.init_args.seed``,
``--data.init_args.seed``), the initialisation (``--seed_everything``) and the RL rollouts' sampling
(``--trainer.callbacks.seed``: OnlineRollouts, the RL configs' last callback).

Evaluation (``callbacks.pit_eval.IterativeImprovementEval``, configured here for the SFT and every RL run alike):
y_0 = the original policy's samples on the held-out prompts, written once per seed to ``runs/seed{s}/y0.jsonl`` (by
the first evaluated run) and read by every arm; y_i = the policy improving y_{i-1}. Reported per arm and iteration
i = 1..3, mean ± sample std over seeds: the exact-score gain over y_0, the win and lose rates by the exact score and
Δ = win - lose (the headline), and the independent reward model's win rate. The second table is the same with
y_0 = the dataset's rejected responses. The win rate of the reward model the policy was trained against is only in
the CSV, marked as not a measure. Every evaluated stage generates with the same ``max_new_tokens``. A third
table gives every reward model's held-out accuracy per ordering of the gap loss (the last validation's
``rm/val_acc_*``, on its own fold's held-out pairs), to read the RL arms against the reward model they trained on;
a fourth how well the gap reward ranked each RL arm's own rollouts by their exact-score gain, per round
(``rollout_concordance``): what the reward told RL about the answers it actually sampled.

Runs are ``python cli.py fit`` (command saved as ``command.sh``; ``experiments.runs``). A run is finished when its
export exists (``hf_model/`` of the policies, ``reward_model/`` of the reward models): an RL arm killed midway has a
``pit_eval.json`` of its last epoch but no export, and resumes from its ``checkpoints/last.ckpt``
(``--ckpt_path=last``); re-running the command continues the table.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from datamodules.interaction_log import read_shard
from experiments.report import cell, line_chart_svg, markdown_table, mean_std, write_csv
from experiments.runs import REPO, run_command

STAGES = ("rm", "sft", "policy", "rl")
ARMS = {"sft_only": "SFT only", "round1_only": "RL round 1 only", "round2_only": "RL round 2 only",
        "both_rounds": "RL both rounds"}
ADVANTAGES = ("gae", "rloo", "grpo")
CRITIC_FREE = ("rloo", "grpo")
#: the tables' columns, per iteration
METRICS = {"exact_gain": "exact-score gain", "exact_win_rate": "win", "exact_lose_rate": "lose",
           "exact_delta": "Δ = win - lose", "independent_rm_win_rate": "independent RM win rate"}
#: in the CSV only: the win rate by the reward model the policy was trained against
TRAINED_AGAINST = {"rm_win_rate": "trained-against RM win rate (not a measure)"}
TABLES = {"original_policy": "y_0 = samples of the original policy (the paper's evaluation)",
          "dataset": "y_0 = the dataset's rejected responses y_l"}
#: the independent evaluation reward model trains on the preference draw ``seed + RM_EVAL_SEED_OFFSET``
RM_EVAL_SEED_OFFSET = 1000
#: a gap reward model on ``rm_pairs`` pairs trains on the draw ``seed + RM_PAIRS_SEED_OFFSET``
RM_PAIRS_SEED_OFFSET = 2000
#: the reward models' held-out accuracies in the third table (``rm/val_acc_<name>``): the gap loss's five orderings
#: (w = the preferred response, l = the other; first letter the scored response, second the reference), then
#: "pairwise", the plain preference accuracy r(w | l) > r(l | w)
RM_ACCURACIES = ("wl>ww", "wl>ll", "wl>lw", "ww>lw", "ll>lw", "pairwise")
#: a rollout buffer's curriculum round, from who wrote its references (``modules.pit.PITPolicy.feedback``)
ROUND_OF_REFERENCES = {"dataset": 1, "original_policy": 2}


@dataclass(frozen=True)
class Variant:
    """One set of RL arms: the config's KL coefficient, gap reward model and advantage estimator, or the given ones
    (``rm_pairs``: the reward model trained on that many pairs, ``rm{rm_pairs}``)."""

    kl_coef: float | None = None
    advantage: str | None = None
    rm_pairs: int | None = None

    @property
    def suffix(self) -> str:
        """Run-folder suffix (empty for the config's settings, so those runs keep their plain arm names)."""
        return ((f"-kl{self.kl_coef:g}" if self.kl_coef is not None else "")
                + (f"-rm{self.rm_pairs}" if self.rm_pairs is not None else "")
                + (f"-{self.advantage}" if self.advantage else ""))

    @property
    def reward_model(self) -> str:
        """The folder (under ``runs/seed{s}/``) of the gap reward model this variant's arms train against."""
        return "rm" if self.rm_pairs is None else f"rm{self.rm_pairs}"

    def label(self, samples_per_prompt: int) -> str:
        parts = ([f"β={self.kl_coef:g}"] if self.kl_coef is not None else []) + (
            [f"RM {self.rm_pairs} pairs"] if self.rm_pairs is not None else []) + (
            [self.advantage.upper() + (f" k={samples_per_prompt}" if self.advantage in CRITIC_FREE else "")]
            if self.advantage else [])
        return f" ({', '.join(parts)})" if parts else ""

    def flags(self, num_rl_prompts: int | None, samples_per_prompt: int) -> list[str]:
        """``cli.py`` flags; critic-free estimators roll out ``samples_per_prompt`` answers on N / k prompts, so the
        answers per epoch (the sample budget) stay PPO's N."""
        flags = [f"--model.init_args.kl_coef={self.kl_coef:g}"] if self.kl_coef is not None else []
        if self.advantage is not None:
            flags.append(f"--model.init_args.advantage={self.advantage}")
        if self.advantage in CRITIC_FREE:
            if num_rl_prompts is None or num_rl_prompts % samples_per_prompt:
                raise ValueError(f"advantage {self.advantage} with samples_per_prompt={samples_per_prompt} needs "
                                 f"--data.init_args.num_rl_prompts divisible by it (got {num_rl_prompts}) to keep "
                                 "PPO's sample budget: change samples_per_prompt or num_rl_prompts")
            flags += [f"--model.init_args.samples_per_prompt={samples_per_prompt}",
                      f"--data.init_args.num_rl_prompts={num_rl_prompts // samples_per_prompt}"]
        return flags


@dataclass(frozen=True)
class Run:
    """A table row's run: an arm of one variant; ``name`` is its folder under ``runs/seed{s}/``."""

    arm: str
    variant: Variant = Variant()

    @property
    def name(self) -> str:
        return "sft" if self.arm == "sft_only" else self.arm + self.variant.suffix

    def label(self, samples_per_prompt: int) -> str:
        return ARMS[self.arm] + ("" if self.arm == "sft_only" else self.variant.label(samples_per_prompt))


def plan_runs(arms: list[str], kl_coefs: list[float] | None, advantages: list[str] | None,
              rm_pairs: list[int | None] | None = None) -> list[Run]:
    """SFT only once, then every RL arm of every (KL coefficient, reward model, advantage) variant."""
    variants = [Variant(kl, adv, pairs) for kl, pairs, adv in
                itertools.product(kl_coefs or [None], rm_pairs or [None], advantages or [None])]
    runs = [Run("sft_only")] if "sft_only" in arms else []
    return runs + [Run(arm, v) for v in variants for arm in arms if arm != "sft_only"]


def export_done(run_dir: Path, export: str = "hf_model") -> Path:
    """The file that marks a finished run: the export's tokenizer, written after the weights
    (``modules.common.save_hf_folder``), so a run killed while exporting is not taken as done."""
    return run_dir / export / "tokenizer_config.json"


def seed_flags(seed: int) -> list[str]:
    """Everything a seed changes: initialisation, the preference data draw and its folds."""
    return [f"--seed_everything={seed}", f"--data.init_args.preferences.init_args.seed={seed}",
            f"--data.init_args.seed={seed}"]


def stage_config(name: str, root: Path, out: Path, eval_args: dict | None = None, checkpoint: bool = False,
                 reward_model: str = "rm") -> Path:
    """``configs/pit/{name}.yaml`` with its run folder ``runs/pit-cl`` moved to ``root`` and its gap reward model
    ``rm/reward_model`` to ``{reward_model}/reward_model``; ``eval_args`` update the
    ``IterativeImprovementEval`` callback's arguments (it is not the last callback, so no flag reaches it);
    ``checkpoint`` adds a ``ModelCheckpoint`` keeping ``checkpoints/last.ckpt`` (to resume a killed run) unless the
    config has one, inserted before the last callback so ``--trainer.callbacks.<arg>`` flags still reach that one."""
    text = (REPO / "configs" / "pit" / f"{name}.yaml").read_text()
    text = text.replace("runs/pit-cl/rm/reward_model", f"runs/pit-cl/{reward_model}/reward_model").replace(
        "runs/pit-cl", str(root))
    if eval_args is not None or checkpoint:
        config = yaml.safe_load(text)
        callbacks = config["trainer"].setdefault("callbacks", [])
        if eval_args is not None:
            evals = [c for c in callbacks if c["class_path"].endswith("IterativeImprovementEval")]
            if len(evals) != 1:
                raise ValueError(f"configs/pit/{name}.yaml: expected one IterativeImprovementEval callback, found {len(evals)}")
            evals[0]["init_args"] = {**(evals[0].get("init_args") or {}), **eval_args}
        if checkpoint and not any(c["class_path"].endswith("ModelCheckpoint") for c in callbacks):
            callbacks.insert(max(0, len(callbacks) - 1), {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                                                          "init_args": {"save_top_k": 1, "save_last": "link"}})
        text = yaml.safe_dump(config, sort_keys=False)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return out


def rl_flags(arm: str, rl_epochs: int, round1_epochs: int, name: str | None = None) -> list[str]:
    rounds = {"round1_only": rl_epochs, "round2_only": 0, "both_rounds": round1_epochs}[arm]
    return [f"--trainer.max_epochs={rl_epochs}", f"--model.init_args.round1_epochs={rounds}",
            f"--trainer.logger.init_args.version={name or arm}"]


def num_rl_prompts(flags: list[str]) -> int | None:
    """N, the RL prompts per epoch: the last ``--data.init_args.num_rl_prompts`` of ``flags``, else the RL config's."""
    value = yaml.safe_load((REPO / "configs" / "pit" / "constrained_lists_rl.yaml").read_text())["data"]["init_args"].get(
        "num_rl_prompts")
    key = "--data.init_args.num_rl_prompts"
    for flag, after in itertools.pairwise([*flags, ""]):
        if flag.startswith(key + "="):
            value = flag.split("=", 1)[1]
        elif flag == key:
            value = after
    return None if value in (None, "null", "None") else int(value)


@dataclass(frozen=True)
class Settings:
    """What every seed's pipeline shares (``main``'s arguments)."""

    rl_epochs: int
    round1_epochs: int
    samples_per_prompt: int
    early_stop_patience: int | None
    monitor_prompts: int
    max_new_tokens: int
    flags: tuple[str, ...]
    stage_flags: dict[str, list[str]]


def pipeline(root: Path, seed: int, runs: list[Run], settings: Settings
             ) -> tuple[dict[str, dict], dict[str, dict], dict[str, dict]]:
    """One seed's reward models, original policy, SFT and RL arms; returns ``{run name: pit_eval.json}``,
    ``{reward model folder: its held-out accuracies}`` and ``{RL run name: its rollout_concordance}``."""
    s = settings
    base = ["--trainer.enable_progress_bar=false", *s.flags]
    generation = [f"--model.init_args.max_new_tokens={s.max_new_tokens}"]  # one length for every evaluated policy
    configs = root / "configs"
    # the evaluation, the same for SFT and every RL arm: y_0 from one file, the independent reward model's judgement
    eval_args = {"original_policy": str(root / "policy" / "hf_model"), "y0_path": str(root / "y0.jsonl"),
                 "independent_judge": {"class_path": "feedback.reward_model.RewardModelJudge",
                                       "init_args": {"path": str(root / "rm_eval" / "reward_model")}},
                 "monitor_prompts": s.monitor_prompts}
    rl_eval = yaml.safe_load((REPO / "configs" / "pit" / "constrained_lists_rl.yaml").read_text())["trainer"]["callbacks"]
    eval_args |= {k: v for c in rl_eval if c["class_path"].endswith("IterativeImprovementEval")
                  for k, v in c["init_args"].items() if k in ("iterations", "num_prompts", "temperature")}
    eval_seed = seed + RM_EVAL_SEED_OFFSET
    more_pairs = sorted({run.variant.rm_pairs for run in runs} - {None})  # one more gap reward model each
    stages = [
        ("rm", "constrained_lists_reward_model", None, [*seed_flags(seed), *s.stage_flags.get("rm", [])],
         root / "rm" / "reward_model" / "config.json"),
        ("rm_eval", "constrained_lists_reward_model", None,
         [*seed_flags(eval_seed), f"--data.init_args.log_dir={root / 'rm_eval'}",
          "--trainer.logger.init_args.version=rm_eval", *s.stage_flags.get("rm", [])],
         root / "rm_eval" / "reward_model" / "config.json"),
        *[(f"rm{pairs}", "constrained_lists_reward_model", None,
           [*seed_flags(seed + RM_PAIRS_SEED_OFFSET), f"--data.init_args.log_dir={root / f'rm{pairs}'}",
            f"--trainer.logger.init_args.version=rm{pairs}", *s.stage_flags.get("rm", []),
            f"--data.init_args.preferences.init_args.num_pairs={3 * pairs}"],  # three folds of `pairs`
           root / f"rm{pairs}" / "reward_model" / "config.json") for pairs in more_pairs],
        ("policy", "constrained_lists_sft", None,
         [*seed_flags(seed), "--data.init_args.stage=policy_sft", "--trainer.logger.init_args.version=policy",
          "--trainer.callbacks=[]", *generation, *s.stage_flags.get("policy", [])], export_done(root / "policy")),
        ("sft", "constrained_lists_sft", eval_args | {"every_epoch": False},
         [*seed_flags(seed), *generation, *s.stage_flags.get("sft", [])], export_done(root / "sft")),
    ]
    for name, config, evaluation, extra, done in stages:
        path = stage_config(config, root, configs / f"{name}.yaml", evaluation)
        run_command(root / name, ["fit", "--config", str(path), *base, *extra], done)
    results = {}
    rl_eval_args = eval_args | {"every_epoch": True, "early_stop_patience": s.early_stop_patience}
    reward_models = ["rm", *(f"rm{pairs}" for pairs in more_pairs)]
    rl_configs = {rm: stage_config("constrained_lists_rl", root, configs / ("rl.yaml" if rm == "rm" else f"rl-{rm}.yaml"),
                                   rl_eval_args, checkpoint=True, reward_model=rm) for rm in reward_models}
    prompts = num_rl_prompts([*s.flags, *s.stage_flags.get("rl", [])])
    for run in runs:
        if run.arm != "sft_only":
            # the variant's flags last: they override the shared ones (num_rl_prompts for critic-free arms)
            config = rl_configs[run.variant.reward_model]
            run_command(root / run.name, ["fit", "--config", str(config), *base, *seed_flags(seed),
                                          f"--trainer.callbacks.seed={seed}", *generation,
                                          *rl_flags(run.arm, s.rl_epochs, s.round1_epochs, run.name),
                                          *s.stage_flags.get("rl", []),
                                          *run.variant.flags(prompts, s.samples_per_prompt)],
                        export_done(root / run.name))
        results[run.name] = json.loads((root / run.name / "pit_eval.json").read_text())
    # each reward model's fold: the shared one for rm, its own draw's for the others (their log_dir)
    folds = {name: root / ("" if name == "rm" else name) / "preferences" / "rm.jsonl" for name in [*reward_models, "rm_eval"]}
    return (results, {name: accuracies | {"pairs": len(folds[name].read_text().splitlines())}
                      for name in folds if (accuracies := rm_accuracies(root / name))},
            {run.name: rollout_concordance(root / run.name) for run in runs if run.arm != "sft_only"})


def rollout_concordance(run_dir: Path) -> dict[tuple[int, str], list[float]]:
    """How well the gap reward ranked an RL run's own rollouts by the truth: per buffer (``rollouts/iter_*.jsonl``,
    in epoch order), over every two rollouts whose exact-score gains score(y) - score(y_ref) differ, the share
    whose gap rewards are ordered the same way (equal rewards count half; 0.5 = no better than chance). Keyed by
    (round, scope): round 1 where the references are the dataset's, 2 where the original policy's; scope ``all``
    pools the buffer (PPO whitens advantages across it), ``prompt`` takes only two samples of one prompt (what
    RLOO / GRPO compare; only buffers with k > 1 samples per prompt). Rollouts without exact scores are skipped."""
    by_round: dict[tuple[int, str], list[float]] = {}
    for path in sorted((run_dir / "rollouts").glob("iter_*.jsonl")):
        rows = [e for e in read_shard(path) if "quality" in e.scores]
        if len(rows) < 2:
            continue
        reward = torch.tensor([e.scores["gap_reward"] for e in rows], dtype=torch.float64)
        # exact scores are fifths: rounded, equal gains compare equal
        gain = torch.tensor([round(e.scores["quality"][1] - e.scores["quality"][0], 6) for e in rows], dtype=torch.float64)
        d_reward, d_gain = reward[:, None] - reward[None, :], gain[:, None] - gain[None, :]  # [n, n]
        agree = (d_reward * d_gain > 0).double() + 0.5 * (d_reward == 0).double()
        group = {question: i for i, question in enumerate(dict.fromkeys(e.question_id for e in rows))}
        prompt_of = torch.tensor([group[e.question_id] for e in rows])
        same_prompt = prompt_of[:, None] == prompt_of[None, :]  # [n, n]
        [references] = {e.turns[0].by for e in rows}  # one round per buffer
        for scope, pairs in (("all", torch.ones_like(same_prompt)), ("prompt", same_prompt)):
            counted = torch.triu(d_gain != 0, diagonal=1) & pairs
            if counted.any():
                by_round.setdefault((ROUND_OF_REFERENCES[references], scope), []).append(
                    float(agree[counted].sum() / counted.sum()))
    return by_round


def rm_accuracies(run_dir: Path) -> dict[str, float]:
    """A reward-model run's held-out accuracies, ``{ordering: value}`` (``RM_ACCURACIES``): each ``rm/val_acc_*``
    scalar's last value (the last validation) in the run's TensorBoard files, newest file last; ``{}`` without any."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    last = {}
    for events in sorted(run_dir.glob("events.out.tfevents.*"), key=lambda f: f.stat().st_mtime):
        accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
        accumulator.Reload()
        for name in RM_ACCURACIES:
            if (tag := f"rm/val_acc_{name}") in accumulator.Tags()["scalars"]:
                last[name] = accumulator.Scalars(tag)[-1].value
    return last


def main(
    out_dir: str = "results/pit",
    seeds: list[int] = [0, 1, 2],  # noqa: B006 - jsonargparse reads the default; it is never mutated
    arms: list[str] = list(ARMS),  # noqa: B006
    rl_epochs: int = 6,
    round1_epochs: int = 3,
    kl_coefs: list[float] | None = None,
    rm_pairs: list[int | None] | None = None,
    advantages: list[str] | None = None,
    samples_per_prompt: int = 4,
    early_stop_patience: int | None = None,
    monitor_prompts: int = 100,
    max_new_tokens: int = 32,
    flags: list[str] = [],  # noqa: B006
    stage_flags: dict[str, list[str]] = {},  # noqa: B006
) -> dict:
    """Run PIT's pipeline per seed and every arm, and write ``pit_table.{md,csv,svg}`` to ``out_dir``.

    Args:
        out_dir: where runs, tables and the plot go.
        seeds: one pipeline per seed (preference data draw and folds, model init, rollout sampling).
        arms: which of sft_only, round1_only, round2_only, both_rounds to report.
        rl_epochs: RL epochs (PPO iterations) of every RL arm.
        round1_epochs: of those, epochs on round 1 in the both-rounds arm.
        kl_coefs: one more set of RL arms per KL coefficient β (``--model.init_args.kl_coef``); None: the config's.
        rm_pairs: one more set of RL arms per gap reward model, trained on a reward-model fold of this many
            preference pairs (its own draw of the synthetic writer, ``runs/seed{s}/rm{N}``); ``null`` in the list:
            the reward model of the shared folds (``rm``). None: that one only. Crossed with ``kl_coefs``.
        advantages: one more set of RL arms per advantage estimator, ``gae`` (PPO's critic), ``rloo`` or ``grpo``
            (``--model.init_args.advantage``); None: the config's. Crossed with ``kl_coefs`` and ``rm_pairs``.
        samples_per_prompt: k of the critic-free estimators (rloo, grpo): k answers per prompt on N / k prompts,
            N = the RL stage's ``--data.init_args.num_rl_prompts``, so every arm samples N answers an epoch.
        early_stop_patience: stop an RL arm after this many epochs without a better held-out exact score of y_1
            (on ``monitor_prompts`` prompts apart from the reported ones) and export its best epoch (None: no
            early stopping).
        monitor_prompts: held-out prompts kept for early stopping, the same for every evaluated run (they decide
            which prompts are reported and which y_0 the seed's file holds).
        max_new_tokens: generation length of every evaluated policy (original policy, SFT, RL arms), so SFT and RL
            answers are compared at one length.
        flags: extra ``cli.py fit`` flags for every run (e.g. fewer pairs, a smaller model).
        stage_flags: extra flags for one stage's runs: ``rm`` (every reward model), ``sft``, ``policy`` (the
            original policy) or ``rl`` (every RL arm), e.g. a pretrained model and its learning rate.
    """
    unknown = set(arms) - set(ARMS)
    if unknown:
        raise ValueError(f"unknown arms {sorted(unknown)}; the arms are {', '.join(ARMS)}")
    if set(stage_flags) - set(STAGES):
        raise ValueError(f"stage_flags names {sorted(set(stage_flags) - set(STAGES))}; the stages are {', '.join(STAGES)}")
    if set(advantages or []) - set(ADVANTAGES):
        raise ValueError(f"advantages {sorted(set(advantages) - set(ADVANTAGES))}: choose from {', '.join(ADVANTAGES)}")
    if set(advantages or []) & set(CRITIC_FREE) and samples_per_prompt < 2:
        raise ValueError(f"samples_per_prompt={samples_per_prompt}: rloo and grpo compare answers to one prompt, "
                         "give at least 2")
    if any(k < 0 for k in kl_coefs or []):
        raise ValueError(f"kl_coefs {kl_coefs}: a KL coefficient is 0 or more")
    if any(n is not None and n < 10 for n in rm_pairs or []):
        raise ValueError(f"rm_pairs {rm_pairs}: a reward model needs at least 10 pairs (its held-out share is 10%)")
    for name, values in (("kl_coefs", kl_coefs), ("rm_pairs", rm_pairs), ("advantages", advantages)):
        if values and len(set(values)) < len(values):
            raise ValueError(f"{name} {values} repeats a value: each value is one set of RL arms")
    # the runner sets these per seed and per reward model; a stage flag (given last) would silently override them
    owned = ("--seed_everything", "--data.init_args.seed", "--data.init_args.preferences.init_args.seed",
             "--data.init_args.log_dir", "--trainer.logger.init_args.version")
    clashes = [f for f in [*flags, *itertools.chain(*stage_flags.values())] if f.split("=", 1)[0] in owned]
    if clashes:
        raise ValueError(f"flags {clashes}: the runner sets the seeds, folders and run names of every stage itself "
                         "(use seeds and out_dir)")
    settings = Settings(rl_epochs, round1_epochs, samples_per_prompt, early_stop_patience, monitor_prompts,
                        max_new_tokens, tuple(flags), dict(stage_flags))
    runs = plan_runs(list(arms), kl_coefs, advantages, rm_pairs)
    out = Path(out_dir).resolve()
    results, accuracies, concordance = {}, {}, {}
    for seed in seeds:
        results[seed], accuracies[seed], concordance[seed] = pipeline(out / "runs" / f"seed{seed}", seed, runs, settings)
    budget = (f"{rl_epochs} RL epochs, {round1_epochs} in round 1 for both rounds, max_new_tokens {max_new_tokens}"
              + (f", early stopping after {early_stop_patience} epochs without gain" if early_stop_patience else ""))
    return write_report(out, results, [(r.name, r.label(samples_per_prompt)) for r in runs], budget, accuracies,
                        concordance)


def per_iteration(metrics: dict, prefix: str = "") -> dict[str, list[float]]:
    """One evaluation's reported metrics by iteration (index 0 = y_0): gain, win / lose rates, Δ, RM win rates;
    ``prefix``: ``dataset/`` for the second table of an evaluation whose y_0 came from the original policy."""
    names = ("exact_win_rate", "exact_lose_rate", "exact_delta", "independent_rm_win_rate", "rm_win_rate")
    out = {name: metrics[prefix + name] for name in names if prefix + name in metrics}
    if prefix + "exact_score" in metrics:
        scores = metrics[prefix + "exact_score"]
        out["exact_gain"] = [score - scores[0] for score in scores]
    if "exact_delta" not in out and "exact_win_rate" in out:  # written before Δ was
        out["exact_delta"] = [w - lose for w, lose in zip(out["exact_win_rate"], out["exact_lose_rate"])]
    return out


def by_table(metrics: dict) -> dict[str, dict[str, list[float]]]:
    """``{table: per-iteration metrics}`` of a ``pit_eval.json``: with y_0 from the original policy, both tables;
    from the dataset (older runs), only the second."""
    if metrics.get("y0") == "original_policy":
        return {"original_policy": per_iteration(metrics), "dataset": per_iteration(metrics, "dataset/")}
    return {"dataset": per_iteration(metrics)}


def rm_label(name: str) -> str:
    """The reward-model table's row label of a reward-model folder (``rm``, ``rm{N}``, ``rm_eval``)."""
    if name == "rm":
        return "R_PIT, the shared folds' reward-model fold"
    if name == "rm_eval":
        return "independent RM (evaluation only)"
    return f"R_PIT, {name[2:]} pairs (own draw)"


def write_report(out: Path, results: dict[int, dict[str, dict]], runs: list[tuple[str, str]], budget: str,
                 accuracies: dict[int, dict[str, dict[str, float]]] | None = None,
                 concordance: dict[int, dict[str, dict[tuple[int, str], list[float]]]] | None = None) -> dict:
    """``pit_table.{md,csv,svg}`` from ``results[seed][run name]`` (each run's ``pit_eval.json``); ``runs``:
    ``(run name, row label)`` in table order; ``accuracies[seed][reward-model folder]``: its held-out accuracies
    (``rm_accuracies``), the third table; ``concordance[seed][run name]``: ``rollout_concordance``, the fourth.
    Returns ``{"table / run / metric / i": values over seeds}``, with ``{"reward_models / folder / ordering": ...}``
    and ``{"concordance / run / column": per-seed means over the round's buffers}``."""
    seeds = sorted(results)
    parsed = {s: {name: by_table(m) for name, m in results[s].items()} for s in seeds}
    reported = {**METRICS, **TRAINED_AGAINST}
    values, csv_rows = {}, []
    for table, name, metric in itertools.product(TABLES, [n for n, _ in runs], reported):
        per_seed = [parsed[s][name][table][metric] for s in seeds
                    if name in parsed[s] and table in parsed[s][name] and metric in parsed[s][name][table]]
        for i in range(1, max((len(v) for v in per_seed), default=0)):
            values[(table, name, metric, i)] = [v[i] for v in per_seed if i < len(v)]
    iterations = sorted({i for (*_, i) in values})
    label = dict(runs)
    lines = [f"# PIT table ({budget}; seeds {', '.join(map(str, seeds))})", "",
             ("Held-out y_0 improved i times by the policy (y_i = M_PIT(x, y_{i-1})); against y_0: the exact-score "
             "gain, win and lose rates by the exact score, Δ = win - lose, and the win rate of a reward model the "
             "policy was not trained against; mean ± std over seeds. The trained-against reward model's win rate is "
             "in the CSV only (not a measure: RL raises it either way).")]
    for table, title in TABLES.items():
        if not any(key[0] == table for key in values):
            continue
        header = ["arm", "i", *METRICS.values()]
        rows = [[label[name] if i == iterations[0] else "", str(i),
                 *(cell(values.get((table, name, m, i), []), 3) for m in METRICS)]
                for name, _ in runs for i in iterations]
        lines += ["", f"## {title}", "", markdown_table(header, rows)]
        for (t, name, metric, i), v in values.items():
            if t == table and v:
                csv_rows.append([table, label[name], metric, i, len(v), *(f"{x:.4f}" for x in mean_std(v)),
                                 " ".join(f"{x:.4f}" for x in v)])
    kept = {label[name]: [results[s][name]["early_stop"]["kept_epoch"] for s in seeds
                          if "early_stop" in results[s].get(name, {})] for name, _ in runs}
    if any(kept.values()):
        lines += ["", "Early stopping kept epochs (per seed): " + "; ".join(f"{k}: {v}" for k, v in kept.items() if v)]
    accuracies = accuracies or {}
    models = list(dict.fromkeys(name for s in seeds for name in accuracies.get(s, {})))
    rm_values = {(name, o): [accuracies[s][name][o] for s in seeds if o in accuracies.get(s, {}).get(name, {})]
                 for name in models for o in RM_ACCURACIES}
    if models:
        lines += ["", "## Reward models: held-out accuracy per ordering of the gap loss", "",
                  ("r(y | y_ref) with w = the preferred response, l = the other: the share of held-out pairs (10% of "
                   "each model's own reward-model fold) where the first scores above the second; pairwise = the plain "
                   "preference accuracy, r(w | l) > r(l | w)."), "",
                  markdown_table(["reward model", "pairs in its fold", *RM_ACCURACIES],
                                 [[rm_label(name), "/".join(map(str, sorted({accuracies[s][name]["pairs"] for s in seeds
                                                                             if name in accuracies.get(s, {})}))),
                                   *(cell(rm_values[name, o], 3) for o in RM_ACCURACIES)] for name in models])]
        csv_rows += [["reward_models", rm_label(name), f"val_acc_{o}", "", len(v), *(f"{x:.4f}" for x in mean_std(v)),
                      " ".join(f"{x:.4f}" for x in v)] for (name, o), v in rm_values.items() if v]
    concordance = concordance or {}
    # per seed, the mean over the round's buffers; then mean ± std over seeds
    columns = {(1, "all"): "round 1 (dataset references)", (2, "all"): "round 2 (original policy's answers)",
               (1, "prompt"): "round 1, within a prompt", (2, "prompt"): "round 2, within a prompt"}
    agreement = {(name, key): [mean_std(concordance[s][name][key])[0] for s in seeds
                               if key in concordance.get(s, {}).get(name, {})] for name, _ in runs for key in columns}
    shown = [key for key in columns if any(agreement[name, key] for name, _ in runs)]
    if shown:
        lines += ["", "## The gap reward on each RL arm's own rollouts", "",
                  ("Over every two rollouts of one buffer whose exact-score gains score(y) - score(y_ref) differ (all "
                   "of the buffer, or two samples of one prompt: what RLOO / GRPO compare), the share whose gap "
                   "rewards are ordered the same way (0.5 = chance), averaged over the round's buffers (epochs), then "
                   "mean ± std over seeds."), "",
                  markdown_table(["arm", *(columns[key] for key in shown)],
                                 [[label[name], *(cell(agreement[name, key], 3) for key in shown)]
                                  for name, _ in runs if any(agreement[name, key] for key in shown)])]
        csv_rows += [["rollout_concordance", label[name], columns[key], "", len(v), *(f"{x:.4f}" for x in mean_std(v)),
                      " ".join(f"{x:.4f}" for x in v)] for (name, key), v in agreement.items() if v]
    (out / "pit_table.md").write_text("\n".join(lines) + "\n")
    write_csv(out / "pit_table.csv", ["table", "arm", "metric", "iteration", "seeds", "mean", "std", "values"], csv_rows)
    plotted = "original_policy" if any(key[0] == "original_policy" for key in values) else "dataset"
    series = {label[name]: [values.get((plotted, name, "exact_delta", i), []) for i in iterations] for name, _ in runs}
    (out / "pit_table.svg").write_text(line_chart_svg(series, iterations, "inference iteration",
                                                      "Δ = win - lose by the exact score", f"PIT ({TABLES[plotted]})"))
    print("\n".join(lines))
    return ({f"{t} / {n} / {m} / {i}": v for (t, n, m, i), v in values.items()}
            | {f"reward_models / {n} / {o}": v for (n, o), v in rm_values.items() if v}
            | {f"concordance / {n} / {columns[key]}": v for (n, key), v in agreement.items() if v})


if __name__ == "__main__":
    from jsonargparse import CLI

    CLI(main, as_positional=False)
