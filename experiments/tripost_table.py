"""TriPosT's main comparison at small scale: every arm trained and evaluated with the same model, data, seeds and
compute budget (epochs), then one table (markdown + CSV) and one plot (SVG).

    python -m experiments.tripost_table --config experiments/tripost_cpu.yaml     # tiny models, 2 CPU cores

Every arm starts from M_0, the ft-rationale model (W epochs of SFT on the gold rationales), as the paper starts
TriPosT from its ft-rationale checkpoint; each arm then trains T*e more epochs (T iterations of e epochs):

- **ft rationale**: M_0 itself (the paper's baseline row).
- **ft rationale, +T*e epochs** (``ft_rationale_continued``): M_0 trained T*e more epochs on the gold rationales
  at the iteration learning rate: the control for "TriPosT only trains longer".
- **ft SI demo**: M_0, then T*e epochs on self-improvement demonstrations written entirely by the teacher,
  attempts included (``callbacks.rollouts.TeacherDemos``; one round, reference §7).
- **TriPosT t=k**: M_0, then T iterations of e epochs on the student's own rollouts edited by the teacher; one
  run, the row t=k is the model after iteration k.
- **TriPosT, no re-balancing**: the same with ``improve_data_ratio`` 0 (all non-improvement examples kept),
  reported at t=T.

M_0 is one model per task, trained with ``warmup_seed`` (the paper has one M_0 checkpoint); the seeds vary what
follows it (rollout sampling, batch order). ``warmup_per_seed`` trains one M_0 per seed instead, so the spread
includes M_0's own.

Columns: accuracy (%) on the seen / unseen / all test questions, without ("greedy attempt") and with test-time
self-improvement (the answer after the model's own feedback and updates), mean ± sample standard deviation over
the seeds. Every run is ``python cli.py fit --config <task config> <flags>`` in
``{out_dir}/runs/{task}/{arm}/seed{s}/`` (M_0 in ``{task}/warmup/seed{s}/``; the command is saved there as
``command.sh``); a run whose ``eval_table.json`` already holds its last stage is reused (only with the settings it
was started with: ``experiments.runs``), so re-running the command resumes the table. ``jobs`` runs that many arm
runs at a time once the M_0s exist.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import yaml

from experiments.report import bar_chart_svg, cell, markdown_table, mean_std, write_csv
from experiments.runs import REPO, run_command

ARMS = ("ft_rationale", "ft_rationale_continued", "ft_si_demo", "tripost", "tripost_no_rebalance")
GROUPS = ("seen", "unseen", "total")


@dataclass(frozen=True)
class Row:
    """A table row: which arm's run, and which of its stages (0 = the warm-up, k = after iteration k)."""

    label: str
    arm: str
    stage: int


def rows_for(arms: list[str], iterations: int, epochs_per_iteration: int = 1) -> list[Row]:
    rows = []
    for arm in arms:
        if arm == "ft_rationale":
            rows.append(Row("ft rationale", arm, 0))
        elif arm == "ft_rationale_continued":
            rows.append(Row(f"ft rationale, +{iterations * epochs_per_iteration} epochs", arm, 0))
        elif arm == "ft_si_demo":
            rows.append(Row("ft SI demo", arm, 1))
        elif arm == "tripost":
            rows += [Row(f"TriPosT t={t}", arm, t) for t in range(1, iterations + 1)]
        elif arm == "tripost_no_rebalance":
            rows.append(Row(f"TriPosT t={iterations}, no re-balancing", arm, iterations))
        else:
            raise ValueError(f"unknown arm {arm!r}; the arms are {', '.join(ARMS)}")
    return rows


def warmup_flags(seed: int, warmup_epochs: int) -> list[str]:
    """M_0: the gold-rationale stage alone (no rollouts)."""
    return [f"--seed_everything={seed}", f"--trainer.callbacks.seed={seed}", f"--trainer.max_epochs={warmup_epochs}",
            f"--model.init_args.warmup_epochs={warmup_epochs}"]


def run_flags(arm: str, seed: int, m0: Path, epochs_per_iteration: int, iterations: int,
              iteration_lr: float) -> list[str]:
    """The ``cli.py fit`` flags that make ``arm`` out of a TriPosT config, starting from M_0's exported folder
    ``m0`` (T*e epochs for every arm)."""
    total = iterations * epochs_per_iteration
    flags = [f"--seed_everything={seed}", f"--trainer.callbacks.seed={seed}", f"--model.init_args.model={m0}",
             f"--data.init_args.tokenizer={m0}", f"--trainer.max_epochs={total}", "--model.init_args.warmup_epochs=0",
             f"--model.init_args.epochs_per_iteration={epochs_per_iteration}"]
    if arm == "ft_rationale_continued":  # one more gold stage of T*e epochs: no rollouts ever run
        flags += [f"--model.init_args.warmup_epochs={total}", f"--model.init_args.lr={iteration_lr}"]
    elif arm == "ft_si_demo":  # one round of teacher-written demos, trained for all T*e epochs
        flags.append(f"--model.init_args.epochs_per_iteration={total}")
    elif arm == "tripost_no_rebalance":
        flags.append("--data.init_args.improve_data_ratio=0")
    elif arm != "tripost":
        raise ValueError(f"{arm!r} is not trained from M_0; the arms that are: {', '.join(ARMS[1:])}")
    return flags


def arm_config(base: Path, arm: str, error_rate: float, out: Path) -> Path:
    """The task config, with the rollout callback replaced by ``TeacherDemos`` for ft SI demo."""
    config = yaml.safe_load(base.read_text())
    if arm == "ft_si_demo":
        callbacks = config["trainer"]["callbacks"]
        rollouts = callbacks[-1]
        if not rollouts["class_path"].endswith("OnlineRollouts"):
            raise ValueError(f"{base}: the last callback must be callbacks.rollouts.OnlineRollouts (ft SI demo replaces it)")
        kept = {k: v for k, v in rollouts.get("init_args", {}).items() if k in ("teacher", "max_updates", "num_questions")}
        callbacks[-1] = {"class_path": "callbacks.rollouts.TeacherDemos", "init_args": kept | {"error_rate": error_rate}}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"# {arm} arm of experiments.tripost_table, from {base}\n" + yaml.safe_dump(config, sort_keys=False))
    return out


def m0_dir(out: Path, task: str, seed: int) -> Path:
    """M_0's run folder: its training writes it, every arm's flags point at its ``hf_model/`` export."""
    return out / "runs" / task / "warmup" / f"seed{seed}"


def given_m0_rows(task: str, folder: Path, warmup_per_seed: bool) -> list[dict]:
    """The evaluation rows of an M_0 trained before, after checking that the arms can start from it."""
    if warmup_per_seed:
        raise ValueError(f"m0 gives one M_0 for {task!r}; warmup_per_seed wants one per seed: drop one of them")
    for needed in ("eval_table.json", "hf_model/config.json"):
        if not (folder / needed).exists():
            raise ValueError(f"m0 for {task!r}: {folder / needed} does not exist; give the folder of a finished "
                             "ft-rationale run (cli.py fit writes eval_table.json and the hf_model/ export)")
    rows = json.loads((folder / "eval_table.json").read_text())
    if not any(row["stage"] == 0 for row in rows):
        raise ValueError(f"m0 for {task!r}: {folder / 'eval_table.json'} has no stage-0 (ft rationale) row")
    return rows


def run(run_dir: Path, config: Path, flags: list[str], last_stage: int, export: bool = False,
        threads: int | None = None) -> list[dict]:
    """Fit one run (unless its ``eval_table.json`` already holds ``last_stage`` and, with ``export``, its
    ``hf_model/`` export, written last, exists) and return its evaluation rows."""
    table = run_dir / "eval_table.json"
    done = run_dir / "hf_model" / "config.json" if export else table
    finished = done.exists() and table.exists() and any(r["stage"] == last_stage for r in json.loads(table.read_text()))
    if not finished and table.exists():
        table.unlink()  # a killed run's partial table: the resumed run rewrites it whole
    run_command(run_dir, ["fit", "--config", str(config), *flags, f"--trainer.logger.init_args.save_dir={run_dir}",
                          "--trainer.enable_progress_bar=false"], done, threads)
    return json.loads(table.read_text())


def run_all(jobs: dict[tuple, dict], parallel: int) -> dict[tuple, list[dict]]:
    """``run(**kwargs)`` for every job, ``parallel`` at a time with the cores split between them; every job runs
    (or fails) before the first failure is raised, so no finished work is lost."""
    threads = None if parallel == 1 else max(1, len(os.sched_getaffinity(0)) // parallel)  # one at a time: no cap
    with ThreadPoolExecutor(parallel) as pool:
        futures = {key: pool.submit(run, **kwargs, threads=threads) for key, kwargs in jobs.items()}
        wait(futures.values())
    failed = [error for future in futures.values() if (error := future.exception()) is not None]
    if failed:
        raise SystemExit(f"{len(failed)} of {len(jobs)} runs failed; the first: {failed[0]}")
    return {key: future.result() for key, future in futures.items()}


def main(
    tasks: dict[str, str],
    out_dir: str = "results/tripost",
    seeds: list[int] = [0, 1, 2],  # noqa: B006 - jsonargparse reads the default; it is never mutated
    warmup_epochs: int | dict[str, int] = 5,
    epochs_per_iteration: int = 1,
    iterations: int = 3,
    arms: list[str] = list(ARMS),  # noqa: B006
    warmup_seed: int = 0,
    warmup_per_seed: bool = False,
    error_rate: float = 0.5,
    flags: list[str] = [],  # noqa: B006
    task_flags: dict[str, list[str]] = {},  # noqa: B006
    m0: dict[str, str] = {},  # noqa: B006
    jobs: int = 1,
) -> dict:
    """Run every arm of the TriPosT table and write ``tripost_table.{md,csv,svg}`` to ``out_dir``.

    Args:
        tasks: task name -> TriPosT config (``configs/tripost/*.yaml``; its last callback must be OnlineRollouts).
        out_dir: where runs, tables and the plot go.
        seeds: one run per arm and seed (rollout sampling, batch order; with ``warmup_per_seed`` also M_0).
        warmup_epochs: W, the gold-rationale epochs of M_0, or W per task name.
        epochs_per_iteration: e, epochs per TriPosT iteration.
        iterations: T, TriPosT iterations (rows t=1..T); every arm trains T*e epochs from M_0.
        arms: which of ft_rationale, ft_rationale_continued, ft_si_demo, tripost, tripost_no_rebalance to run.
        warmup_seed: the seed of the one M_0 per task.
        warmup_per_seed: train one M_0 per seed instead.
        error_rate: fraction of teacher-written attempts with a slip (ft SI demo).
        flags: extra ``cli.py fit`` flags for every run (e.g. a smaller model or fewer rollout questions).
        task_flags: extra flags for one task's runs (e.g. its number of training questions).
        m0: task -> the run folder of an M_0 trained before (another table's ``runs/<task>/warmup/seed0``, or any
            ``cli.py fit`` TriPosT run with ``eval_table.json`` and ``hf_model/``): the arms start from it instead of
            a new M_0, and its stage-0 row is ft rationale. For trying arm settings without re-training M_0.
        jobs: arm runs at a time, the CPU cores split evenly between them. M_0 runs (long training) always run
            alone with every core; the arm runs are many short, generation-heavy ones, where on 2 cores two
            one-thread processes do 1.3x the training and 1.4x the generation of one two-thread process.
    """
    if jobs < 1:
        raise ValueError(f"jobs={jobs}: give the number of arm runs at a time, 1 or more")
    out = Path(out_dir).resolve()
    warmup = warmup_epochs if isinstance(warmup_epochs, dict) else {task: warmup_epochs for task in tasks}
    if set(warmup) != set(tasks):
        raise ValueError(f"warmup_epochs names tasks {sorted(warmup)}, the tasks are {sorted(tasks)}")
    rows = rows_for(list(arms), iterations, epochs_per_iteration)  # checks the arm names before any run
    if set(m0) - set(tasks):
        raise ValueError(f"m0 names tasks {sorted(set(m0) - set(tasks))} that are not in tasks {sorted(tasks)}")
    given_m0 = {task: given_m0_rows(task, Path(folder), warmup_per_seed) for task, folder in m0.items()}
    results: dict[str, dict[str, dict[int, list[dict]]]] = {}  # task -> arm -> seed -> eval rows
    arm_runs: dict[tuple, dict] = {}  # (task, arm, seed) -> run() arguments, run once every M_0 exists
    for task, config in tasks.items():
        extra = list(flags) + list(task_flags.get(task, []))
        base = yaml.safe_load((REPO / config).read_text())["model"]["init_args"]
        iteration_lr = base.get("iteration_lr") or base.get("lr", 3e-3)
        m0_seeds = {seed: seed if warmup_per_seed else warmup_seed for seed in seeds}
        m0_dirs = {s: Path(m0[task]).resolve() if task in m0 else m0_dir(out, task, s) for s in set(m0_seeds.values())}
        for m0_seed, folder in sorted(m0_dirs.items()):
            rows_m0 = given_m0[task] if task in m0 else run(
                folder, REPO / config, warmup_flags(m0_seed, warmup[task]) + extra, 0, export=True)
            if "ft_rationale" in arms:
                results.setdefault(task, {}).setdefault("ft_rationale", {})[m0_seed] = rows_m0
        for arm in arms:
            if arm == "ft_rationale":
                continue
            last = max(row.stage for row in rows_for([arm], iterations))  # the run is done once it evaluated this
            arm_yaml = arm_config(REPO / config, arm, error_rate, out / "configs" / task / f"{arm}.yaml")
            for seed in seeds:
                arm_flags = run_flags(arm, seed, m0_dirs[m0_seeds[seed]] / "hf_model", epochs_per_iteration, iterations, iteration_lr)
                arm_runs[(task, arm, seed)] = {"run_dir": out / "runs" / task / arm / f"seed{seed}",
                                               "config": arm_yaml, "flags": arm_flags + extra, "last_stage": last}
    for (task, arm, seed), rows_arm in run_all(arm_runs, jobs).items():
        results.setdefault(task, {}).setdefault(arm, {})[seed] = rows_arm
    return write_report(out, results, rows, seeds,
                        "M_0: " + ", ".join(f"{m0[task]} ({task})" if task in m0 else f"W={w} epochs ({task})"
                                            for task, w in warmup.items())
                        + f"; then T={iterations} x e={epochs_per_iteration} epochs")


def write_report(out: Path, results: dict, rows: list[Row], seeds: list[int], budget: str) -> dict:
    """``tripost_table.md`` / ``.csv`` / ``.svg`` from the runs' evaluation rows; returns the table as a dict."""
    table, csv_rows, panels = {}, [], {}
    for task, arms in results.items():
        for row in rows:
            per_seed = {s: next((r for r in arms.get(row.arm, {}).get(s, []) if r["stage"] == row.stage), None)
                        for s in seeds}
            for phase in ("before", "after"):
                for group in GROUPS:
                    values = [r[f"{phase}/{group}"] for r in per_seed.values() if r and f"{phase}/{group}" in r]
                    table[(task, row.label, phase, group)] = values
                    csv_rows.append([task, row.label, row.arm, row.stage, phase, group, len(values),
                                     *(f"{v:.2f}" for v in mean_std(values)), " ".join(f"{v:.2f}" for v in values)])
            panels.setdefault(task, {})[row.label] = {g: table[(task, row.label, "after", g)] for g in GROUPS}
    header = ["task", "arm"] + [f"{g} {p}" for p in ("no SI", "with SI") for g in GROUPS]
    lines = [f"# TriPosT table ({budget}; seeds {', '.join(map(str, seeds))})", "",
             ("Accuracy (%), mean ± std over seeds; \"no SI\": the greedy first attempt, \"with SI\": after the model's "
              "own test-time feedback and updates. \"ft rationale\" is M_0, the model every other row starts from; "
              "with one M_0 per task it is a single run (± 0.0)."), "",
             markdown_table(header, [[task, row.label] + [cell(table[(task, row.label, p, g)])
                                                          for p in ("before", "after") for g in GROUPS]
                                     for task in results for row in rows])]
    (out / "tripost_table.md").write_text("\n".join(lines) + "\n")
    write_csv(out / "tripost_table.csv", ["task", "arm", "run", "stage", "phase", "group", "seeds", "mean", "std",
                                          "values"], csv_rows)
    (out / "tripost_table.svg").write_text(bar_chart_svg(panels, GROUPS, "accuracy (%) with test-time SI",
                                                         f"TriPosT table ({budget})"))
    print("\n".join(lines))
    return {" / ".join(map(str, k)): v for k, v in table.items()}


if __name__ == "__main__":
    from jsonargparse import CLI

    CLI(main, as_positional=False)
