"""The TriPosT table runner: every arm runs through cli.py with the same budget, and the report's numbers are the
runs' own evaluation numbers (mean ± sample std over seeds) in markdown, CSV and SVG."""

import csv
import json
import statistics

import pytest

from datamodules.interaction_log import read_shard
from experiments.tripost_table import Row, main, rows_for, run_flags, write_report
from tests.test_cli import tiny_args


def test_every_arm_gets_the_same_epochs_and_its_own_difference():
    flags = {arm: run_flags(arm, 1, 3, 2, 2) for arm in ("ft_rationale", "ft_si_demo", "tripost", "tripost_no_rebalance")}
    assert all("--trainer.max_epochs=7" in f and "--seed_everything=1" in f for f in flags.values())
    assert flags["ft_rationale"][-1] == "--model.init_args.warmup_epochs=7"  # last flag wins: one gold stage
    assert flags["ft_si_demo"][-1] == "--model.init_args.epochs_per_iteration=4"  # one round of 2 x 2 epochs
    assert flags["tripost_no_rebalance"][-1] == "--data.init_args.improve_data_ratio=0"
    with pytest.raises(ValueError, match="unknown arm 'lmsi'"):
        run_flags("lmsi", 0, 1, 1, 1)
    assert [r.label for r in rows_for(["ft_rationale", "tripost"], 2)] == ["ft rationale", "TriPosT t=1", "TriPosT t=2"]


def test_report_averages_the_runs_numbers(tmp_path):
    def stage(k, seen):
        return {"stage": k, "before/seen": seen, "before/unseen": 0.0, "before/total": seen / 2,
                "after/seen": seen + 1, "after/unseen": 1.0, "after/total": seen / 2 + 1}

    results = {"ma": {"tripost": {0: [stage(0, 2.0), stage(1, 10.0)], 1: [stage(0, 4.0), stage(1, 14.0)]},
                      "ft_rationale": {0: [stage(0, 6.0)], 1: [stage(0, 8.0)]}}}
    rows = [Row("ft rationale", "ft_rationale", 0), Row("TriPosT t=1", "tripost", 1)]
    write_report(tmp_path, results, rows, [0, 1], "W=1")
    md = (tmp_path / "tripost_table.md").read_text()
    assert f"| ma | TriPosT t=1 | 12.0 ± {statistics.stdev([10, 14]):.1f} |" in md
    assert "| ma | ft rationale | 7.0 ± 1.4 |" in md
    table = list(csv.DictReader(open(tmp_path / "tripost_table.csv")))
    after = next(r for r in table if r["arm"] == "TriPosT t=1" and r["phase"] == "after" and r["group"] == "seen")
    assert (after["mean"], after["values"]) == ("13.00", "11.00 15.00")
    svg = (tmp_path / "tripost_table.svg").read_text()
    assert svg.startswith("<svg") and svg.count("<rect") >= 6 and "TriPosT t=1 seen: 13.00 ± 2.83" in svg


@pytest.mark.slow
def test_runner_trains_every_arm_and_resumes_from_its_runs(tmp_path, capsys):
    shrink = [a for a in tiny_args(tmp_path, 3)[3:] if not a.startswith(("--trainer.max_epochs",
                                                                             "--model.init_args.warmup_epochs",
                                                                             "--model.init_args.epochs_per_iteration",
                                                                             "--trainer.logger"))]
    config = {"tasks": {"ma": "configs/tripost/multistep_arithmetic_tiny.yaml"}, "out_dir": str(tmp_path / "out"),
              "seeds": [0, 1], "warmup_epochs": 1, "epochs_per_iteration": 1, "iterations": 1,
              "arms": ["ft_rationale", "ft_si_demo", "tripost"], "error_rate": 1.0, "flags": shrink}
    table = main(**config)
    runs = tmp_path / "out" / "runs" / "ma"
    for arm, stages in (("ft_rationale", [0]), ("ft_si_demo", [0, 1]), ("tripost", [0, 1])):
        for seed in (0, 1):
            rows = json.loads((runs / arm / f"seed{seed}" / "eval_table.json").read_text())
            assert [r["stage"] for r in rows] == stages
    demos = read_shard(runs / "ft_si_demo" / "seed0" / "interaction_logs" / "iter_001.jsonl")
    assert len(demos) == 12 and {e.turns[0].by for e in demos} == {"teacher demo"}
    assert all(e.outcome == "improved" for e in demos)  # every attempt had a slip (error_rate 1) and was fixed
    rollouts = read_shard(runs / "tripost" / "seed0" / "interaction_logs" / "iter_001.jsonl")
    assert {e.turns[0].by for e in rollouts} == {"policy"}
    seen = [json.loads((runs / "tripost" / f"seed{s}" / "eval_table.json").read_text())[1]["after/seen"] for s in (0, 1)]
    assert table["ma / TriPosT t=1 / after / seen"] == seen
    capsys.readouterr()
    main(**config)  # every run is reused, the report is rebuilt
    assert capsys.readouterr().out.count("reusing") == 6
