"""The PIT policy: one PPO epoch moves it toward higher reward; the curriculum switches its references."""

import math
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch import LightningDataModule, Trainer
from lightning.pytorch.plugins import Precision
from lightning.pytorch.strategies import SingleDeviceStrategy
from torch.utils.data import DataLoader
from transformers import LlamaConfig, LlamaForCausalLM

from datamodules.interaction_log import read_shard, write_shard
from datamodules.pit import PITDataModule, pit_prompt, ppo_minibatches
from feedback.base import Judge
from modules.pit import PITPolicy
from modules.pretrained import LoRA
from tests.modules.test_pit_reward import ToyPreferences


class BufferData(LightningDataModule):
    """A fixed rollout buffer, laid out as the PIT DataModule lays it out (``ppo_minibatches``): two PPO passes,
    minibatches of ``batch_size`` reshuffled each pass. ``rows``: (answer token, reward, group) per row; default 16
    rows answering "A" (reward +1) or "B" (reward -1) in turn, each its own group. ``temperature``: the rollouts'."""

    def __init__(self, tokenizer, prompt_ids, a_id, b_id, rows=None, batch_size=8, temperature=None):
        super().__init__()
        self.tokenizer = tokenizer
        rows = rows or [(a_id, 1.0, i) if i % 2 == 0 else (b_id, -1.0, i) for i in range(16)]
        items = []
        for token, reward, group in rows:
            item = {"input_ids": torch.tensor(prompt_ids + [token, tokenizer.eos_token_id]),
                    "loss_weights": torch.tensor([0.0] * len(prompt_ids) + [1.0, 1.0]),  # the answer and EOS
                    "score": torch.tensor(reward), "group": torch.tensor(group)}
            if temperature is not None:
                item["temperature"] = torch.tensor(temperature)
            items.append(item)
        self.batches = ppo_minibatches(items, batch_size, 2, "test", tokenizer.pad_token_id)

    def train_dataloader(self):
        return DataLoader(self.batches, batch_size=None)


def tiny_policy_folder(tmp_path, tokenizer, name="sft", logit_scale=1.0):
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=256, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        model.lm_head.weight.mul_(logit_scale)  # large logits: precision differences show in the log-probs
    model.save_pretrained(tmp_path / name)
    tokenizer.save_pretrained(tmp_path / name)
    return str(tmp_path / name)


def next_token_logprob(model, prompt_ids, token):
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt_ids])).logits[0, -1]
    return torch.log_softmax(logits, -1)[token].item()


def count_forwards(monkeypatch) -> list[bool]:
    """Records each ``PITPolicy._forward`` call's ``values`` flag: False = a frozen-reference forward."""
    calls, original = [], PITPolicy._forward

    def counting(self, model, batch, values):
        calls.append(values)
        return original(self, model, batch, values)

    monkeypatch.setattr(PITPolicy, "_forward", counting)
    return calls


def ppo_epoch_on_the_buffer(tmp_path, tok, precision="32-true", logit_scale=1.0, group_size=1, **policy_args):
    """One PPO epoch of a tiny pretrained policy on ``BufferData`` (rows ``group_size`` at a time the samples of
    one prompt); the policy before training is returned too."""
    prompt_ids = tok.encode("Q: (1 + 2) =\n", add_special_tokens=True)
    a_id, b_id = tok.convert_tokens_to_ids("1"), tok.convert_tokens_to_ids("2")
    path = tiny_policy_folder(tmp_path, tok, logit_scale=logit_scale)
    policy = PITPolicy(stage="rl", model=path, kl_coef=0.0, round1_epochs=1, export_dir=str(tmp_path / "out"),
                       **policy_args)
    trainer = Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, reload_dataloaders_every_n_epochs=1,
                      num_sanity_val_steps=0, limit_val_batches=0, precision=precision)
    rows = [(a_id, 1.0, i // group_size) if i % 2 == 0 else (b_id, -1.0, i // group_size) for i in range(16)]
    trainer.fit(policy, datamodule=BufferData(tok, prompt_ids, a_id, b_id, rows=rows))
    return policy, trainer, prompt_ids, a_id, b_id, LlamaForCausalLM.from_pretrained(path)


def test_one_ppo_epoch_moves_the_policy_toward_the_rewarded_answer(tmp_path, ma_tokenizer, monkeypatch):
    forwards = count_forwards(monkeypatch)
    policy, trainer, prompt_ids, a_id, b_id, before = ppo_epoch_on_the_buffer(tmp_path, ma_tokenizer, lr=1e-2)
    up = next_token_logprob(policy.model, prompt_ids, a_id) - next_token_logprob(before, prompt_ids, a_id)
    down = next_token_logprob(policy.model, prompt_ids, b_id) - next_token_logprob(before, prompt_ids, b_id)
    assert up > 0.1 and down < -0.1, (up, down)
    # the frozen reference did not move, and every buffer row was scored once, in the first pass's 2 minibatches
    assert next_token_logprob(policy._frozen["reference"], prompt_ids, a_id) == next_token_logprob(before, prompt_ids, a_id)
    assert sorted(policy._buffer) == list(range(16))
    # the loader yields 2 minibatches x 2 passes: reference forwards 2 (not 4); policy 2 for the buffer + 4 steps
    assert forwards.count(False) == 2 and forwards.count(True) == 2 + 4
    metrics = trainer.callback_metrics
    assert {"ppo/clip_fraction", "ppo/value_loss", "ppo/entropy", "ppo/kl", "ppo/reward"} <= set(metrics)
    assert abs(float(metrics["ppo/reward"])) < 1e-6  # half +1, half -1
    batches = trainer.datamodule.batches  # pass 1 = the first 2 minibatches, pass 2 = the last 2: new members
    assert {frozenset(b["rows"].tolist()) for b in batches[:2]} != {frozenset(b["rows"].tolist()) for b in batches[2:]}


def test_with_lora_the_kl_reference_is_the_policy_with_its_adapters_disabled(tmp_path, ma_tokenizer, monkeypatch):
    forwards = count_forwards(monkeypatch)
    policy, _, prompt_ids, a_id, _, before = ppo_epoch_on_the_buffer(tmp_path, ma_tokenizer, lr=5e-2,
                                                                      lora=LoRA(r=4, alpha=16, dropout=0.0))
    assert policy._frozen == {}  # no second copy of the model
    trained = {name for name, p in policy.named_parameters() if p.requires_grad}
    assert trained and all("lora_" in name or name.startswith("value_head.") for name in trained)
    up = next_token_logprob(policy.model, prompt_ids, a_id) - next_token_logprob(before, prompt_ids, a_id)
    assert up > 0.01, up  # the adapters learned
    with policy.model.disable_adapter():  # the reference: exactly the SFT policy it started from
        assert next_token_logprob(policy.model, prompt_ids, a_id) == pytest.approx(
            next_token_logprob(before, prompt_ids, a_id), abs=1e-6)
    assert forwards.count(False) == 2  # the reference scored each buffer row once, through the policy
    exported = LlamaForCausalLM.from_pretrained(tmp_path / "out")  # merged: the trained policy without PEFT
    assert next_token_logprob(exported, prompt_ids, a_id) == pytest.approx(
        next_token_logprob(policy.model, prompt_ids, a_id), abs=1e-5)


def test_under_bf16_mixed_the_first_minibatch_starts_at_ratio_one(tmp_path, ma_tokenizer, monkeypatch):
    import modules.pit

    calls, original = [], modules.pit.policy_loss

    def recording(logprobs, old_logprobs, advantages, mask, clip):
        loss, clip_fraction = original(logprobs, old_logprobs, advantages, mask, clip)
        calls.append((torch.exp(logprobs.detach() - old_logprobs)[mask > 0], float(clip_fraction)))
        return loss, clip_fraction

    monkeypatch.setattr(modules.pit, "policy_loss", recording)
    ppo_epoch_on_the_buffer(tmp_path, ma_tokenizer, precision="bf16-mixed", logit_scale=200.0, lr=1e-2)
    ratio, clip_fraction = calls[0]  # before any update the policy is the one that scored the buffer
    assert (ratio - 1).abs().max() < 1e-3 and clip_fraction == 0.0, (ratio, clip_fraction)


def test_bfloat16_weights_train_at_full_precision_with_a_float32_value_head(tmp_path, ma_tokenizer):
    policy, trainer, *_ = ppo_epoch_on_the_buffer(tmp_path, ma_tokenizer, dtype="bfloat16", lr=1e-2)
    assert policy.model.dtype == torch.bfloat16 and policy.value_head.weight.dtype == torch.float32
    assert all(math.isfinite(float(trainer.callback_metrics[k])) for k in ("ppo/value_loss", "ppo/kl"))


def test_lora_dropout_is_refused_in_rl(tmp_path, ma_tokenizer):
    with pytest.raises(ValueError, match=r"--model.init_args.lora.dropout=0.05: PPO's ratios need the same forward"):
        ppo_epoch_on_the_buffer(tmp_path, ma_tokenizer, lora=LoRA(r=4, dropout=0.05))


def test_the_curriculum_switches_from_dataset_to_original_policy_references(tmp_path):
    data = PITDataModule(ToyPreferences(), stage="rl", log_dir=str(tmp_path), vocab_size=350, num_rl_prompts=6)
    data.setup("fit")
    original = tiny_policy_folder(tmp_path, data.tokenizer, "original")
    policy = PITPolicy(stage="rl", model=original, round1_epochs=2, original_policy=original, max_new_tokens=4)
    policy.model = LlamaForCausalLM.from_pretrained(original)
    # all the policy asks of its trainer here: the tokenizer, a strategy to broadcast and wait on, a precision
    policy._trainer = SimpleNamespace(datamodule=data, strategy=SingleDeviceStrategy(torch.device("cpu")),
                                      is_global_zero=True, precision_plugin=Precision())
    assert [policy.round_of(k) for k in (1, 2, 3, 4)] == [1, 1, 2, 2]
    fold = data.rl_fold()
    round1 = policy.references(2, tmp_path / "rollouts", fold)
    assert round1 == [(e.prompt, e.turns[0].text) for e in fold]  # y_l from the data
    round2 = policy.references(3, tmp_path / "rollouts", fold)
    assert [x for x, _ in round2] == [x for x, _ in round1] and round2 != round1
    saved = read_shard(tmp_path / "rollouts" / "references_round2.jsonl")
    assert [e.turns[0].by for e in saved] == ["original_policy"] * 6
    assert policy.references(4, tmp_path / "rollouts", fold) == round2  # sampled once, then reused
    assert pit_prompt("x", " y ") == "x\n\n### Original response:\ny\n\n### Improved response:\n"


def fixed_distribution_llama(folder, tokenizer, probs: dict[int, float]):
    """A tiny Llama whose next-token distribution is ``probs`` at every position (other tokens ~e^-100): every token
    shares one embedding, the layers add nothing (zero output projections), so the head sees one constant vector."""
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=64, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id)
    model = LlamaForCausalLM(config)
    logits = torch.full((len(tokenizer),), -100.0)
    for token, p in probs.items():
        logits[token] = math.log(p)
    with torch.no_grad():
        model.model.embed_tokens.weight.fill_(1.0)  # after the final RMSNorm the hidden state is all ones
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.lm_head.weight.copy_(logits[:, None].expand(-1, 8) / 8)  # row i sums to logit i
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return LlamaForCausalLM.from_pretrained(folder)


def split_buffer(tok, prompt_ids, a_id, b_id):
    """Rows 0-3 answer "A" (reward +1), rows 4-7 "B" (reward -1), minibatches of 4. Whitening per minibatch would
    give each minibatch mean 0 on its own; over the whole buffer it does not."""
    rows = [(a_id, 1.0, i) for i in range(4)] + [(b_id, -1.0, i) for i in range(4, 8)]
    return BufferData(tok, prompt_ids, a_id, b_id, rows=rows, batch_size=4)


def test_the_rl_step_shapes_rewards_with_kl_and_whitens_over_the_whole_buffer(tmp_path, ma_tokenizer, monkeypatch):
    tok = ma_tokenizer
    prompt_ids = tok.encode("Q: (1 + 2) =\n", add_special_tokens=True)
    a_id, b_id, eos = tok.convert_tokens_to_ids("1"), tok.convert_tokens_to_ids("2"), tok.eos_token_id
    # the policy has drifted from its SFT reference: π = (A .5, B .25, EOS .25), π_ref = 1/3 each
    reference = fixed_distribution_llama(tmp_path / "sft", tok, {a_id: 1 / 3, b_id: 1 / 3, eos: 1 / 3})
    policy = PITPolicy(stage="rl", model=str(tmp_path / "sft"), lr=1e-3, kl_coef=0.5, gamma=1.0, lam=0.5,
                       round1_epochs=1, export_dir=str(tmp_path / "out"))
    policy.model = fixed_distribution_llama(tmp_path / "drifted", tok, {a_id: 0.5, b_id: 0.25, eos: 0.25})
    policy.value_head = torch.nn.Linear(8, 1)
    torch.nn.init.zeros_(policy.value_head.weight)
    torch.nn.init.zeros_(policy.value_head.bias)  # V = 0: returns are the raw advantages
    policy._frozen["reference"] = reference
    forwards = count_forwards(monkeypatch)
    trainer = Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, reload_dataloaders_every_n_epochs=1,
                      num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(policy, datamodule=split_buffer(tok, prompt_ids, a_id, b_id))
    assert forwards.count(False) == 2  # each row's reference log-probs once (pass 1's 2 minibatches), not per pass

    # kl_t = log π - log π_ref: A log(.5·3) = log 1.5, B and EOS log(.25·3) = log .75; β = .5, γ = 1, λ = .5
    # row "A EOS" (+1): r = [-.5 log 1.5, -.5 log .75 + 1]; A_2 = 1 + .143841 = 1.143841,
    #                   A_1 = -.202733 + .5 · 1.143841 = .369188
    # row "B EOS" (-1): r = [-.5 log .75, -.5 log .75 - 1]; A_2 = -1 + .143841 = -.856159,
    #                   A_1 = .143841 + .5 · -.856159 = -.284238
    by_hand = {"A": [0.369188, 1.143841], "B": [-0.284238, -0.856159]}
    for row, cached in policy._buffer.items():
        returns = cached["returns"]  # [T-1] of the row, unpadded
        assert torch.allclose(returns[-2:], torch.tensor(by_hand["A" if row < 4 else "B"]), atol=1e-5), (row, returns)
        assert not returns[:-2].any()  # prompt positions get nothing
    # mean KL per response, as logged: A rows log 1.5 + log .75 = .117783, B rows 2 log .75 = -.575364
    assert math.isclose(float(trainer.callback_metrics["ppo/kl"]), (0.117783 - 0.575364) / 2, abs_tol=1e-5)

    # whitened over all 16 response tokens (each row 4 times): mean (.369188 + 1.143841 - .284238 - .856159) / 4
    # = .093158; variance (.276030² + 1.050683² + .377396² + .949317²) / 4 = .555940, std .745614.
    # Per minibatch each would be ±1 instead.
    whitened = {"A": [(0.369188 - 0.093158) / 0.745614, (1.143841 - 0.093158) / 0.745614],   # .370205, 1.409149
                "B": [(-0.284238 - 0.093158) / 0.745614, (-0.856159 - 0.093158) / 0.745614]}  # -.506156, -1.273200
    for row, cached in policy._buffer.items():
        got = cached["advantages"]
        assert torch.allclose(got[-2:], torch.tensor(whitened["A" if row < 4 else "B"]), atol=1e-4), (row, got)
        assert not got[:-2].any()


def test_a_non_finite_ppo_loss_stops_the_epoch_at_its_first_step_naming_both_losses(tmp_path, ma_tokenizer, monkeypatch):
    from modules.finite import NonFiniteError

    original = BufferData.__init__

    # the reward of one row outside the first minibatch is NaN: whitening over the whole buffer spreads it to every
    # advantage, so the first step's policy loss is NaN while its value loss (the first minibatch's returns) stays
    # finite: the message tells which
    def poisoned(self, *args, **kwargs):
        original(self, *args, **kwargs)
        row = self.batches[1]["rows"][3]
        for batch in self.batches:
            batch["score"][batch["rows"] == row] = float("nan")

    monkeypatch.setattr(BufferData, "__init__", poisoned)
    with pytest.raises(NonFiniteError, match=r"^PIT RL epoch 0 \(buffer 1, round 1\): non-finite training loss at step 1 "
                                             r"\(epoch 0, batch 0; 0 optimizer steps before it were finite\): "
                                             r"policy_loss = nan, value_loss = \d\.\d+\. .*Learning rate: 0\.01 at this step"):
        ppo_epoch_on_the_buffer(tmp_path, ma_tokenizer, lr=1e-2)


def test_one_rloo_epoch_moves_the_policy_toward_the_rewarded_answer_without_a_critic(tmp_path, ma_tokenizer,
                                                                                      monkeypatch):
    forwards = count_forwards(monkeypatch)
    # 4 prompts x 4 samples, each group answering A (+1), B (-1), A, B
    policy, trainer, prompt_ids, a_id, b_id, before = ppo_epoch_on_the_buffer(
        tmp_path, ma_tokenizer, lr=1e-2, group_size=4, advantage="rloo", samples_per_prompt=4)
    up = next_token_logprob(policy.model, prompt_ids, a_id) - next_token_logprob(before, prompt_ids, a_id)
    down = next_token_logprob(policy.model, prompt_ids, b_id) - next_token_logprob(before, prompt_ids, b_id)
    assert up > 0.1 and down < -0.1, (up, down)
    assert policy.value_head is None and not any(name.startswith("value_head") for name, _ in policy.named_parameters())
    # RLOO; the KL term is 0 (the policy equals its reference when the buffer is scored):
    # A: 1 - mean(-1, 1, -1) = 4/3, B: -1 - mean(1, -1, 1) = -4/3, on both response tokens
    for row, cached in policy._buffer.items():
        sign = 1 if row % 2 == 0 else -1
        assert torch.allclose(cached["advantages"][-2:], torch.tensor([sign * 4 / 3] * 2)), (row, cached)
        assert not cached["advantages"][:-2].any()
    # no values anywhere: reference 2 + policy 2 scoring the buffer once, then 4 steps
    assert len(forwards) == 2 + 2 + 4 and not any(forwards)
    metrics = trainer.callback_metrics
    assert "ppo/value_loss" not in metrics and {"ppo/sequence_reward", "ppo/clip_fraction"} <= set(metrics)


@pytest.mark.parametrize("advantage", ["rloo", "grpo"])
def test_critic_free_advantages_subtract_the_summed_kl_from_the_gap_reward(advantage, tmp_path, ma_tokenizer):
    tok = ma_tokenizer
    prompt_ids = tok.encode("Q: (1 + 2) =\n", add_special_tokens=True)
    a_id, b_id, eos = tok.convert_tokens_to_ids("1"), tok.convert_tokens_to_ids("2"), tok.eos_token_id
    # π = (A .5, B .25, EOS .25), π_ref = 1/3 each (as in the GAE test above); β = .5
    reference = fixed_distribution_llama(tmp_path / "sft", tok, {a_id: 1 / 3, b_id: 1 / 3, eos: 1 / 3})
    policy = PITPolicy(stage="rl", model=str(tmp_path / "sft"), lr=1e-3, kl_coef=0.5, round1_epochs=1,
                       advantage=advantage, samples_per_prompt=3, export_dir=str(tmp_path / "out"))
    policy.model = fixed_distribution_llama(tmp_path / "drifted", tok, {a_id: 0.5, b_id: 0.25, eos: 0.25})
    policy._frozen["reference"] = reference
    trainer = Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, reload_dataloaders_every_n_epochs=1,
                      num_sanity_val_steps=0, limit_val_batches=0)
    rows = [(a_id, 1.0, 0), (b_id, -1.0, 0), (b_id, -1.0, 0), (a_id, 1.0, 1), (a_id, 1.0, 1), (b_id, -1.0, 1)]
    trainer.fit(policy, datamodule=BufferData(tok, prompt_ids, a_id, b_id, rows=rows, batch_size=4))
    # summed KL: "A EOS" log 1.5 + log .75 = .117783, "B EOS" 2 log .75 = -.575364
    # sequence rewards: A 1 - .5 · .117783 = .941109, B -1 + .5 · .575364 = -.712318
    r_a, r_b = 0.941109, -0.712318
    if advantage == "rloo":
        # group 0 (A, B, B): A .941109 - (-.712318) = 1.653427, B -.712318 - mean(.941109, -.712318) = -.826714
        # group 1 (A, A, B): A .941109 - mean(.941109, -.712318) = .826714, B -.712318 - .941109 = -1.653427
        by_hand = [1.653427, -0.826714, -0.826714, 0.826714, 0.826714, -1.653427]
    else:
        # group 0: mean (r_a + 2 r_b) / 3 = -.161176, deviations A 1.102284, B -.551142; sample variance
        # (1.102284² + 2 · .551142²) / 2 = .911273, std .954606; A 1.102284 / (.954606 + 1e-4) = 1.154580,
        # B -.551142 / .954706 = -.577290. Group 1 mirrors it: A .577290, B -1.154580
        by_hand = [1.154580, -0.577290, -0.577290, 0.577290, 0.577290, -1.154580]
    for row, cached in policy._buffer.items():
        assert math.isclose(float(cached["sequence_reward"]), r_a if rows[row][0] == a_id else r_b, abs_tol=1e-5)
        assert torch.allclose(cached["advantages"][-2:], torch.tensor([by_hand[row]] * 2), atol=1e-5), (row, cached)
        assert not cached["advantages"][:-2].any()
    assert math.isclose(float(trainer.callback_metrics["ppo/sequence_reward"]), (r_a + r_b) / 2, abs_tol=1e-5)


def test_log_probs_are_of_the_rollout_temperature(tmp_path, ma_tokenizer):
    tok = ma_tokenizer
    prompt_ids = tok.encode("Q: (1 + 2) =\n", add_special_tokens=True)
    a_id, b_id, eos = tok.convert_tokens_to_ids("1"), tok.convert_tokens_to_ids("2"), tok.eos_token_id
    reference = fixed_distribution_llama(tmp_path / "sft", tok, {a_id: 0.25, b_id: 0.25, eos: 0.5})
    policy = PITPolicy(stage="rl", model=str(tmp_path / "sft"), lr=1e-3, kl_coef=0.5, round1_epochs=1,
                       export_dir=str(tmp_path / "out"))
    policy.model = fixed_distribution_llama(tmp_path / "drifted", tok, {a_id: 0.5, b_id: 0.25, eos: 0.25})
    policy.value_head = torch.nn.Linear(8, 1)
    policy._frozen["reference"] = reference
    trainer = Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, reload_dataloaders_every_n_epochs=1,
                      num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(policy, datamodule=split_buffer_at(tok, prompt_ids, a_id, b_id, temperature=0.5))
    # sampled at T = .5: π_T ∝ π² = (.25, .0625, .0625) -> A 2/3, B and EOS 1/6; π_ref,T ∝ (.0625, .0625, .25) ->
    # A and B 1/6, EOS 2/3
    for row, cached in policy._buffer.items():
        first = 2 / 3 if row < 4 else 1 / 6
        assert torch.allclose(cached["old_logprobs"][-2:], torch.log(torch.tensor([first, 1 / 6])), atol=1e-5)
    # KL per response, log π_T - log π_ref,T summed over its two tokens: A rows log 4 - log 4 = 0, B rows
    # 0 - log 4 = -1.386294; mean -.693147 (a reference left at T = 1 would give A -.117783, B -1.504077, mean
    # -.810930; both at T = 1: mean -.346574)
    assert math.isclose(float(trainer.callback_metrics["ppo/kl"]), -1.386294 / 2, abs_tol=1e-5)


def split_buffer_at(tok, prompt_ids, a_id, b_id, temperature):
    rows = [(a_id, 1.0, i) for i in range(4)] + [(b_id, -1.0, i) for i in range(4, 8)]
    return BufferData(tok, prompt_ids, a_id, b_id, rows=rows, batch_size=4, temperature=temperature)


@pytest.mark.parametrize("advantage", ["rloo", "grpo"])
def test_critic_free_advantages_need_two_samples_per_prompt(advantage):
    for k in (None, 1):
        args = {} if k is None else {"samples_per_prompt": k}
        with pytest.raises(ValueError, match=rf"advantage={advantage} compares the samples of each prompt: set "
                                             r"--model.init_args.samples_per_prompt to 2 or more \(got 1\)"):
            PITPolicy(stage="rl", advantage=advantage, **args)
    assert PITPolicy(stage="rl", advantage=advantage, samples_per_prompt=2).hparams.samples_per_prompt == 2


class LengthJudge(Judge):
    """Gap reward = the response's length in characters."""

    name = "length"

    def score(self, items):
        return [float(len(y)) for _, _, y in items]


def test_rollouts_sample_each_prompt_k_times_and_the_buffer_keeps_groups_and_temperature(tmp_path):
    data = PITDataModule(ToyPreferences(), stage="rl", log_dir=str(tmp_path), vocab_size=350, num_rl_prompts=4,
                         batch_size=3, ppo_epochs=2)
    data.setup("fit")
    path = tiny_policy_folder(tmp_path, data.tokenizer)
    policy = PITPolicy(stage="rl", model=path, round1_epochs=2, max_new_tokens=4, advantage="grpo",
                       samples_per_prompt=3)
    policy.model = LlamaForCausalLM.from_pretrained(path)
    policy._trainer = SimpleNamespace(datamodule=data, strategy=SingleDeviceStrategy(torch.device("cpu")),
                                      is_global_zero=True, precision_plugin=Precision())
    recorded = {}
    rollouts = SimpleNamespace(teacher=LengthJudge(), temperature=0.7, record=recorded.__setitem__)
    samples = policy.rollout(data, 1, rollouts)
    assert len(samples[2]) == 4 * 3  # every prompt sampled k = 3 times, in one rollout
    episodes = policy.feedback(data, 1, samples, rollouts)
    fold = data.rl_fold()
    assert [e.id for e in episodes] == [f"{f.id}/it1/s{j}" for f in fold for j in range(3)]
    assert [e.question_id for e in episodes] == [f.id for f in fold for _ in range(3)]
    assert all(e.scores["temperature"] == 0.7 for e in episodes)
    assert "pit/gap_reward_group_std" in recorded
    write_shard(data.rollout_dir / "iter_001.jsonl", episodes)
    data.use_iteration(1)
    batches = list(data.train_dataloader())
    groups = {}
    for batch in batches:
        for row, group in zip(batch["rows"].tolist(), batch["group"].tolist()):
            groups.setdefault(row // 3, set()).add(group)  # rows of one prompt: one group, its own
        assert torch.equal(batch["temperature"], torch.full((len(batch["rows"]),), 0.7))
    assert sorted(len(g) for g in groups.values()) == [1] * 4 and len(set.union(*groups.values())) == 4

    rollouts.temperature = 0.0
    with pytest.raises(ValueError, match=r"--trainer.callbacks.temperature=0.0: RL rollouts must sample"):
        policy.rollout(data, 1, rollouts)
