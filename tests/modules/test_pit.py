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

from datamodules.interaction_log import read_shard
from datamodules.pit import PITDataModule, pit_prompt
from datamodules.tripost import collate
from modules.pit import PITPolicy
from modules.pretrained import LoRA
from tests.modules.test_pit_reward import ToyPreferences


class BufferData(LightningDataModule):
    """A fixed rollout buffer: the same prompt answered "A" (reward +1) or "B" (reward -1), two PPO passes."""

    def __init__(self, tokenizer, prompt_ids, a_id, b_id):
        super().__init__()
        self.tokenizer = tokenizer
        rows = []
        for i in range(16):
            token, reward = (a_id, 1.0) if i % 2 == 0 else (b_id, -1.0)
            ids = prompt_ids + [token, tokenizer.eos_token_id]
            rows.append(({"input_ids": torch.tensor(ids), "loss_weights": torch.tensor([0.0] * len(prompt_ids) + [1.0, 1.0])}, reward))
        self.batches = []
        for index in range(2):
            chunk = rows[index * 8 : (index + 1) * 8]
            batch = collate([r for r, _ in chunk], tokenizer.pad_token_id)
            batch["response_mask"] = batch.pop("loss_weights")[:, 1:]
            batch["score"] = torch.tensor([s for _, s in chunk])
            batch["index"] = torch.tensor(index)
            self.batches.append(batch)

    def train_dataloader(self):
        return DataLoader(self.batches + self.batches[::-1], batch_size=None)


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


def ppo_epoch_on_the_buffer(tmp_path, tok, precision="32-true", logit_scale=1.0, **policy_args):
    """One PPO epoch of a tiny pretrained policy on ``BufferData``; the policy before training is returned too."""
    prompt_ids = tok.encode("Q: (1 + 2) =\n", add_special_tokens=True)
    a_id, b_id = tok.convert_tokens_to_ids("1"), tok.convert_tokens_to_ids("2")
    path = tiny_policy_folder(tmp_path, tok, logit_scale=logit_scale)
    policy = PITPolicy(stage="rl", model=path, kl_coef=0.0, round1_epochs=1, export_dir=str(tmp_path / "out"),
                       **policy_args)
    trainer = Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, reload_dataloaders_every_n_epochs=1,
                      num_sanity_val_steps=0, limit_val_batches=0, precision=precision)
    trainer.fit(policy, datamodule=BufferData(tok, prompt_ids, a_id, b_id))
    return policy, trainer, prompt_ids, a_id, b_id, LlamaForCausalLM.from_pretrained(path)


def test_one_ppo_epoch_moves_the_policy_toward_the_rewarded_answer(tmp_path, ma_tokenizer, monkeypatch):
    forwards = count_forwards(monkeypatch)
    policy, trainer, prompt_ids, a_id, b_id, before = ppo_epoch_on_the_buffer(tmp_path, ma_tokenizer, lr=1e-2)
    up = next_token_logprob(policy.model, prompt_ids, a_id) - next_token_logprob(before, prompt_ids, a_id)
    down = next_token_logprob(policy.model, prompt_ids, b_id) - next_token_logprob(before, prompt_ids, b_id)
    assert up > 0.1 and down < -0.1, (up, down)
    # the frozen reference did not move, and the buffer was scored once per minibatch (2), not per pass (4)
    assert next_token_logprob(policy._frozen["reference"], prompt_ids, a_id) == next_token_logprob(before, prompt_ids, a_id)
    assert sorted(policy._buffer) == [0, 1]
    # the loader yields 2 minibatches x 2 passes: reference forwards 2 (not 4); policy 2 for the buffer + 4 steps
    assert forwards.count(False) == 2 and forwards.count(True) == 2 + 4
    metrics = trainer.callback_metrics
    assert {"ppo/clip_fraction", "ppo/value_loss", "ppo/entropy", "ppo/kl", "ppo/reward"} <= set(metrics)
    assert abs(float(metrics["ppo/reward"])) < 1e-6  # half +1, half -1


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
    assert forwards.count(False) == 2  # the reference scored the buffer once per minibatch, through the policy
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


class SplitBufferData(BufferData):
    """Minibatch 0: four rows answering "A" (reward +1); minibatch 1: four answering "B" (reward -1). Whitening per
    minibatch would give each minibatch mean 0 on its own; over the whole buffer it does not."""

    def __init__(self, tokenizer, prompt_ids, a_id, b_id):
        super().__init__(tokenizer, prompt_ids, a_id, b_id)
        rows = []
        weights = torch.tensor([0.0] * len(prompt_ids) + [1.0, 1.0])  # the answer and EOS
        for token, reward in [(a_id, 1.0)] * 4 + [(b_id, -1.0)] * 4:
            rows.append(({"input_ids": torch.tensor(prompt_ids + [token, tokenizer.eos_token_id]),
                          "loss_weights": weights}, reward))
        for index, batch in enumerate(self.batches):
            chunk = rows[index * 4 : (index + 1) * 4]
            batch.update(collate([r for r, _ in chunk], tokenizer.pad_token_id))
            batch["response_mask"] = batch.pop("loss_weights")[:, 1:]
            batch["score"] = torch.tensor([s for _, s in chunk])


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
    trainer.fit(policy, datamodule=SplitBufferData(tok, prompt_ids, a_id, b_id))
    assert forwards.count(False) == 2  # each minibatch's reference log-probs once, not once per pass

    # kl_t = log π - log π_ref: A log(.5·3) = log 1.5, B and EOS log(.25·3) = log .75; β = .5, γ = 1, λ = .5
    # row "A EOS" (+1): r = [-.5 log 1.5, -.5 log .75 + 1]; A_2 = 1 + .143841 = 1.143841,
    #                   A_1 = -.202733 + .5 · 1.143841 = .369188
    # row "B EOS" (-1): r = [-.5 log .75, -.5 log .75 - 1]; A_2 = -1 + .143841 = -.856159,
    #                   A_1 = .143841 + .5 · -.856159 = -.284238
    by_hand = {0: [0.369188, 1.143841], 1: [-0.284238, -0.856159]}
    for index, advantages in by_hand.items():
        returns = policy._buffer[index]["returns"]
        assert torch.allclose(returns[:, -2:], torch.tensor([advantages] * 4), atol=1e-5), (index, returns)
        assert not returns[:, :-2].any()  # prompt positions get nothing
    # mean KL per response, as logged: A rows log 1.5 + log .75 = .117783, B rows 2 log .75 = -.575364
    assert math.isclose(float(trainer.callback_metrics["ppo/kl"]), (0.117783 - 0.575364) / 2, abs_tol=1e-5)

    # whitened over all 16 response tokens (each row 4 times): mean (.369188 + 1.143841 - .284238 - .856159) / 4
    # = .093158; variance (.276030² + 1.050683² + .377396² + .949317²) / 4 = .555940, std .745614.
    # Per minibatch each would be ±1 instead.
    whitened = {0: [(0.369188 - 0.093158) / 0.745614, (1.143841 - 0.093158) / 0.745614],   # .370205, 1.409149
                1: [(-0.284238 - 0.093158) / 0.745614, (-0.856159 - 0.093158) / 0.745614]}  # -.506156, -1.273200
    for index, advantages in whitened.items():
        got = policy._buffer[index]["advantages"]
        assert torch.allclose(got[:, -2:], torch.tensor([advantages] * 4), atol=1e-4), (index, got)
        assert not got[:, :-2].any()


def test_a_non_finite_ppo_loss_stops_the_epoch_at_its_first_step_naming_both_losses(tmp_path, ma_tokenizer, monkeypatch):
    from modules.finite import NonFiniteError

    original = BufferData.__init__

    # one reward of minibatch 1 is NaN: whitening over the whole buffer spreads it to every advantage, so the first
    # step's policy loss is NaN while its value loss (minibatch 0's returns) stays finite: the message tells which
    def poisoned(self, *args):
        original(self, *args)
        self.batches[1]["score"][3] = float("nan")

    monkeypatch.setattr(BufferData, "__init__", poisoned)
    with pytest.raises(NonFiniteError, match=r"^PIT RL epoch 0 \(buffer 1, round 1\): non-finite training loss at step 1 "
                                             r"\(epoch 0, batch 0; 0 optimizer steps before it were finite\): "
                                             r"policy_loss = nan, value_loss = \d\.\d+\. .*Learning rate: 0\.01 at this step"):
        ppo_epoch_on_the_buffer(tmp_path, ma_tokenizer, lr=1e-2)
