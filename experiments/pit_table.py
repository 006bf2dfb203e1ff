"""PIT's curriculum comparison at small scale: SFT only, RL round 1 only, RL round 2 only, both rounds; the same
data, seeds and RL budget (epochs) for every arm; one table (markdown + CSV) and one plot (SVG).

    python -m experiments.pit_table --config experiments/pit_cpu.yaml

Per seed, the pipeline of ``configs/pit/`` runs once in ``{out_dir}/runs/seed{s}/``: the gap reward model, PIT's
SFT policy, the original policy (whose answers round 2 improves); then one RL run per arm from the SFT policy,
each ``rl_epochs`` epochs: round 1 only (all epochs on the dataset's references), round 2 only (all on the original
policy's samples), both (the first ``round1_epochs`` on round 1). "SFT only" is the SFT policy itself.

Reported per arm and inference iteration i (the policy improving its own previous answer i times, on held-out
references; ``callbacks.pit_eval.IterativeImprovementEval``): the exact-score gain over the references, the exact
win rate (y_i scores higher than y_0) and the reward model's win rate; mean ± sample std over seeds. Runs are
``python cli.py fit`` (command saved as ``command.sh``); a finished run (its ``pit_eval.json`` or export exists)
is reused, so re-running the command resumes the table.
"""

from __future__ import annotations

import json
from pathlib import Path

from experiments.report import cell, line_chart_svg, markdown_table, mean_std, write_csv
from experiments.runs import REPO, run_command

STAGES = ("rm", "sft", "policy", "rl")
ARMS = {"sft_only": "SFT only", "round1_only": "RL round 1 only", "round2_only": "RL round 2 only",
        "both_rounds": "RL both rounds"}
METRICS = {"exact_gain": "exact-score gain", "exact_win_rate": "exact win rate", "rm_win_rate": "RM win rate"}


def stage_config(name: str, root: Path, out: Path) -> Path:
    """``configs/pit/{name}.yaml`` with its run folder ``runs/pit-cl`` moved to ``root``."""
    text = (REPO / "configs" / "pit" / f"{name}.yaml").read_text().replace("runs/pit-cl", str(root))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return out


def rl_flags(arm: str, rl_epochs: int, round1_epochs: int) -> list[str]:
    rounds = {"round1_only": rl_epochs, "round2_only": 0, "both_rounds": round1_epochs}[arm]
    return [f"--trainer.max_epochs={rl_epochs}", f"--model.init_args.round1_epochs={rounds}",
            f"--trainer.logger.init_args.version={arm}"]


def pipeline(root: Path, seed: int, arms: list[str], rl_epochs: int, round1_epochs: int, flags: list[str],
             stage_flags: dict[str, list[str]]) -> dict:
    """One seed's reward model, SFT, original policy and RL arms; returns ``{arm: pit_eval metrics}``."""
    common = [f"--seed_everything={seed}", "--trainer.enable_progress_bar=false", *flags]
    configs = root / "configs"
    stages = [("rm", "constrained_lists_reward_model", [], root / "rm" / "reward_model" / "config.json"),
              ("sft", "constrained_lists_sft", [], root / "sft" / "pit_eval.json"),
              ("policy", "constrained_lists_sft", ["--data.init_args.stage=policy_sft",
                                                   "--trainer.logger.init_args.version=policy", "--trainer.callbacks=[]"],
               root / "policy" / "hf_model" / "config.json")]
    for name, config, extra, done in stages:
        path = stage_config(config, root, configs / f"{name}.yaml")
        run_command(root / name, ["fit", "--config", str(path), *common, *extra, *stage_flags.get(name, [])], done)
    results = {"sft_only": json.loads((root / "sft" / "pit_eval.json").read_text())}
    for arm in arms:
        if arm == "sft_only":
            continue
        path = stage_config("constrained_lists_rl", root, configs / "rl.yaml")
        done = root / arm / "pit_eval.json"
        run_command(root / arm, ["fit", "--config", str(path), *common, *rl_flags(arm, rl_epochs, round1_epochs),
                                 *stage_flags.get("rl", [])], done)
        results[arm] = json.loads(done.read_text())
    return results


def main(
    out_dir: str = "results/pit",
    seeds: list[int] = [0, 1, 2],  # noqa: B006 - jsonargparse reads the default; it is never mutated
    arms: list[str] = list(ARMS),  # noqa: B006
    rl_epochs: int = 6,
    round1_epochs: int = 3,
    flags: list[str] = [],  # noqa: B006
    stage_flags: dict[str, list[str]] = {},  # noqa: B006
) -> dict:
    """Run PIT's pipeline per seed and every arm, and write ``pit_table.{md,csv,svg}`` to ``out_dir``.

    Args:
        out_dir: where runs, tables and the plot go.
        seeds: one pipeline per seed (preference data draw, model init, sampling).
        arms: which of sft_only, round1_only, round2_only, both_rounds to report.
        rl_epochs: RL epochs (PPO iterations) of every RL arm.
        round1_epochs: of those, epochs on round 1 in the both-rounds arm.
        flags: extra ``cli.py fit`` flags for every run (e.g. fewer pairs, a smaller model).
        stage_flags: extra flags for one stage's runs: ``rm``, ``sft``, ``policy`` (the original policy) or ``rl``
            (every RL arm), e.g. a pretrained model and its learning rate for the stages that start from one.
    """
    unknown = set(arms) - set(ARMS)
    if unknown:
        raise ValueError(f"unknown arms {sorted(unknown)}; the arms are {', '.join(ARMS)}")
    if set(stage_flags) - set(STAGES):
        raise ValueError(f"stage_flags names {sorted(set(stage_flags) - set(STAGES))}; the stages are {', '.join(STAGES)}")
    out = Path(out_dir).resolve()
    results = {seed: pipeline(out / "runs" / f"seed{seed}", seed, list(arms), rl_epochs, round1_epochs, list(flags),
                              stage_flags) for seed in seeds}
    return write_report(out, results, list(arms), f"{rl_epochs} RL epochs, {round1_epochs} in round 1 for both rounds")


def per_iteration(metrics: dict[str, list[float]]) -> dict[str, list[float]]:
    """The reported metrics of one run by iteration (index 0 = the references): gain, win rates."""
    out = {name: metrics[name] for name in ("exact_win_rate", "rm_win_rate") if name in metrics}
    if "exact_score" in metrics:
        out["exact_gain"] = [score - metrics["exact_score"][0] for score in metrics["exact_score"]]
    return out


def write_report(out: Path, results: dict[int, dict[str, dict]], arms: list[str], budget: str) -> dict:
    seeds = sorted(results)
    runs = {arm: [per_iteration(results[s][arm]) for s in seeds if arm in results[s]] for arm in arms}
    iterations = max(len(v) for r in runs.values() for m in r for v in m.values())
    table, csv_rows = {}, []
    for arm, per_seed in runs.items():
        for metric in METRICS:
            for i in range(1, iterations):
                values = [m[metric][i] for m in per_seed if metric in m and i < len(m[metric])]
                table[(arm, metric, i)] = values
                if values:
                    csv_rows.append([ARMS[arm], metric, i, len(values), *(f"{v:.4f}" for v in mean_std(values)),
                                     " ".join(f"{v:.4f}" for v in values)])
    header = ["arm"] + [f"{METRICS[m]} i={i}" for m in METRICS for i in range(1, iterations)]
    rows = [[ARMS[arm]] + [cell(table[(arm, m, i)], 3) for m in METRICS for i in range(1, iterations)] for arm in arms]
    lines = [f"# PIT table ({budget}; seeds {', '.join(map(str, seeds))})", "",
             "Held-out references improved i times by the policy; gain and win rates against the references, "
             "mean ± std over seeds.", "", markdown_table(header, rows)]
    (out / "pit_table.md").write_text("\n".join(lines) + "\n")
    write_csv(out / "pit_table.csv", ["arm", "metric", "iteration", "seeds", "mean", "std", "values"], csv_rows)
    series = {ARMS[arm]: [table[(arm, "rm_win_rate", i)] for i in range(1, iterations)] for arm in arms}
    (out / "pit_table.svg").write_text(line_chart_svg(series, list(range(1, iterations)), "inference iteration",
                                                      "RM win rate over the references", f"PIT ({budget})"))
    print("\n".join(lines))
    return {f"{a} / {m} / {i}": v for (a, m, i), v in table.items()}


if __name__ == "__main__":
    from jsonargparse import CLI

    CLI(main, as_positional=False)
