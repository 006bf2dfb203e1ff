"""Running ``cli.py fit`` for the reproduction tables: one process per run, its command and output kept in the
run's folder, finished runs reused and killed ones resumed, so re-running a table's command picks up where it
stopped."""

from __future__ import annotations

import itertools
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_command(run_dir: Path, args: list[str], done: Path, threads: int | None = None) -> None:
    """``python cli.py <args>`` unless ``done`` exists (the run finished before). A run killed midway resumes from
    its last checkpoint; one killed before any checkpoint is moved aside (``<run>.partial-<time>``) and started
    over. The command goes to ``{run_dir}/command.sh``, its output to ``{run_dir}/output.log``, and the settings
    (the arguments and the ``--config`` file's text) to ``{run_dir}/settings.json``: a finished or killed run is
    only reused with the settings it was started with, so a changed flag or config never yields stale results.
    ``threads`` caps the run's CPU threads (``OMP_NUM_THREADS``), for runs that share the machine."""
    settings = {"args": args, "config": _config_text(args)}
    if done.exists() or (run_dir / "checkpoints" / "last.ckpt").exists():
        _check_same_settings(run_dir, settings)
    if done.exists():
        print(f"reusing {run_dir}", flush=True)
        return
    command = [sys.executable, "cli.py", *args]
    if (run_dir / "checkpoints" / "last.ckpt").exists():
        command.append("--ckpt_path=last")
    elif run_dir.exists() and any(run_dir.iterdir()):
        # killed before its first checkpoint: nothing to resume; keep what it wrote, start over beside it
        kept = run_dir.with_name(f"{run_dir.name}.partial-{time.strftime('%Y%m%d-%H%M%S')}")
        run_dir.rename(kept)
        print(f"moved the unfinished run without a checkpoint to {kept}", flush=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "settings.json").write_text(json.dumps(settings, indent=1) + "\n")
    (run_dir / "command.sh").write_text(shlex.join(command) + "\n")
    env = os.environ | ({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)} if threads else {})
    print(f"+ {shlex.join(command)}" + (f"  ({threads} threads)" if threads else ""), flush=True)
    start = time.perf_counter()
    with open(run_dir / "output.log", "a") as log:
        code = subprocess.run(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, check=False).returncode
    if code or not done.exists():
        raise SystemExit(f"run failed (exit {code}, {done.name} {'written' if done.exists() else 'missing'}): "
                         f"see {run_dir / 'output.log'}")
    print(f"  done in {time.perf_counter() - start:.0f} s: {run_dir}", flush=True)


def _config_text(args: list[str]) -> str | None:
    """The text of the ``--config`` file in ``args`` (None without one)."""
    for flag, value in itertools.pairwise(args):
        if flag == "--config":
            return (REPO / value).read_text()  # an absolute value stays absolute
    return None


def _check_same_settings(run_dir: Path, settings: dict) -> None:
    """Refuse to reuse or resume ``run_dir`` if it was started with other settings (older runs without a
    ``settings.json`` are reused as they are, with a note)."""
    recorded = run_dir / "settings.json"
    if not recorded.exists():
        print(f"note: {run_dir} has no settings.json (run by an older version); reusing it unchecked", flush=True)
        return
    before = json.loads(recorded.read_text())
    if before == settings:
        return
    differences = [f"flags only in the earlier run: {[a for a in before['args'] if a not in settings['args']]}",
                   f"flags only in this one: {[a for a in settings['args'] if a not in before['args']]}"]
    if before["config"] != settings["config"]:
        differences.append("the --config file's text changed")
    raise SystemExit(f"{run_dir} was run with other settings ({'; '.join(differences)}). Its results would not "
                     "match this command: delete the folder to run it again, or pass another --out_dir.")
