"""The tables' run helper: a finished run is reused, a run killed before its first checkpoint is kept aside (not
overwritten, not deleted), and a failed run is reported with the log to read."""

import json

import pytest

from experiments.runs import run_command


def test_finished_runs_are_reused_without_running(tmp_path, capsys):
    done = tmp_path / "run" / "eval_table.json"
    done.parent.mkdir()
    done.write_text("[]")
    run_command(tmp_path / "run", ["fit", "--no-such-flag"], done)
    assert "reusing" in capsys.readouterr().out and not (tmp_path / "run" / "command.sh").exists()


@pytest.mark.slow  # runs real subprocesses (seconds)
def test_an_unfinished_run_is_kept_aside_and_a_failure_names_its_log(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "events.out").write_text("what the killed run wrote")
    with pytest.raises(SystemExit, match=r"run failed \(exit 0, eval_table.json missing\): see .*output.log"):
        run_command(run, ["--help"], run / "eval_table.json")  # exits 0 but writes no table
    [kept] = tmp_path.glob("run.partial-*")
    assert (kept / "events.out").read_text() == "what the killed run wrote"
    assert (run / "command.sh").read_text().strip().endswith("cli.py --help")
    assert "usage" in (run / "output.log").read_text()


def _finished_run(tmp_path, args, config):
    """A run folder as a finished ``run_command`` leaves it (settings recorded, table written)."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "settings.json").write_text(json.dumps({"args": args, "config": config.read_text()}))
    (run / "eval_table.json").write_text("[]")
    return run


def test_a_finished_run_is_reused_only_with_the_settings_it_ran_with(tmp_path, capsys):
    config = tmp_path / "arm.yaml"
    config.write_text("seed_everything: 0\n")
    args = ["fit", "--config", str(config), "--trainer.max_epochs=3"]
    run = _finished_run(tmp_path, args, config)
    run_command(run, args, run / "eval_table.json")
    assert "reusing" in capsys.readouterr().out

    changed = ["fit", "--config", str(config), "--trainer.max_epochs=4"]
    with pytest.raises(SystemExit) as error:
        run_command(run, changed, run / "eval_table.json")
    message = str(error.value)
    assert "flags only in the earlier run: ['--trainer.max_epochs=3']" in message
    assert "flags only in this one: ['--trainer.max_epochs=4']" in message
    assert "delete the folder" in message and "--out_dir" in message
    assert "config file's text" not in message

    config.write_text("seed_everything: 1\n")  # same flags, edited config
    with pytest.raises(SystemExit, match="the --config file's text changed"):
        run_command(run, args, run / "eval_table.json")
    assert (run / "eval_table.json").read_text() == "[]"  # refusing never touches the earlier results


def test_a_killed_run_is_not_resumed_with_other_settings(tmp_path):
    config = tmp_path / "arm.yaml"
    config.write_text("seed_everything: 0\n")
    run = _finished_run(tmp_path, ["fit", "--config", str(config)], config)
    (run / "eval_table.json").unlink()
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.ckpt").write_text("weights")
    with pytest.raises(SystemExit, match=r"flags only in this one: \['--seed_everything=1'\]"):
        run_command(run, ["fit", "--config", str(config), "--seed_everything=1"], run / "eval_table.json")
    assert (run / "checkpoints" / "last.ckpt").read_text() == "weights"


def test_threads_cap_the_runs_cpu_threads(tmp_path, monkeypatch):
    from experiments import runs

    monkeypatch.setattr(runs.sys, "executable", "/bin/sh")  # "cli.py" is then a shell script: no torch start-up
    monkeypatch.setattr(runs, "REPO", tmp_path)
    (tmp_path / "cli.py").write_text('echo "$OMP_NUM_THREADS $MKL_NUM_THREADS" > "$1"\n')
    run_command(tmp_path / "run", [str(tmp_path / "run" / "done")], tmp_path / "run" / "done", threads=1)
    assert (tmp_path / "run" / "done").read_text() == "1 1\n"
