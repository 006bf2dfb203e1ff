"""The PIT table runner: one pipeline per seed (two reward models, the original policy, SFT, RL arms with one
budget), each seed's own data, init and rollout flags, the evaluation configured alike for every arm, an RL arm
finished only once it exported (a killed one resumes), KL and advantage sweeps; and a report whose numbers are the
runs' own ``pit_eval.json`` numbers."""

import csv
import json
from types import SimpleNamespace

import pytest
import yaml

from datamodules.interaction_log import Episode, Turn, write_shard
from experiments import pit_table, runs
from experiments.pit_table import (
    Variant,
    export_done,
    main,
    num_rl_prompts,
    per_iteration,
    rl_flags,
    rm_accuracies,
    rollout_concordance,
    write_report,
)


def test_arms_differ_only_in_their_curriculum():
    assert rl_flags("round1_only", 6, 3)[:2] == ["--trainer.max_epochs=6", "--model.init_args.round1_epochs=6"]
    assert rl_flags("round2_only", 6, 3)[:2] == ["--trainer.max_epochs=6", "--model.init_args.round1_epochs=0"]
    assert rl_flags("both_rounds", 6, 3)[:2] == ["--trainer.max_epochs=6", "--model.init_args.round1_epochs=3"]
    with pytest.raises(ValueError, match="unknown arms \\['round3'\\]"):
        main(arms=["round3"])
    with pytest.raises(ValueError, match=r"stage_flags names \['ppo'\]; the stages are rm, sft, policy, rl"):
        main(stage_flags={"ppo": ["--model.init_args.lr=1e-6"]})
    with pytest.raises(ValueError, match=r"advantages \['ppo'\]: choose from gae, rloo, grpo"):
        main(advantages=["ppo"])
    with pytest.raises(ValueError, match="samples_per_prompt=1: rloo and grpo compare answers"):
        main(advantages=["grpo"], samples_per_prompt=1)
    with pytest.raises(ValueError, match=r"rm_pairs \[None, 5\]: a reward model needs at least 10 pairs"):
        main(rm_pairs=[None, 5])
    with pytest.raises(ValueError, match=r"rm_pairs \[9000, 9000\] repeats a value"):
        main(rm_pairs=[9000, 9000])
    with pytest.raises(ValueError, match=r"flags \['--data.init_args.log_dir=x'\]: the runner sets the seeds, folders"):
        main(stage_flags={"rm": ["--trainer.max_epochs=1", "--data.init_args.log_dir=x"]})


# ---- the pipeline through a fake cli.py: experiments.runs' real reuse / resume / settings logic -----------------

def metrics(y0_gain):
    """A pit_eval.json as the evaluation writes it (y_0 from the original policy, both tables)."""
    table = {"exact_score": [0.4, 0.4 + y0_gain, 0.4], "exact_win_rate": [0, 0.5, 0.25],
             "exact_lose_rate": [0, 0.25, 0.25], "exact_delta": [0, 0.25, 0], "independent_rm_win_rate": [0, 0.6, 0.5],
             "rm_win_rate": [0, 0.9, 0.9]}
    return {"y0": "original_policy", "epoch": 1, **table, **{f"dataset/{k}": v for k, v in table.items()}}


@pytest.fixture
def fake_cli(monkeypatch):
    """``cli.py`` replaced by a stand-in that writes what a finished run leaves (its export; the evaluated runs'
    pit_eval.json); returns ``{run folder name: [(args, command)]}`` of every run actually started."""
    started = {}

    def run_command(run_dir, args, done, threads=None):
        def process(command, **kwargs):
            started.setdefault(run_dir.name, []).append((args, command))
            done.parent.mkdir(parents=True, exist_ok=True)
            done.write_text("{}")
            if run_dir.name not in ("rm", "rm_eval", "policy"):
                (run_dir / "pit_eval.json").write_text(json.dumps(metrics(0.1)))
            return SimpleNamespace(returncode=0)

        monkeypatch.setattr(runs.subprocess, "run", process)
        runs.run_command(run_dir, args, done, threads)

    monkeypatch.setattr(pit_table, "run_command", run_command)
    return started


def flag(args, name):
    """The value of the last ``name=value`` flag in ``args`` (None without one)."""
    values = [a.split("=", 1)[1] for a in args if a.startswith(name + "=")]
    return values[-1] if values else None


def test_each_seed_changes_data_init_and_rollouts_and_every_arm_is_evaluated_alike(tmp_path, fake_cli):
    main(out_dir=str(tmp_path), seeds=[0, 1], arms=["sft_only", "both_rounds"], max_new_tokens=24, monitor_prompts=7)
    assert set(fake_cli) == {"rm", "rm_eval", "policy", "sft", "both_rounds"}
    for seed in (0, 1):
        root = tmp_path / "runs" / f"seed{seed}"
        args = {name: next(a for a, c in calls if f"seed{seed}" in str(c) or f"seed{seed}" in " ".join(a))
                for name, calls in fake_cli.items()}
        for name in ("rm", "policy", "sft", "both_rounds"):
            assert flag(args[name], "--seed_everything") == str(seed)
            assert flag(args[name], "--data.init_args.preferences.init_args.seed") == str(seed)  # data draw
            assert flag(args[name], "--data.init_args.seed") == str(seed)  # folds
        assert flag(args["both_rounds"], "--trainer.callbacks.seed") == str(seed)  # rollout sampling
        assert flag(args["sft"], "--trainer.callbacks.seed") is None  # the SFT config's last callback is the eval
        # the independent reward model: another data draw, its own folds and tokenizer
        assert flag(args["rm_eval"], "--data.init_args.preferences.init_args.seed") == str(seed + 1000)
        assert flag(args["rm_eval"], "--data.init_args.log_dir") == str(root / "rm_eval")
        # one generation length for every evaluated policy, none for the reward models (no such argument)
        assert [flag(args[n], "--model.init_args.max_new_tokens") for n in ("policy", "sft", "both_rounds", "rm")] == [
            "24", "24", "24", None]
        configs = {n: yaml.safe_load((root / "configs" / f"{n}.yaml").read_text()) for n in ("sft", "rl")}
        for name, config in configs.items():
            [evaluation] = [c["init_args"] for c in config["trainer"]["callbacks"]
                            if c["class_path"].endswith("IterativeImprovementEval")]
            assert evaluation["y0_path"] == str(root / "y0.jsonl")  # one y_0 file per seed, for every arm
            assert evaluation["original_policy"] == str(root / "policy" / "hf_model")
            assert evaluation["independent_judge"]["init_args"]["path"] == str(root / "rm_eval" / "reward_model")
            assert (evaluation["iterations"], evaluation["num_prompts"], evaluation["monitor_prompts"]) == (3, 200, 7)
            assert evaluation["every_epoch"] == (name == "rl")
        rl_callbacks = [c["class_path"].rsplit(".", 1)[1] for c in configs["rl"]["trainer"]["callbacks"]]
        assert rl_callbacks == ["IterativeImprovementEval", "ModelCheckpoint", "OnlineRollouts"]  # rollouts stay last
        assert configs["rl"]["trainer"]["callbacks"][1]["init_args"]["save_last"] == "link"
    md = (tmp_path / "pit_table.md").read_text()
    assert "## y_0 = samples of the original policy" in md and "## y_0 = the dataset's rejected responses" in md


def test_an_rl_arm_is_finished_only_with_its_export_and_a_killed_one_resumes(tmp_path, fake_cli):
    config = {"out_dir": str(tmp_path), "seeds": [0], "arms": ["sft_only", "round1_only", "both_rounds"]}
    main(**config)
    root = tmp_path / "runs" / "seed0"
    assert all(len(calls) == 1 for calls in fake_cli.values())
    # both_rounds was killed after an epoch: its pit_eval.json (that epoch's numbers) and last.ckpt, no export
    export_done(root / "both_rounds").unlink(missing_ok=True)
    assert (root / "both_rounds" / "pit_eval.json").is_file()
    (root / "both_rounds" / "checkpoints").mkdir()
    (root / "both_rounds" / "checkpoints" / "last.ckpt").write_text("weights")
    main(**config)
    assert [len(calls) for calls in fake_cli.values()] == [1, 1, 1, 1, 1, 2]
    (args, command), (resumed_args, resumed) = fake_cli["both_rounds"]
    assert resumed_args == args  # the same settings: experiments.runs accepts the resume
    assert resumed == [*command, "--ckpt_path=last"]
    assert "--ckpt_path=last" not in args  # the settings never hold the resume flag
    assert export_done(root / "both_rounds") == root / "both_rounds" / "hf_model" / "tokenizer_config.json"


def test_kl_and_advantage_sweeps_add_labelled_arms_with_one_sample_budget(tmp_path, fake_cli):
    main(out_dir=str(tmp_path), seeds=[0], arms=["both_rounds"], kl_coefs=[0.05, 0.2], advantages=["gae", "rloo"],
         samples_per_prompt=4, flags=["--data.init_args.num_rl_prompts=12"])
    arms = sorted(n for n in fake_cli if n.startswith("both_rounds"))
    assert arms == ["both_rounds-kl0.05-gae", "both_rounds-kl0.05-rloo", "both_rounds-kl0.2-gae",
                    "both_rounds-kl0.2-rloo"]
    args = {name: fake_cli[name][0][0] for name in arms}
    assert flag(args["both_rounds-kl0.2-gae"], "--model.init_args.kl_coef") == "0.2"
    assert flag(args["both_rounds-kl0.2-gae"], "--model.init_args.advantage") == "gae"
    assert flag(args["both_rounds-kl0.2-gae"], "--model.init_args.samples_per_prompt") is None
    assert flag(args["both_rounds-kl0.2-gae"], "--data.init_args.num_rl_prompts") == "12"  # PPO: 12 answers
    rloo = args["both_rounds-kl0.05-rloo"]
    assert flag(rloo, "--model.init_args.advantage") == "rloo" and flag(rloo, "--model.init_args.kl_coef") == "0.05"
    assert flag(rloo, "--model.init_args.samples_per_prompt") == "4"
    assert flag(rloo, "--data.init_args.num_rl_prompts") == "3"  # 3 prompts x 4 answers = PPO's 12
    assert flag(rloo, "--trainer.logger.init_args.version") == "both_rounds-kl0.05-rloo"
    md = (tmp_path / "pit_table.md").read_text()
    assert "| RL both rounds (β=0.05, RLOO k=4) | 1 |" in md and "| RL both rounds (β=0.2, GAE) | 1 |" in md
    assert Variant().suffix == "" and Variant().flags(None, 4) == []  # the config's own settings: no flags
    with pytest.raises(ValueError, match="needs --data.init_args.num_rl_prompts divisible by it \\(got 10\\)"):
        Variant(advantage="grpo").flags(10, 4)
    assert num_rl_prompts([]) == 512 and num_rl_prompts(["--data.init_args.num_rl_prompts", "64"]) == 64


def test_a_stronger_reward_model_trains_on_its_own_draw_and_its_arms_train_against_it(tmp_path, fake_cli):
    main(out_dir=str(tmp_path), seeds=[3], arms=["sft_only", "both_rounds"], rm_pairs=[None, 900],
         flags=["--data.init_args.preferences.init_args.num_pairs=90"], stage_flags={"rm": ["--trainer.max_epochs=2"]})
    root = tmp_path / "runs" / "seed3"
    assert set(fake_cli) == {"rm", "rm_eval", "rm900", "policy", "sft", "both_rounds", "both_rounds-rm900"}
    [(args, _)] = fake_cli["rm900"]
    # its own draw (seed + 2000) with three folds of 900, so the shared folds (90 pairs here) stay every arm's
    assert flag(args, "--data.init_args.preferences.init_args.seed") == "2003"
    assert flag(args, "--data.init_args.preferences.init_args.num_pairs") == "2700"
    assert flag(args, "--data.init_args.log_dir") == str(root / "rm900")
    assert flag(args, "--trainer.logger.init_args.version") == "rm900"
    assert flag(args, "--trainer.max_epochs") == "2"  # the reward models' stage flags reach it
    assert flag(fake_cli["rm"][0][0], "--data.init_args.preferences.init_args.num_pairs") == "90"
    for arm, rm in (("both_rounds", "rm"), ("both_rounds-rm900", "rm900")):
        [(args, _)] = fake_cli[arm]
        config = yaml.safe_load((tmp_path / args[args.index("--config") + 1]).read_text())
        judges = {c["class_path"].rsplit(".", 1)[1]: (c["init_args"].get("teacher") or c["init_args"]["judge"])
                  for c in config["trainer"]["callbacks"] if "teacher" in c["init_args"] or "judge" in c["init_args"]}
        # rollouts are scored by the variant's reward model; the trained-against win rate is read with it too
        assert {k: v["init_args"]["path"] for k, v in judges.items()} == {
            "IterativeImprovementEval": str(root / rm / "reward_model"), "OnlineRollouts": str(root / rm / "reward_model")}
        assert flag(args, "--data.init_args.preferences.init_args.seed") == "3"  # the shared folds
    md = (tmp_path / "pit_table.md").read_text()
    assert "| RL both rounds | 1 |" in md and "| RL both rounds (RM 900 pairs) | 1 |" in md


def test_reward_model_accuracies_come_from_the_last_validation(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    def log(folder, values, step0=0):
        writer = SummaryWriter(str(folder))
        for step, row in enumerate(values, step0):
            for name, value in row.items():
                writer.add_scalar(f"rm/val_acc_{name}", value, step)
        writer.close()

    first = tmp_path / "rm"
    log(first, [{"pairwise": 0.5, "wl>ww": 0.4}, {"pairwise": 0.6, "wl>ww": 0.55}])
    assert rm_accuracies(first) == pytest.approx({"pairwise": 0.6, "wl>ww": 0.55})
    log(first, [{"pairwise": 0.75}], step0=2)  # a resumed run's newer file: its last value wins where it has one
    assert rm_accuracies(first) == pytest.approx({"pairwise": 0.75, "wl>ww": 0.55})
    assert rm_accuracies(tmp_path / "missing") == {}
    results = {s: {"sft": metrics(0.1)} for s in (0, 1)}
    accuracies = {0: {"rm": {"pairwise": 0.6, "ll>lw": 0.5, "pairs": 300}, "rm900": {"pairwise": 0.9, "pairs": 900}},
                  1: {"rm": {"pairwise": 0.8, "ll>lw": 0.7, "pairs": 300}, "rm900": {"pairwise": 0.7, "pairs": 900}}}
    table = write_report(tmp_path, results, [("sft", "SFT only")], "budget", accuracies)
    md = (tmp_path / "pit_table.md").read_text().split("## Reward models")[1]
    # rm over seeds: pairwise .6 / .8 -> 0.700 ± 0.141, ll>lw .5 / .7 -> 0.600 ± 0.141; rm900: .9 / .7
    assert "| R_PIT, the shared folds' reward-model fold | 300 | - | - | - | - | 0.600 ± 0.141 | 0.700 ± 0.141 |" in md
    assert "| R_PIT, 900 pairs (own draw) | 900 | - | - | - | - | - | 0.800 ± 0.141 |" in md
    assert table["reward_models / rm900 / pairwise"] == pytest.approx([0.9, 0.7])
    rows = list(csv.DictReader((tmp_path / "pit_table.csv").read_text().splitlines()))
    assert {(r["arm"], r["metric"], r["values"]) for r in rows if r["table"] == "reward_models"} == {
        ("R_PIT, the shared folds' reward-model fold", "val_acc_pairwise", "0.6000 0.8000"),
        ("R_PIT, the shared folds' reward-model fold", "val_acc_ll>lw", "0.5000 0.7000"),
        ("R_PIT, 900 pairs (own draw)", "val_acc_pairwise", "0.9000 0.7000")}


def test_concordance_of_the_gap_reward_with_the_exact_gain_on_the_rollouts(tmp_path):
    def buffer(name, by, rows):
        write_shard(tmp_path / "arm" / "rollouts" / name, [
            Episode(id=f"{question}/{i}", task="constrained_lists", iteration=1, prompt="x", question_id=question,
                    turns=(Turn("reference", "1", by), Turn("response", "2", "policy")), outcome="improved",
                    scores={"gap_reward": r} | ({"quality": q} if q else {}))
            for i, (question, r, q) in enumerate(rows)])

    # gains 0, .2, -.2, .4 (as differences of fifths) with rewards 1, 2, 3, 2: of the 6 pairs with different gains,
    # (0,1) and (0,3) agree, (1,3) ties on the reward (half), (0,2), (1,2), (2,3) disagree -> 2.5 / 6
    buffer("iter_001.jsonl", "dataset", [("a", 1.0, [0.4, 0.4]), ("b", 2.0, [0.2, 0.4]), ("c", 3.0, [0.6, 0.4]),
                                         ("d", 2.0, [0.2, 0.6]), ("a", 9.0, None)])  # no exact score: not counted
    buffer("iter_002.jsonl", "original_policy", [("z", 0.0, [0.2, 0.4]), ("z", 5.0, [0.4, 0.6])])  # equal gains
    # gains .2, .6 (prompt a), 0 (prompt b) with rewards 0, 1, .5: pooled, (A,B) and (B,C) agree, (A,C) does not;
    # within a prompt only (A,B), which agrees
    buffer("iter_003.jsonl", "original_policy", [("a", 0.0, [0.2, 0.4]), ("a", 1.0, [0.2, 0.8]), ("b", 0.5, [0.2, 0.2])])
    concordance = rollout_concordance(tmp_path / "arm")
    assert concordance == {(1, "all"): [pytest.approx(2.5 / 6)], (2, "all"): [pytest.approx(2 / 3)],
                           (2, "prompt"): [1.0]}
    assert rollout_concordance(tmp_path / "missing") == {}
    results = {s: {"sft": metrics(0.1), "both_rounds": metrics(0.1)} for s in (0, 1)}
    table = write_report(tmp_path, results, [("sft", "SFT only"), ("both_rounds", "RL both rounds")], "budget",
                         concordance={0: {"both_rounds": {(1, "all"): [0.4, 0.6], (2, "all"): [1.0]}},
                                      1: {"both_rounds": {(1, "all"): [0.8], (2, "all"): [0.5]}}})
    md = (tmp_path / "pit_table.md").read_text().split("## The gap reward on each RL arm's own rollouts")[1]
    # round 1: seed means .5 and .8 -> 0.650 ± 0.212; round 2: 1.0 and .5 -> 0.750 ± 0.354; SFT has no rollouts
    assert "| RL both rounds | 0.650 ± 0.212 | 0.750 ± 0.354 |" in md and "SFT only" not in md
    assert "within a prompt" not in md.split("\n\n")[2]  # no column without values
    assert table["concordance / both_rounds / round 2 (original policy's answers)"] == pytest.approx([1.0, 0.5])


def test_report_gives_both_tables_per_iteration(tmp_path):
    def run(gain1, delta1, independent1):
        table = {"exact_score": [0.4, 0.4 + gain1, 0.5], "exact_win_rate": [0, 0.5, 0.5],
                 "exact_lose_rate": [0, 0.5 - delta1, 0.5], "exact_delta": [0, delta1, 0],
                 "independent_rm_win_rate": [0, independent1, 0.5], "rm_win_rate": [0, 0.9, 0.95]}
        return {"y0": "original_policy", **table, **{f"dataset/{k}": [v * 2 for v in vs] for k, vs in table.items()}}

    assert per_iteration(run(0.1, 0.2, 0.3))["exact_gain"] == pytest.approx([0.0, 0.1, 0.1])
    old = {"exact_score": [0.3, 0.5], "exact_win_rate": [0, 0.6], "exact_lose_rate": [0, 0.2]}  # before Δ existed
    assert per_iteration(old)["exact_delta"] == pytest.approx([0, 0.4])
    results = {0: {"sft": run(0.1, 0.2, 0.3), "both_rounds": run(0.2, 0.1, 0.6)},
               1: {"sft": run(0.3, 0.4, 0.5), "both_rounds": run(0.4, 0.3, 0.8)}}
    table = write_report(tmp_path, results, [("sft", "SFT only"), ("both_rounds", "RL both rounds")], "2 RL epochs")
    md = (tmp_path / "pit_table.md").read_text()
    headline, second = md.split("## y_0 = samples of the original policy")[1].split("## y_0 = the dataset's")
    # i=1 over seeds: gain .2 / .4, win .5 / .5, lose .4 / .2, Δ .1 / .3, independent RM .6 / .8
    assert "| RL both rounds | 1 | 0.300 ± 0.141 | 0.500 ± 0.000 | 0.300 ± 0.141 | 0.200 ± 0.141 | 0.700 ± 0.141 |" in headline
    assert "| SFT only | 1 | 0.200 ± 0.141 |" in headline and "|  | 2 | 0.100 ± 0.000 |" in headline
    # the dataset table: every value doubled, so the gain from y_0 = .8 is (.8 + 2 * gain) - .8
    assert "| RL both rounds | 1 | 0.600 ± 0.283 | 1.000 ± 0.000 |" in second
    assert "0.9" not in md.split("in the CSV only")[1]  # the trained-against RM's win rate is not in the tables
    rows = list(csv.DictReader((tmp_path / "pit_table.csv").read_text().splitlines()))
    trained = next(r for r in rows if r["table"] == "original_policy" and r["arm"] == "SFT only"
                   and r["metric"] == "rm_win_rate" and r["iteration"] == "2")
    assert (trained["mean"], trained["values"]) == ("0.9500", "0.9500 0.9500")
    assert table["original_policy / both_rounds / exact_delta / 1"] == pytest.approx([0.1, 0.3])
    svg = (tmp_path / "pit_table.svg").read_text()
    assert svg.count("<polyline") == 2 and "RL both rounds 1: 0.200 ± 0.141" in svg  # Δ, the headline's


@pytest.mark.slow
def test_runner_runs_the_pipeline_once_and_each_arm(tmp_path, capsys):
    shrink = ["--trainer.max_epochs=1", "--data.init_args.preferences.init_args.num_pairs=90",
              "--data.init_args.batch_size=8", "--data.init_args.num_rl_prompts=12",
              "--model.init_args.tiny.hidden_size=32", "--model.init_args.tiny.num_layers=1",
              "--model.init_args.tiny.num_heads=2", "--model.init_args.tiny.intermediate_size=64"]
    config = {"out_dir": str(tmp_path / "out"), "seeds": [0], "arms": ["sft_only", "round2_only", "both_rounds"],
              "rl_epochs": 2, "round1_epochs": 1, "flags": shrink, "monitor_prompts": 1, "max_new_tokens": 16,
              "stage_flags": {"rl": ["--model.init_args.lr=5e-5"], "policy": ["--model.init_args.lr=1e-3"]}}
    table = main(**config)
    root = tmp_path / "out" / "runs" / "seed0"
    both = json.loads((root / "both_rounds" / "pit_eval.json").read_text())
    assert both["y0"] == "original_policy"
    assert table["original_policy / both_rounds / exact_delta / 1"] == [both["exact_delta"][1]]
    assert (root / "y0.jsonl").is_file() and (root / "rm_eval" / "reward_model" / "config.json").is_file()
    # the diagnostics read the real runs: both reward models' last validation, the arms' own rollout buffers
    assert {k for k in table if k.startswith("reward_models / ") and k.endswith(" / pairwise")} == {
        "reward_models / rm / pairwise", "reward_models / rm_eval / pairwise"}
    assert 0 <= table["concordance / both_rounds / round 1 (dataset references)"][0] <= 1
    assert "concordance / round2_only / round 1 (dataset references)" not in table  # round 2 from the start
    assert (root / "both_rounds" / "checkpoints" / "last.ckpt").exists()
    assert (root / "round2_only" / "rollouts" / "references_round2.jsonl").is_file()
    first = (root / "round2_only" / "rollouts" / "iter_001.jsonl").read_text().splitlines()
    assert all(json.loads(line)["turns"][0]["by"] == "original_policy" for line in first)  # round 2 from the start
    for stage, lr in (("round2_only", "5e-5"), ("both_rounds", "5e-5"), ("policy", "1e-3"), ("rm", None), ("sft", None)):
        command = (root / stage / "command.sh").read_text()  # each stage's own flags, and only its own
        assert ("--model.init_args.lr=" in command) == (lr is not None) and (lr is None or f"lr={lr}" in command)
    assert yaml.safe_load((root / "round2_only" / "hparams.yaml").read_text())["lr"] == 5e-5
    capsys.readouterr()
    main(**config)
    assert capsys.readouterr().out.count("reusing") == 6  # rm, rm_eval, policy, sft and both RL arms


@pytest.mark.parametrize("preset", ["experiments/tripost_cpu.yaml", "experiments/tripost_gpu.yaml", "experiments/pit_cpu.yaml",
                                    "experiments/pit_gpu.yaml"])
def test_presets_parse_and_start_with_their_command(preset, capsys):
    from jsonargparse import CLI

    from experiments import pit_table, tripost_table
    from tests.test_cli import REPO

    main_ = tripost_table.main if "tripost" in preset else pit_table.main
    with pytest.raises(SystemExit) as exit_:
        CLI(main_, as_positional=False, args=["--config", str(REPO / preset), "--print_config"])
    assert exit_.value.code in (None, 0) and "seeds:" in capsys.readouterr().out
    assert f"--config {preset}" in (REPO / preset).read_text().split("\n\n")[0]
