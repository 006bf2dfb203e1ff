"""PIT's four stages end to end through cli.py on the synthetic task, shrunk to seconds: reward model, PIT SFT,
the original policy, then curriculum RL (one epoch of each round)."""

import json
import logging

import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cli import main
from datamodules.interaction_log import read_shard
from datamodules.tokenizer import load_tokenizer
from modules.pit import PITPolicy
from tasks.constrained_lists import score

TINY = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64}


def shrunk(tmp_path, name: str, root, **trainer) -> str:
    """configs/pit/<name>.yaml pointed at ``root`` and shrunk to a tiny model and 90 pairs; returns its path."""
    text = open(f"configs/pit/{name}.yaml").read().replace("runs/pit-cl", str(root))
    config = yaml.safe_load(text)
    config["trainer"] |= {"enable_progress_bar": False, "enable_model_summary": False, "max_epochs": 1} | trainer
    config["model"]["init_args"] |= {"tiny": TINY} if "tiny" in config["model"]["init_args"] else {}
    data = config["data"]["init_args"]
    data["preferences"]["init_args"]["num_pairs"] = 90
    data |= {"batch_size": 8} | ({"num_rl_prompts": 12} if data["stage"] == "rl" else {})
    for callback in config["trainer"].get("callbacks") or []:
        if callback["class_path"].endswith("IterativeImprovementEval"):
            callback["init_args"] |= {"num_prompts": 6, "iterations": 2}
    path = tmp_path / f"{name}-{len(list(tmp_path.glob('*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


@pytest.mark.slow
def test_pit_stages_run_through_the_cli_and_leave_logs_models_and_metrics(tmp_path, caplog, monkeypatch):
    root = tmp_path / "pit"
    main(["fit", "--config", shrunk(tmp_path, "constrained_lists_reward_model", root)])
    assert [len(read_shard(root / "preferences" / f"{f}.jsonl")) for f in ("sft", "rm", "rl")] == [30, 30, 30]
    assert (root / "rm" / "reward_model" / "config.json").is_file()

    with caplog.at_level(logging.INFO):
        main(["fit", "--config", shrunk(tmp_path, "constrained_lists_sft", root)])
    assert "PIT iterative improvement (held-out; iteration 0 = the references)" in caplog.text
    main(["fit", "--config", shrunk(tmp_path, "constrained_lists_sft", root), "--data.init_args.stage", "policy_sft",
          "--trainer.logger.init_args.version", "policy", "--trainer.callbacks=[]"])
    assert (root / "sft" / "hf_model" / "model.safetensors").is_file()
    assert (root / "policy" / "hf_model" / "model.safetensors").is_file()

    improvements = []  # (inputs, outputs) of every improve call: the evaluation's only caller, 2 per epoch here
    improve = PITPolicy.improve

    def recording(self, pairs, temperature):
        improvements.append((list(pairs), improve(self, pairs, temperature)))
        return improvements[-1][1]

    monkeypatch.setattr(PITPolicy, "improve", recording)
    main(["fit", "--config", shrunk(tmp_path, "constrained_lists_rl", root, max_epochs=2),
          "--model.init_args.round1_epochs", "1"])
    rollouts = root / "rl" / "rollouts"
    first, second = read_shard(rollouts / "iter_001.jsonl"), read_shard(rollouts / "iter_002.jsonl")
    assert len(first) == len(second) == 12
    assert {e.turns[0].by for e in first} == {"dataset"} and {e.turns[0].by for e in second} == {"original_policy"}
    assert all({"gap_reward", "reference_gap", "quality"} <= set(e.scores) for e in first + second)
    assert len(read_shard(rollouts / "references_round2.jsonl")) == 12
    tok = load_tokenizer(root / "rl" / "hf_model")
    for e in first + second:  # the buffer keeps the ids the policy sampled: PPO trains on exactly those
        response = e.turns[1]
        assert tok.decode(response.tokens, skip_special_tokens=True) == response.text
        assert (response.tokens[-1] == tok.eos_token_id) == bool(e.scores["stopped"])

    events = EventAccumulator(str(root / "rl")).Reload()
    scalars = set(events.Tags()["scalars"])
    for tag in ("ppo/reward", "ppo/kl", "ppo/clip_fraction", "ppo/value_loss", "ppo/entropy", "pit/response_length",
                "pit/gap_reward_rollouts", "pit/gap_reward_references", "pit/exact_score_rollouts",
                "pit_eval/exact_score/iter_2", "pit_eval/rm_win_rate/iter_1", "time/generation_s"):
        assert tag in scalars, sorted(scalars)
    assert [s.value for s in events.Scalars("pit/round")] == [1.0, 2.0]

    # the evaluation's win / lose rates recounted from what the policy wrote: y_0 are held-out rejected replies,
    # their exact scores stored in the reward-model fold; y_i scored here; a tie is neither a win nor a loss
    assert len(improvements) == 2 * 2  # 2 epochs x 2 iterations
    rm_fold = read_shard(root / "preferences" / "rm.jsonl")
    rejected = {(e.prompt, e.turns[0].text): e.scores["quality"][0] for e in rm_fold}  # prompts can repeat
    counted = {}
    for epoch in range(2):
        (pairs, first), (chained, second) = improvements[2 * epoch : 2 * epoch + 2]
        assert len(pairs) == 3  # 10% of the 30-pair fold is held out, fewer than num_prompts = 6
        assert chained == [(x, y) for (x, _), y in zip(pairs, first)]  # iteration 2 improves iteration 1's output
        base = [rejected[pair] for pair in pairs]
        for i, outputs in enumerate((first, second), start=1):
            new = [score(x, y) for (x, _), y in zip(pairs, outputs)]
            counted.setdefault(f"exact_win_rate/iter_{i}", []).append(sum(n > b for n, b in zip(new, base)) / 3)
            counted.setdefault(f"exact_lose_rate/iter_{i}", []).append(sum(n < b for n, b in zip(new, base)) / 3)
    logged = {name: [s.value for s in events.Scalars(f"pit_eval/{name}")] for name in counted}
    assert logged == {name: pytest.approx(values, abs=1e-6) for name, values in counted.items()}, (logged, counted)
    last = json.loads((root / "rl" / "pit_eval.json").read_text())  # the last evaluation's numbers
    saved = {f"{n}/iter_{i}": last[n][i] for n in ("exact_win_rate", "exact_lose_rate") for i in (1, 2)}
    assert saved == pytest.approx({name: values[-1] for name, values in counted.items()})
