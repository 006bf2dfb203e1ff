"""The command line end to end: configs parse, errors are clear, a tiny run trains, logs, exports and resumes."""

import json
import logging
import math
import re
from collections import Counter
from pathlib import Path

import pytest
import torch
from jsonargparse import CLI
from lightning.pytorch import LightningDataModule, LightningModule
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from transformers import AutoModelForCausalLM, AutoTokenizer

from cli import SelfImproveCLI, main
from datamodules.interaction_log import list_shards, read_shard
from feedback.collect_rationales import collect

REPO = Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "configs/tripost/multistep_arithmetic_tiny.yaml")


def tiny_args(run_dir, max_epochs=5, *extra):
    """The default config shrunk to seconds: 1 warm-up epoch, then iterations of 2 epochs."""
    return [
        "fit", "--config", CONFIG,
        f"--trainer.logger.init_args.save_dir={run_dir}",
        f"--trainer.max_epochs={max_epochs}",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--model.init_args.warmup_epochs=1",
        "--model.init_args.epochs_per_iteration=2",
        "--model.init_args.tiny.hidden_size=32",
        "--model.init_args.tiny.num_layers=1",
        "--model.init_args.tiny.num_heads=2",
        "--model.init_args.tiny.intermediate_size=64",
        "--model.init_args.max_new_tokens=40",
        "--model.init_args.max_rounds=2",
        "--data.init_args.task.init_args.num_train=12",
        "--data.init_args.task.init_args.num_test_per_combo=1",
        "--data.init_args.vocab_size=400",
        "--data.init_args.batch_size=4",
        "--data.init_args.min_examples=0",  # 12 rollouts of a 1-epoch model give (almost) no usable episode
        *extra,
    ]


@pytest.mark.parametrize("config", sorted(str(p.relative_to(REPO)) for p in (REPO / "configs").rglob("*.yaml")))
def test_every_config_parses(config, capsys):
    """Training configs parse through cli.py; configs/rationales/ through the rationale-collection command."""
    rationales = config.startswith("configs/rationales/")
    with pytest.raises(SystemExit) as exit_:
        if rationales:
            CLI(collect, as_positional=False, args=["--config", str(REPO / config), "--print_config"])
        else:
            main(["fit", "--config", str(REPO / config), "--print_config"])
    assert exit_.value.code in (None, 0)
    printed = capsys.readouterr().out
    assert "class_path:" in printed and ("teacher:" if rationales else "trainer:") in printed
    header = (REPO / config).read_text().splitlines()[0]
    assert header.startswith("#"), f"{config} must start with a header comment (what it runs, how to launch it)"


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--model.init_args.warmup_epoch=3", "warmup_epoch"),  # a typo: LightningCLI names the bad key
        ("--data.init_args.task=tasks.NoSuchTask", "NoSuchTask"),  # an unknown task
    ],
)
def test_bad_flags_are_refused_with_the_key(flag, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", CONFIG, flag, "--print_config"])
    assert exit_.value.code not in (None, 0)
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_tiny_fit_writes_shards_scalars_table_and_export(tmp_path, caplog):
    run = tmp_path / "run"
    with caplog.at_level(logging.INFO):
        main(tiny_args(run))
    shards = list_shards(run / "interaction_logs")
    assert sorted(shards) == [1, 2]  # one shard per iteration; none after the last
    episodes = read_shard(shards[1])
    assert len(episodes) == 12 and {e.iteration for e in episodes} == {1}
    unnumbered = 0
    for episode in episodes:  # the policy's own attempt, judged: after one epoch it writes no numbered steps yet
        attempt = episode.turns[0]
        assert (attempt.role, attempt.by) == ("attempt", "policy")
        if not any(re.match(r"\(\d+\)", line.strip()) for line in attempt.text.splitlines()):
            unnumbered += 1
            assert (episode.outcome, episode.reason) == (
                "dropped", "teacher feedback: unverifiable attempt: the attempt has no numbered steps"), episode
    assert unnumbered > 0  # the check above ran

    events = EventAccumulator(str(run)).Reload()
    scalars = set(events.Tags()["scalars"])
    for tag in ("train/loss_epoch", "eval/before/seen", "eval/after/total", "rollouts/dropped", "data/examples_gold",
                "data/examples_improvement"):
        assert tag in scalars, sorted(scalars)
    assert len(events.Scalars("eval/before/total")) == 3  # warm-up and two iterations
    assert [s.value for s in events.Scalars("data/examples_total")][0] == 12  # the warm-up trains on 12 gold rationales
    table = json.loads((run / "eval_table.json").read_text())
    assert [row["stage"] for row in table] == [0, 1, 2]
    for tag in ("before/total", "after/seen", "strict/after/total", "revised/to_right", "self_check/no_feedback"):
        assert [s.value for s in events.Scalars(f"eval/{tag}")] == pytest.approx([row[tag] for row in table]), tag
    outcomes = Counter(e.outcome for e in episodes)
    for outcome in ("correct", "improved", "feedback_only", "failed", "dropped"):  # and the shard's outcome counts
        assert events.Scalars(f"rollouts/{outcome}")[0].value == outcomes[outcome], outcome
    assert "eval/samples/text_summary" in events.Tags()["tensors"]

    assert "Final accuracy (%)" in caplog.text and "TriPosT t=2" in caplog.text and "ft rationale" in caplog.text

    export = run / "hf_model"
    model = AutoModelForCausalLM.from_pretrained(export)
    tokenizer = AutoTokenizer.from_pretrained(export)
    ids = tokenizer("Q: (1 + 2) =", return_tensors="pt").input_ids
    assert model(ids).logits.shape[-1] == len(tokenizer)


@pytest.mark.slow
def test_killed_run_resumes_at_the_right_iteration(tmp_path):
    run = tmp_path / "run"
    # epochs: 0 = warm-up, 1-2 = iteration 1, 3-4 = iteration 2; killed as epoch 2 starts (mid-iteration 1)
    with pytest.raises(SystemExit, match="simulated kill"):
        main(tiny_args(run, 5, "--trainer.callbacks+=tests.helpers.CrashAtEpoch", "--trainer.callbacks.epoch=2"))
    assert sorted(list_shards(run / "interaction_logs")) == [1]
    first_shard = (run / "interaction_logs/iter_001.jsonl").read_bytes()
    checkpoint = torch.load(run / "checkpoints/last.ckpt", weights_only=False)
    assert checkpoint["epoch"] == 1 and checkpoint["TriPosTDataModule"] == {"iteration": 1}

    with pytest.raises(FileExistsError, match="--ckpt_path last"):  # a fresh start must not reuse old shards
        main(tiny_args(run, 5))

    main(tiny_args(run, 5, "--ckpt_path=last"))
    assert (run / "interaction_logs/iter_001.jsonl").read_bytes() == first_shard  # intact, not collected again
    assert sorted(list_shards(run / "interaction_logs")) == [1, 2]
    final = torch.load(run / "checkpoints/last.ckpt", weights_only=False)
    assert final["epoch"] == 4
    datamodule_state = final["TriPosTDataModule"]
    assert datamodule_state == {"iteration": 2}
    eval_state = next(v for k, v in final["callbacks"].items() if "SelfImproveEval" in k)
    assert [row["stage"] for row in eval_state["rows"]] == [0, 1, 2]
    assert json.loads((run / "interaction_logs/iter_002.jsonl").read_text().splitlines()[0])["iteration"] == 2


@pytest.mark.slow
def test_a_run_killed_mid_epoch_resumes_to_the_uninterrupted_weights(tmp_path):
    main(tiny_args(tmp_path / "whole", 3))
    killed = tmp_path / "killed"
    # epochs: 0 = warm-up, 1-2 = iteration 1; killed inside epoch 2, so it resumes from epoch 1's checkpoint
    with pytest.raises(SystemExit, match="simulated kill at batch 1 of epoch 2"):
        main(tiny_args(killed, 3, "--trainer.callbacks+=tests.helpers.CrashAtBatch", "--trainer.callbacks.epoch=2",
                       "--trainer.callbacks.batch=1"))
    assert torch.load(killed / "checkpoints/last.ckpt", weights_only=False)["epoch"] == 1
    main(tiny_args(killed, 3, "--ckpt_path=last"))
    whole = torch.load(tmp_path / "whole/checkpoints/last.ckpt", weights_only=False)
    resumed = torch.load(killed / "checkpoints/last.ckpt", weights_only=False)
    assert resumed["global_step"] == whole["global_step"]
    assert resumed["state_dict"].keys() == whole["state_dict"].keys()
    differences = {name: (resumed["state_dict"][name] - value).abs().max().item()
                   for name, value in whole["state_dict"].items()}
    assert max(differences.values()) <= 1e-6, differences
    assert (killed / "interaction_logs/iter_001.jsonl").read_bytes() == (tmp_path / "whole/interaction_logs/iter_001.jsonl").read_bytes()


@pytest.mark.slow
def test_the_trainer_drives_each_stages_warm_up_and_cosine_at_its_own_peak(tmp_path):
    rates = tmp_path / "lr.json"
    main(tiny_args(tmp_path / "run", 3, "--model.init_args.lr=1e-2", "--model.init_args.iteration_lr=4e-3",
                   "--model.init_args.warmup_ratio=0.5", "--model.init_args.min_lr_ratio=0.0",
                   "--trainer.callbacks+=tests.helpers.LearningRates", f"--trainer.callbacks.path={rates}"))
    rows = json.loads(rates.read_text())  # [epoch, batch, batches in the epoch, lr]
    # warm-up stage (epoch 0): 12 gold rationales in batches of 4 = 3 batches; at batch k the progress is p = k/3,
    # the factor max(min(1, p / 0.5), 1e-3) * 0.5 * (1 + cos(pi p)) of lr = 1e-2:
    #   k=0: 1e-3 * 1 = 1e-3 -> 1e-5;  k=1: (2/3) * 0.5 * (1 + 0.5) = 0.5 -> 5e-3;  k=2: 1 * 0.5 * (1 - 0.5) = 0.25 -> 2.5e-3
    assert [row[:3] for row in rows if row[0] == 0] == [[0, 0, 3], [0, 1, 3], [0, 2, 3]]
    assert [row[3] for row in rows if row[0] == 0] == pytest.approx([1e-5, 5e-3, 2.5e-3])
    # iteration 1 (epochs 1-2, n batches each) at its own peak 4e-3, warming up again from 1e-3 of it:
    # epoch 1 batch k: p = k / 2n, factor (k/n) * 0.5 * (1 + cos(pi p)); epoch 2 batch k: p = 1/2 + k / 2n, factor
    # 0.5 * (1 + cos(pi p)). Their first batches: 4e-3 * 1e-3 = 4e-6 and 4e-3 * 0.5 = 2e-3.
    first, second = ([row for row in rows if row[0] == epoch] for epoch in (1, 2))
    n = first[0][2]
    assert n >= 2 and [row[1] for row in first] == [row[1] for row in second] == list(range(n))
    assert first[0][3] == pytest.approx(4e-6) and second[0][3] == pytest.approx(2e-3)
    assert [row[3] for row in first] == pytest.approx(
        [4e-3 * max(k / n, 1e-3) * 0.5 * (1 + math.cos(math.pi * k / (2 * n))) for k in range(n)])
    assert [row[3] for row in second] == pytest.approx(
        [4e-3 * 0.5 * (1 + math.cos(math.pi * (0.5 + k / (2 * n)))) for k in range(n)])


@pytest.mark.slow
def test_fit_from_a_pretrained_folder(pretrained_dir, tmp_path):
    run = tmp_path / "run"
    main(tiny_args(run, 3, f"--model.init_args.model={pretrained_dir}", "--model.init_args.epochs_per_iteration=1"))
    assert sorted(list_shards(run / "interaction_logs")) == [1, 2]
    assert not (run / "interaction_logs/tokenizer").exists()  # the model's own tokenizer was used
    exported = AutoModelForCausalLM.from_pretrained(run / "hf_model")
    original = AutoModelForCausalLM.from_pretrained(pretrained_dir)
    assert exported.config.hidden_size == 32
    assert not torch.equal(exported.lm_head.weight, original.lm_head.weight)  # it trained


def test_a_pretrained_model_brings_its_own_tokenizer(pretrained_dir, tmp_path):
    args = tiny_args(tmp_path / "run", 3, f"--model.init_args.model={pretrained_dir}")[1:]  # no subcommand: run=False
    cli = SelfImproveCLI(LightningModule, LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                         args=args, run=False)
    assert cli.datamodule.tokenizer_path == str(pretrained_dir)
    other = tmp_path / "other_tokenizer"
    cli = SelfImproveCLI(LightningModule, LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                         args=[*args, f"--data.init_args.tokenizer={other}"], run=False)
    assert cli.datamodule.tokenizer_path == str(other)  # an explicit tokenizer wins


def test_a_model_path_that_loads_nothing_names_the_flag(tmp_path, ma_tokenizer):
    ma_tokenizer.save_pretrained(tmp_path / "tokenizer_only")  # a tokenizer, but no model
    with pytest.raises(FileNotFoundError, match=r"--model.init_args.model='.*tokenizer_only' could not be loaded as a Hugging Face model"):
        main(tiny_args(tmp_path / "run", 3, f"--model.init_args.model={tmp_path / 'tokenizer_only'}"))
    with pytest.raises(FileNotFoundError, match=r"--data.init_args.tokenizer='.*nowhere' \(by default the pretrained"):
        main(tiny_args(tmp_path / "run2", 3, f"--model.init_args.model={tmp_path / 'nowhere'}"))


def test_lora_that_matches_no_module_names_the_flag_and_the_layers(pretrained_dir, tmp_path):
    with pytest.raises(ValueError, match=r"--model.init_args.lora.target_modules=\['nope'\] matches no module.*"
                                         r"'down_proj', .*'q_proj'"):
        main(tiny_args(tmp_path / "run", 3, f"--model.init_args.model={pretrained_dir}",
                       "--model.init_args.lora.target_modules=[nope]"))


LORA = ["--model.init_args.lora.r=4", "--model.init_args.lora.alpha=8", "--model.init_args.lora.dropout=0.0",
        "--model.init_args.lr=3e-2", "--model.init_args.iteration_lr=3e-2"]


@pytest.mark.slow
def test_lora_trains_only_adapters_and_exports_merged_weights_and_the_adapter(pretrained_dir, tmp_path):
    from peft import PeftModel

    run = tmp_path / "run"
    main(tiny_args(run, 3, f"--model.init_args.model={pretrained_dir}", *LORA))
    original = AutoModelForCausalLM.from_pretrained(pretrained_dir)
    state = torch.load(run / "checkpoints/last.ckpt", weights_only=False)["state_dict"]
    base = {k.removeprefix("model.base_model.model.").replace(".base_layer", ""): v for k, v in state.items()
            if "lora_" not in k}
    assert set(base) == set(original.state_dict())
    assert all(torch.equal(v, original.state_dict()[k]) for k, v in base.items())  # the base is frozen
    lora_b = [v for k, v in state.items() if "lora_B" in k]
    assert len(lora_b) == 7 and all(v.abs().sum() > 0 for v in lora_b)  # 7 linear layers per block; they trained

    exported = AutoModelForCausalLM.from_pretrained(run / "hf_model")  # plain transformers, no PEFT
    assert not any("lora" in k for k in exported.state_dict())
    ids = torch.tensor([[1, 5, 9, 13, 7, 21]])
    assert (exported(ids).logits - original(ids).logits).abs().max() > 1e-3  # the merged adapters change the model
    adapted = PeftModel.from_pretrained(original, run / "hf_model" / "adapter")  # the adapter on the original base
    assert torch.allclose(exported(ids).logits, adapted(ids).logits, atol=1e-5)


@pytest.mark.slow
def test_lora_with_gradient_checkpointing_trains_the_same_adapters(pretrained_dir, tmp_path):
    flags = [f"--model.init_args.model={pretrained_dir}", *LORA, "--trainer.max_steps=6"]
    main(tiny_args(tmp_path / "plain", 3, *flags))
    main(tiny_args(tmp_path / "checkpointed", 3, *flags, "--model.init_args.gradient_checkpointing=true"))
    plain, checkpointed = (torch.load(tmp_path / run / "checkpoints/last.ckpt", weights_only=False)["state_dict"]
                           for run in ("plain", "checkpointed"))
    adapters = [k for k in plain if "lora_B" in k]
    assert adapters and all(plain[k].abs().sum() > 0 for k in adapters)  # the frozen embeddings did not stop grads
    assert max((plain[k] - checkpointed[k]).abs().max().item() for k in adapters) <= 1e-6


def test_bfloat16_weights_load_as_asked_and_lora_adapters_stay_float32(pretrained_dir, tmp_path):
    from modules.pretrained import LoRA, add_lora, load_pretrained

    model = load_pretrained(AutoModelForCausalLM, str(pretrained_dir), flag="--model.init_args.model", dtype="bfloat16",
                            attn_implementation="eager")
    assert model.dtype == torch.bfloat16 and model.config._attn_implementation == "eager"
    adapted = add_lora(model, LoRA(r=4), "CAUSAL_LM", "--model.init_args.lora")
    dtypes = {p.dtype for name, p in adapted.named_parameters() if "lora_" in name}
    assert dtypes == {torch.float32}  # PEFT keeps the trained adapters in float32 over a bfloat16 base
    with pytest.raises(ValueError, match="dtype='float16': expected one of"):
        load_pretrained(AutoModelForCausalLM, str(pretrained_dir), flag="--model.init_args.model", dtype="float16")


@pytest.mark.slow
def test_a_killed_lora_run_resumes_adapters_and_optimiser(pretrained_dir, tmp_path):
    flags = [f"--model.init_args.model={pretrained_dir}", *LORA]
    main(tiny_args(tmp_path / "whole", 3, *flags))
    killed = tmp_path / "killed"
    with pytest.raises(SystemExit, match="simulated kill"):
        main(tiny_args(killed, 3, *flags, "--trainer.callbacks+=tests.helpers.CrashAtBatch",
                       "--trainer.callbacks.epoch=2", "--trainer.callbacks.batch=1"))
    main(tiny_args(killed, 3, *flags, "--ckpt_path=last"))
    whole = torch.load(tmp_path / "whole/checkpoints/last.ckpt", weights_only=False)
    resumed = torch.load(killed / "checkpoints/last.ckpt", weights_only=False)
    adapters = [k for k in whole["state_dict"] if "lora_" in k]
    assert adapters and max((resumed["state_dict"][k] - whole["state_dict"][k]).abs().max().item() for k in adapters) <= 1e-6
    moments = [s["exp_avg"] for s in whole["optimizer_states"][0]["state"].values()]
    assert len(moments) == len(adapters)  # AdamW holds state for the adapters only (A and B of each layer)
    for mine, theirs in zip(resumed["optimizer_states"][0]["state"].values(), whole["optimizer_states"][0]["state"].values()):
        assert torch.allclose(mine["exp_avg"], theirs["exp_avg"], atol=1e-6)


def test_max_epochs_must_be_whole_iterations(tmp_path):
    # 1 warm-up epoch + iterations of 2 epochs: 4 epochs would end half-way through iteration 2
    with pytest.raises(ValueError, match=r"--trainer.max_epochs=4 must be warmup_epochs \+ T \* epochs_per_iteration"):
        main(tiny_args(tmp_path / "run", 4))


def _all_finite(checkpoint_path) -> bool:
    state = torch.load(checkpoint_path, weights_only=False)["state_dict"]
    return all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point())


def test_a_non_finite_loss_stops_the_run_at_that_step_and_keeps_the_last_good_checkpoint(tmp_path):
    from modules.finite import NonFiniteError

    run = tmp_path / "run"
    # epoch 0 = warm-up: 12 gold rationales in batches of 4 = 3 steps; iteration 1's first batch is step 4, trained
    # at the iteration's first warm-up rate 1e-3 * iteration_lr (1e-3 in this config) = 1e-6
    message = (r"TriPosT iteration 1: non-finite training loss at step 4 \(epoch 1, batch 0; 3 optimizer steps "
               r"before it were finite\): loss = nan\. .*Learning rate: 1e-06 at this step \(peak "
               r"--model.init_args.iteration_lr=0.001\); gradient clipping: --trainer.gradient_clip_val=1\. Try a "
               r"lower --model.init_args.iteration_lr")
    with pytest.raises(NonFiniteError, match=message):
        main(tiny_args(run, 3, "--trainer.callbacks+=tests.helpers.Diverge", "--trainer.callbacks.epoch=1",
                       "--trainer.callbacks.batch=0"))
    checkpoint = torch.load(run / "checkpoints/last.ckpt", weights_only=False)
    assert checkpoint["epoch"] == 0 and checkpoint["global_step"] == 3 and _all_finite(run / "checkpoints/last.ckpt")


def test_non_finite_weights_are_never_saved_and_never_sampled(tmp_path):
    from modules.finite import NonFiniteError

    # an update that overflows at the end of epoch 1 (inside iteration 1): epoch 1's checkpoint is refused,
    # so last.ckpt stays epoch 0's
    run = tmp_path / "saved"
    with pytest.raises(NonFiniteError, match=r"TriPosT iteration 1: refusing to write a checkpoint at step \d+ "
                                             r"\(epoch 1\): 1 weight tensors are not finite \(model\.model\.embed_tokens"):
        main(tiny_args(run, 3, "--trainer.callbacks+=tests.helpers.Diverge", "--trainer.callbacks.epoch=1",
                       "--trainer.callbacks.batch=-1", "--trainer.callbacks.what=weights"))
    assert torch.load(run / "checkpoints/last.ckpt", weights_only=False)["epoch"] == 0
    assert _all_finite(run / "checkpoints/last.ckpt")

    # at the end of the warm-up the rollouts come first (before the checkpoint): they refuse to sample
    run = tmp_path / "sampled"
    with pytest.raises(NonFiniteError, match=r"refusing to generate with the policy: 1 weight tensors are not finite"):
        main(tiny_args(run, 3, "--trainer.callbacks+=tests.helpers.Diverge", "--trainer.callbacks.epoch=0",
                       "--trainer.callbacks.batch=-1", "--trainer.callbacks.what=weights"))
    assert not (run / "checkpoints/last.ckpt").exists()


def test_a_learning_rate_that_blows_up_stops_with_the_non_finite_error_not_inside_sampling(tmp_path):
    from modules.finite import NonFiniteError

    # the reproduction (lr=1e4 without clipping on the default config: the loss goes nan at step 21; before,
    # it stayed nan for the whole epoch and the rollouts then died in torch.multinomial), shrunk: no warm-up of the
    # rate. Here the last warm-up step's update overflows with a finite loss, so the rollouts refuse to sample.
    with pytest.raises(NonFiniteError, match=r"refusing to generate with the policy: .*weight tensors are not finite.*"
                                             r"gradient clipping: off\. Try a lower --model.init_args.lr"):
        main(tiny_args(tmp_path / "run", 3, "--model.init_args.lr=1e6", "--model.init_args.warmup_ratio=0",
                       "--trainer.gradient_clip_val=null"))
    assert not list((tmp_path / "run").rglob("*.ckpt"))  # the rollouts come before the epoch's checkpoint


def test_an_iteration_whose_shard_gives_too_few_examples_is_refused_with_the_counts(tmp_path):
    run = tmp_path / "run"
    # after one warm-up epoch the tiny model writes no numbered steps: its 12 rollouts are all dropped
    with pytest.raises(ValueError, match=r"iteration 1: .*iter_001.jsonl gives 0 training examples \(0 improvement, 0 "
                                         r"non-improvement\) from 12 rollouts \(\{'dropped': 12\}; .* fewer than "
                                         r"--data.init_args.min_examples=20\. Roll out on more questions"):
        main(tiny_args(run, 3, "--data.init_args.min_examples=20"))
    shard = (run / "interaction_logs/iter_001.jsonl").read_bytes()
    assert len(read_shard(run / "interaction_logs/iter_001.jsonl")) == 12  # the rollouts are kept for a resume
    main(tiny_args(run, 3, "--ckpt_path=last", "--data.init_args.min_examples=0"))  # as the message says
    assert (run / "interaction_logs/iter_001.jsonl").read_bytes() == shard  # trained on, not collected again
    assert [row["stage"] for row in json.loads((run / "eval_table.json").read_text())] == [0, 1]


def test_with_no_warm_up_too_few_examples_say_to_start_again_and_the_folder_says_why_it_cannot_resume(tmp_path):
    run = tmp_path / "run"
    # warmup_epochs=0: iteration 1's rollouts come before any training, so there is no checkpoint to resume
    with pytest.raises(ValueError, match=r"fewer than --data.init_args.min_examples=20\. .*start again with "
                                         r"--data.init_args.min_examples=0 \(nothing was trained yet"):
        main(tiny_args(run, 2, "--model.init_args.warmup_epochs=0", "--data.init_args.min_examples=20"))
    with pytest.raises(FileExistsError, match=r"That run wrote no checkpoint, so it cannot be resumed: delete "
                                              r".*interaction_logs to start again there"):
        main(tiny_args(run, 2, "--model.init_args.warmup_epochs=0", "--ckpt_path=last"))
