"""Two CPU processes under FSDP2 (``ModelParallelStrategy`` + ``fully_shard`` in ``configure_model``), launched as
``python cli.py fit`` would be (the strategy re-runs the command per rank, so not inside pytest's process).

TriPosT: a run killed after its first rollouts resumes under the same strategy; rollouts are collected once per
iteration, both ranks end on the same iteration with the same (whole) weights, and the exported Hugging Face folder
loads with plain transformers and holds exactly those weights. PIT: all four stages run sharded.
"""

import json
import subprocess
import sys

import pytest

from datamodules.interaction_log import list_shards, read_shard
from tests.helpers import assert_export_holds
from tests.test_cli import LORA, REPO, tiny_args
from tests.test_cli_pit import shrunk

FSDP2 = ["--trainer.strategy=lightning.pytorch.strategies.ModelParallelStrategy",
         "--trainer.strategy.data_parallel_size=2", "--trainer.strategy.tensor_parallel_size=1",
         "--trainer.devices=2", "--trainer.accelerator=cpu"]


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "cli.py", *args], cwd=REPO, capture_output=True, text=True, timeout=600)
    if check and result.returncode:
        raise AssertionError(f"cli.py {' '.join(args)} exited {result.returncode}:\n{result.stderr[-4000:]}")
    return result


@pytest.mark.slow
def test_tripost_under_fsdp2_resumes_and_ranks_end_identical(tmp_path):
    run, digests = tmp_path / "run", tmp_path / "digests"
    killed = cli(*tiny_args(run, 5, *FSDP2, "--trainer.callbacks+=tests.helpers.CrashAtEpoch",
                            "--trainer.callbacks.epoch=3"), check=False)
    assert killed.returncode != 0 and "simulated kill at the start of epoch 3" in killed.stderr
    assert sorted(list_shards(run / "interaction_logs")) == [1, 2]
    first = [(p, p.read_bytes()) for p in list_shards(run / "interaction_logs").values()]

    cli(*tiny_args(run, 5, *FSDP2, "--ckpt_path=last", "--trainer.callbacks+=tests.helpers.WeightsDigest",
                   f"--trainer.callbacks.folder={digests}"))
    assert [(p, p.read_bytes()) for p in list_shards(run / "interaction_logs").values()] == first  # reused
    assert [len(read_shard(p)) for p, _ in first] == [12, 12]
    ranks = [json.loads((digests / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1] and ranks[0]["iteration"] == 2
    assert_export_holds(run / "hf_model", ranks[0]["sums"])


@pytest.mark.slow
def test_tripost_lora_under_fsdp2_ranks_end_identical(pretrained_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    run, digests = tmp_path / "run", tmp_path / "digests"
    cli(*tiny_args(run, 3, *FSDP2, f"--model.init_args.model={pretrained_dir}", *LORA,
                   "--trainer.callbacks+=tests.helpers.WeightsDigest", f"--trainer.callbacks.folder={digests}"))
    ranks = [json.loads((digests / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1] and ranks[0]["iteration"] == 1  # warm-up, then one iteration of two epochs
    adapters = {name: value for name, value in ranks[0]["sums"].items() if "lora_B" in name}
    assert len(adapters) == 7 and all(value != 0 for value in adapters.values())
    exported = AutoModelForCausalLM.from_pretrained(run / "hf_model").state_dict()  # merged from the gathered shards
    assert not any("lora" in name for name in exported)
    assert (run / "hf_model" / "adapter" / "adapter_model.safetensors").is_file()


@pytest.mark.slow
def test_pit_stages_run_under_fsdp2(tmp_path):
    root = tmp_path / "pit"
    cli("fit", "--config", shrunk(tmp_path, "constrained_lists_reward_model", root), *FSDP2)
    cli("fit", "--config", shrunk(tmp_path, "constrained_lists_sft", root), *FSDP2)
    cli("fit", "--config", shrunk(tmp_path, "constrained_lists_sft", root), "--data.init_args.stage", "policy_sft",
        "--trainer.logger.init_args.version", "policy", "--trainer.callbacks=[]", *FSDP2)
    cli("fit", "--config", shrunk(tmp_path, "constrained_lists_rl", root, max_epochs=2),
        "--model.init_args.round1_epochs", "1", *FSDP2)
    rollouts = root / "rl" / "rollouts"
    first, second = read_shard(rollouts / "iter_001.jsonl"), read_shard(rollouts / "iter_002.jsonl")
    assert len(first) == len(second) == 12  # once per iteration, not once per rank
    assert {e.turns[0].by for e in second} == {"original_policy"}
    for folder in ("rm/reward_model", "sft/hf_model", "policy/hf_model", "rl/hf_model"):
        assert (root / folder / "model.safetensors").is_file(), folder
