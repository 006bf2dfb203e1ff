"""The tables' run helper: a finished run is reused, a run killed before its first checkpoint is kept aside (not
overwritten, not deleted), and a failed run is reported with the log to read."""

import pytest

from experiments.runs import run_command


def test_finished_runs_are_reused_without_running(tmp_path, capsys):
    done = tmp_path / "run" / "eval_table.json"
    done.parent.mkdir()
    done.write_text("[]")
    run_command(tmp_path / "run", ["fit", "--no-such-flag"], done)
    assert "reusing" in capsys.readouterr().out and not (tmp_path / "run" / "command.sh").exists()


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
