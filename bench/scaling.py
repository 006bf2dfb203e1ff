"""Throughput and memory of a real ``cli.py fit`` run under any strategy: training tokens/s, rollout tokens/s, peak
memory. The run is the config you give, with your flags, plus a measuring callback; figures print at the end.

    python bench/scaling.py -- --config configs/tripost/multistep_arithmetic_tiny.yaml --trainer.max_epochs=7
    python bench/scaling.py -- --config configs/tripost/smollm2_135m_gpu.yaml --trainer.max_epochs=5     # 1 GPU, FSDP
    python bench/scaling.py -- --config configs/tripost/smollm2_135m_gpu.yaml --trainer.devices=8

Everything after ``--`` goes to ``cli.py fit``. Figures (all ranks together):

- training tokens/s: non-pad tokens of the training batches over the time spent in training steps (forward,
  backward, optimiser), counted on every rank and summed; the first ``--skip`` steps of the run are left out.
- rollout tokens/s: generated tokens (EOS included) per second of rollout generation, from the rollout callback's
  ``rollouts/tokens_per_s``, averaged over the rounds.
- peak memory: ``torch.cuda.max_memory_allocated`` per GPU (the largest rank), or the largest rank's peak RSS on CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from lightning.pytorch import Callback

REPO = Path(__file__).resolve().parents[1]


class Meter(Callback):
    """Times training steps and counts their non-pad tokens; writes ``{folder}/rank{r}.json`` at fit end."""

    def __init__(self, folder: str, skip: int = 5) -> None:
        self.folder, self.skip = folder, skip
        self.steps, self.tokens, self.seconds, self._start = 0, 0, 0.0, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch["input_ids"].is_cuda:
            torch.cuda.synchronize()
        self.steps += 1
        if self.steps > self.skip:
            self.seconds += time.perf_counter() - self._start
            self.tokens += int(batch["attention_mask"].sum())

    def on_fit_end(self, trainer, pl_module) -> None:
        rollouts = [r["rollouts/tokens_per_s"] for r in _rollout_history(trainer) if "rollouts/tokens_per_s" in r]
        cuda = torch.cuda.is_available() and pl_module.device.type == "cuda"
        record = {
            "rank": trainer.global_rank, "world_size": trainer.world_size, "steps": self.steps,
            "tokens": self.tokens, "seconds": self.seconds,
            "peak_memory_gb": (torch.cuda.max_memory_allocated() if cuda
                               else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2**30,
            "memory_kind": "cuda allocated" if cuda else "process RSS",
            "rollout_tokens_per_s": rollouts,
            "device": torch.cuda.get_device_name() if cuda else "cpu",
            "strategy": type(trainer.strategy).__name__, "precision": trainer.precision,
        }
        Path(self.folder).mkdir(parents=True, exist_ok=True)
        (Path(self.folder) / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


def _rollout_history(trainer) -> list[dict]:
    from callbacks.rollouts import OnlineRollouts

    return [row for cb in trainer.callbacks if isinstance(cb, OnlineRollouts) for row in cb.history]


def summarize(folder: Path) -> dict:
    ranks = [json.loads(p.read_text()) for p in sorted(folder.glob("rank*.json"))]
    if not ranks:
        raise SystemExit(f"no measurements in {folder}: the run failed before fit ended (see its output above)")
    slowest = max(r["seconds"] for r in ranks)  # ranks step together: the slowest sets the pace
    rollouts = ranks[0]["rollout_tokens_per_s"]
    return {
        "device": ranks[0]["device"], "strategy": ranks[0]["strategy"], "precision": ranks[0]["precision"],
        "world_size": len(ranks), "measured_steps_per_rank": ranks[0]["steps"],
        "training_tokens_per_s": sum(r["tokens"] for r in ranks) / slowest if slowest else 0.0,
        "rollout_tokens_per_s": sum(rollouts) / len(rollouts) if rollouts else None,
        "rollout_rounds": len(rollouts),
        f"peak_memory_gb ({ranks[0]['memory_kind']}, largest rank)": max(r["peak_memory_gb"] for r in ranks),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip", type=int, default=5, help="training steps left out of the figure at the start")
    parser.add_argument("cli_args", nargs=argparse.REMAINDER, help="-- then the cli.py fit arguments")
    args = parser.parse_args()
    cli_args = args.cli_args[1:] if args.cli_args[:1] == ["--"] else args.cli_args
    with tempfile.TemporaryDirectory() as folder:
        command = [sys.executable, str(REPO / "cli.py"), "fit", *cli_args,
                   "--trainer.callbacks+=bench.scaling.Meter", f"--trainer.callbacks.folder={folder}",
                   f"--trainer.callbacks.skip={args.skip}"]
        # Meter is appended last, so --trainer.callbacks.<arg> flags after it would set Meter's: pass them before.
        print("+", " ".join(command), flush=True)
        started = time.perf_counter()
        code = subprocess.run(command, cwd=REPO, env=os.environ | {"PYTHONPATH": str(REPO)}).returncode
        wall = time.perf_counter() - started
        if code:
            raise SystemExit(f"cli.py exited {code}")
        figures = summarize(Path(folder)) | {"wall_s": wall}
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
