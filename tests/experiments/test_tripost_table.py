"""The TriPosT table runner: every arm runs through cli.py with the same budget, and the report's numbers are the
runs' own evaluation numbers (mean ± sample std over seeds) in markdown, CSV and SVG."""

import csv
import json
import statistics

import pytest

from datamodules.interaction_log import read_shard
from experiments.tripost_table import ARMS, Row, main, rows_for, run_flags, warmup_flags, write_report
from tests.test_cli import tiny_args


def test_every_arm_starts_from_m0_with_the_same_epochs_and_its_own_difference(tmp_path):
    m0 = tmp_path / "hf_model"
    arms = ARMS[1:]
    flags = {arm: run_flags(arm, 1, m0, 2, 2, 1e-3) for arm in arms}
    for arm in arms:  # the last flag of a kind wins
        assert {"--trainer.max_epochs=4", "--seed_everything=1", f"--model.init_args.model={m0}",
                f"--data.init_args.tokenizer={m0}"} <= set(flags[arm])
    assert flags["tripost"][-2:] == ["--model.init_args.warmup_epochs=0", "--model.init_args.epochs_per_iteration=2"]
    assert flags["ft_rationale_continued"][-2:] == ["--model.init_args.warmup_epochs=4", "--model.init_args.lr=0.001"]
    assert flags["ft_si_demo"][-1] == "--model.init_args.epochs_per_iteration=4"  # one round of 2 x 2 epochs
    assert flags["tripost_no_rebalance"][-1] == "--data.init_args.improve_data_ratio=0"
    assert warmup_flags(3, 5)[-2:] == ["--trainer.max_epochs=5", "--model.init_args.warmup_epochs=5"]
    with pytest.raises(ValueError, match="unknown arm 'lmsi'"):
        rows_for(["lmsi"], 1)
    with pytest.raises(ValueError, match="'ft_rationale' is not trained from M_0"):
        run_flags("ft_rationale", 0, m0, 1, 1, 1e-3)
    with pytest.raises(ValueError, match=r"warmup_epochs names tasks \['ws'\], the tasks are \['ma'\]"):
        main(tasks={"ma": "configs/tripost/multistep_arithmetic_tiny.yaml"}, out_dir=str(tmp_path), warmup_epochs={"ws": 1})
    ma = {"ma": "configs/tripost/multistep_arithmetic_tiny.yaml"}
    with pytest.raises(ValueError, match=r"m0 names tasks \['ws'\] that are not in tasks \['ma'\]"):
        main(tasks=ma, out_dir=str(tmp_path), m0={"ws": str(tmp_path)})
    with pytest.raises(ValueError, match=r"m0 for 'ma': .*eval_table.json does not exist; give the folder"):
        main(tasks=ma, out_dir=str(tmp_path), m0={"ma": str(tmp_path / "nowhere")})
    assert not any(tmp_path.iterdir())  # refused before any run
    assert [r.label for r in rows_for(["ft_rationale", "ft_rationale_continued", "tripost"], 2, 3)] == [
        "ft rationale", "ft rationale, +6 epochs", "TriPosT t=1", "TriPosT t=2"]


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
def test_runner_trains_every_arm_from_one_m0_and_resumes_from_its_runs(tmp_path, capsys):
    shrink = [a for a in tiny_args(tmp_path, 3)[3:] if not a.startswith(("--trainer.max_epochs",
                                                                             "--model.init_args.warmup_epochs",
                                                                             "--model.init_args.epochs_per_iteration",
                                                                             "--trainer.logger"))]
    config = {"tasks": {"ma": "configs/tripost/multistep_arithmetic_tiny.yaml"}, "out_dir": str(tmp_path / "out"),
              "seeds": [0, 1], "warmup_epochs": 1, "epochs_per_iteration": 1, "iterations": 1,
              "arms": ["ft_rationale", "ft_si_demo", "tripost"], "error_rate": 1.0, "flags": shrink}
    table = main(**config)
    runs = tmp_path / "out" / "runs" / "ma"
    assert [p.name for p in (runs / "warmup").iterdir()] == ["seed0"]  # one M_0, shared by both seeds
    assert [r["stage"] for r in json.loads((runs / "warmup" / "seed0" / "eval_table.json").read_text())] == [0]
    m0 = runs / "warmup" / "seed0" / "hf_model"
    for arm, stages in (("ft_si_demo", [1]), ("tripost", [1])):
        for seed in (0, 1):
            run_dir = runs / arm / f"seed{seed}"
            assert [r["stage"] for r in json.loads((run_dir / "eval_table.json").read_text())] == stages
            assert f"--model.init_args.model={m0}" in (run_dir / "command.sh").read_text()
    demos = read_shard(runs / "ft_si_demo" / "seed0" / "interaction_logs" / "iter_001.jsonl")
    assert len(demos) == 12 and {e.turns[0].by for e in demos} == {"teacher demo"}
    assert all(e.outcome == "improved" for e in demos)  # every attempt had a slip (error_rate 1) and was fixed
    rollouts = read_shard(runs / "tripost" / "seed0" / "interaction_logs" / "iter_001.jsonl")
    assert {e.turns[0].by for e in rollouts} == {"policy"}  # rolled out from M_0 before the first epoch
    seen = [json.loads((runs / "tripost" / f"seed{s}" / "eval_table.json").read_text())[0]["after/seen"] for s in (0, 1)]
    assert table["ma / TriPosT t=1 / after / seen"] == seen
    m0_seen = json.loads((runs / "warmup" / "seed0" / "eval_table.json").read_text())[0]["after/seen"]
    assert table["ma / ft rationale / after / seen"] == [m0_seen]  # one M_0: one value, not three copies
    capsys.readouterr()
    main(**config)  # every run is reused, the report is rebuilt
    assert capsys.readouterr().out.count("reusing") == 5

    # an M_0 trained before: the arms start from it and no new M_0 is trained
    again = main(**config | {"out_dir": str(tmp_path / "again"), "seeds": [0], "arms": ["ft_rationale", "tripost"],
                             "m0": {"ma": str(runs / "warmup" / "seed0")}})
    assert not (tmp_path / "again" / "runs" / "ma" / "warmup").exists()
    command = (tmp_path / "again" / "runs" / "ma" / "tripost" / "seed0" / "command.sh").read_text()
    assert f"--model.init_args.model={m0}" in command
    assert again["ma / ft rationale / after / seen"] == [m0_seen]


def test_arm_runs_in_parallel_split_the_cores_and_all_finish_before_a_failure_is_raised(monkeypatch):
    import experiments.tripost_table as tt

    calls = []

    def fake_run(run_dir, threads=None, **kwargs):
        calls.append((run_dir, threads))
        if run_dir == "b":
            raise SystemExit("run failed (exit 1): see b/output.log")
        return [{"stage": 1, "run": run_dir}]

    monkeypatch.setattr(tt, "run", fake_run)
    monkeypatch.setattr(tt.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert tt.run_all({"x": {"run_dir": "a"}, "y": {"run_dir": "c"}}, 2) == {
        "x": [{"stage": 1, "run": "a"}], "y": [{"stage": 1, "run": "c"}]}
    assert sorted(calls) == [("a", 2), ("c", 2)]  # 4 cores, 2 at a time: 2 threads each

    calls.clear()
    with pytest.raises(SystemExit, match=r"1 of 3 runs failed; the first: run failed \(exit 1\): see b/output.log"):
        tt.run_all({"x": {"run_dir": "a"}, "y": {"run_dir": "b"}, "z": {"run_dir": "c"}}, 3)
    assert sorted(calls) == [("a", 1), ("b", 1), ("c", 1)]  # the others ran to the end

    calls.clear()
    tt.run_all({"x": {"run_dir": "a"}}, 1)
    assert calls == [("a", None)]  # one at a time: every core, no cap
