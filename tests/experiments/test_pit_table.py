"""The PIT table runner: one pipeline per seed (reward model, SFT, original policy, RL arms with one budget), and a
report whose numbers are the runs' own ``pit_eval.json`` numbers."""

import csv
import json

import pytest
import yaml

from experiments.pit_table import main, per_iteration, rl_flags, write_report


def test_arms_differ_only_in_their_curriculum():
    assert rl_flags("round1_only", 6, 3)[:2] == ["--trainer.max_epochs=6", "--model.init_args.round1_epochs=6"]
    assert rl_flags("round2_only", 6, 3)[:2] == ["--trainer.max_epochs=6", "--model.init_args.round1_epochs=0"]
    assert rl_flags("both_rounds", 6, 3)[:2] == ["--trainer.max_epochs=6", "--model.init_args.round1_epochs=3"]
    with pytest.raises(ValueError, match="unknown arms \\['round3'\\]"):
        main(arms=["round3"])
    with pytest.raises(ValueError, match=r"stage_flags names \['ppo'\]; the stages are rm, sft, policy, rl"):
        main(stage_flags={"ppo": ["--model.init_args.lr=1e-6"]})


def test_report_gives_gain_and_win_rates_per_iteration(tmp_path):
    def run(score1, win1):
        return {"exact_score": [0.4, score1, score1 + 0.1], "exact_win_rate": [0.0, win1, win1],
                "rm_win_rate": [0.0, win1, win1 + 0.1]}

    assert per_iteration(run(0.5, 0.2))["exact_gain"] == pytest.approx([0.0, 0.1, 0.2])
    results = {0: {"sft_only": run(0.5, 0.2), "both_rounds": run(0.6, 0.4)},
               1: {"sft_only": run(0.7, 0.4), "both_rounds": run(0.8, 0.6)}}
    write_report(tmp_path, results, ["sft_only", "both_rounds"], "2 RL epochs")
    md = (tmp_path / "pit_table.md").read_text()
    assert "| RL both rounds | 0.300 ± 0.141 | 0.400 ± 0.141 |" in md  # exact gain i=1, i=2 over seeds 0.2 / 0.4
    rows = list(csv.DictReader(open(tmp_path / "pit_table.csv")))
    rm = next(r for r in rows if r["arm"] == "SFT only" and r["metric"] == "rm_win_rate" and r["iteration"] == "2")
    assert (rm["mean"], rm["values"]) == ("0.4000", "0.3000 0.5000")
    svg = (tmp_path / "pit_table.svg").read_text()
    assert svg.count("<polyline") == 2 and "RL both rounds 1: 0.500 ± 0.141" in svg


@pytest.mark.slow
def test_runner_runs_the_pipeline_once_and_each_arm(tmp_path, capsys):
    shrink = ["--trainer.max_epochs=1", "--data.init_args.preferences.init_args.num_pairs=90",
              "--data.init_args.batch_size=8", "--data.init_args.num_rl_prompts=12",
              "--model.init_args.tiny.hidden_size=32", "--model.init_args.tiny.num_layers=1",
              "--model.init_args.tiny.num_heads=2", "--model.init_args.tiny.intermediate_size=64"]
    config = {"out_dir": str(tmp_path / "out"), "seeds": [0], "arms": ["sft_only", "round2_only", "both_rounds"],
              "rl_epochs": 2, "round1_epochs": 1, "flags": shrink,
              "stage_flags": {"rl": ["--model.init_args.lr=5e-5"], "policy": ["--model.init_args.lr=1e-3"]}}
    table = main(**config)
    root = tmp_path / "out" / "runs" / "seed0"
    both = json.loads((root / "both_rounds" / "pit_eval.json").read_text())
    assert table["both_rounds / rm_win_rate / 1"] == [both["rm_win_rate"][1]]
    assert (root / "round2_only" / "rollouts" / "references_round2.jsonl").is_file()
    first = (root / "round2_only" / "rollouts" / "iter_001.jsonl").read_text().splitlines()
    assert all(json.loads(line)["turns"][0]["by"] == "original_policy" for line in first)  # round 2 from the start
    for stage, lr in (("round2_only", "5e-5"), ("both_rounds", "5e-5"), ("policy", "1e-3"), ("rm", None), ("sft", None)):
        command = (root / stage / "command.sh").read_text()  # each stage's own flags, and only its own
        assert ("--model.init_args.lr=" in command) == (lr is not None) and (lr is None or f"lr={lr}" in command)
    assert yaml.safe_load((root / "round2_only" / "hparams.yaml").read_text())["lr"] == 5e-5
    capsys.readouterr()
    main(**config)
    assert capsys.readouterr().out.count("reusing") == 5  # rm, sft, policy and both RL arms


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
