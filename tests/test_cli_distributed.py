"""Two CPU processes (ddp_spawn): a TriPosT run with rollouts finishes, ranks agree on weights and data."""

import json

import pytest

from cli import main
from datamodules.interaction_log import list_shards, read_shard
from tests.helpers import assert_export_holds
from tests.test_cli import LORA, tiny_args


@pytest.mark.slow
def test_ddp_spawn_two_ranks_roll_out_once_and_end_identical(tmp_path):
    run, digests = tmp_path / "run", tmp_path / "digests"
    main(tiny_args(run, 5, "--trainer.strategy=ddp_spawn", "--trainer.devices=2",
                   "--trainer.callbacks+=tests.helpers.WeightsDigest", f"--trainer.callbacks.folder={digests}"))
    shards = list_shards(run / "interaction_logs")
    assert sorted(shards) == [1, 2]  # rollouts once per iteration (rank 0), not once per rank
    assert [len(read_shard(p)) for p in shards.values()] == [12, 12]
    ranks = [json.loads((digests / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1] and ranks[0]["iteration"] == 2  # same weights, same data on both ranks
    assert_export_holds(run / "hf_model", ranks[0]["sums"])  # exported once, by rank 0, without a hang


@pytest.mark.slow
def test_ddp_spawn_two_ranks_train_lora_adapters_to_identical_weights(pretrained_dir, tmp_path):
    run, digests = tmp_path / "run", tmp_path / "digests"
    main(tiny_args(run, 3, "--trainer.strategy=ddp_spawn", "--trainer.devices=2", f"--model.init_args.model={pretrained_dir}",
                   *LORA, "--trainer.callbacks+=tests.helpers.WeightsDigest", f"--trainer.callbacks.folder={digests}"))
    ranks = [json.loads((digests / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1] and ranks[0]["iteration"] == 1  # warm-up, then one iteration of two epochs
    adapters = {name: value for name, value in ranks[0]["sums"].items() if "lora_B" in name}
    assert len(adapters) == 7 and all(value != 0 for value in adapters.values())  # trained from B = 0
    assert (run / "hf_model" / "adapter" / "adapter_config.json").is_file()
