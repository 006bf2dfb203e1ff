"""The PIT policy: one PPO epoch moves it toward higher reward; the curriculum switches its references."""

from types import SimpleNamespace

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


def tiny_policy_folder(tmp_path, tokenizer, name="sft"):
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=256, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id)
    LlamaForCausalLM(config).save_pretrained(tmp_path / name)
    tokenizer.save_pretrained(tmp_path / name)
    return str(tmp_path / name)


def next_token_logprob(model, prompt_ids, token):
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt_ids])).logits[0, -1]
    return torch.log_softmax(logits, -1)[token].item()


def test_one_ppo_epoch_moves_the_policy_toward_the_rewarded_answer(tmp_path, ma_tokenizer):
    tok = ma_tokenizer
    prompt_ids = tok.encode("Q: (1 + 2) =\n", add_special_tokens=True)
    a_id, b_id = tok.convert_tokens_to_ids("1"), tok.convert_tokens_to_ids("2")
    path = tiny_policy_folder(tmp_path, tok)
    policy = PITPolicy(stage="rl", model=path, lr=1e-2, kl_coef=0.0, round1_epochs=1, export_dir=str(tmp_path / "out"))
    data = BufferData(tok, prompt_ids, a_id, b_id)
    before = LlamaForCausalLM.from_pretrained(path)
    trainer = Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, reload_dataloaders_every_n_epochs=1,
                      num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(policy, datamodule=data)
    up = next_token_logprob(policy.model, prompt_ids, a_id) - next_token_logprob(before, prompt_ids, a_id)
    down = next_token_logprob(policy.model, prompt_ids, b_id) - next_token_logprob(before, prompt_ids, b_id)
    assert up > 0.1 and down < -0.1, (up, down)
    # the frozen reference did not move, and the buffer was scored once per minibatch (2), not per pass (4)
    assert next_token_logprob(policy.reference, prompt_ids, a_id) == next_token_logprob(before, prompt_ids, a_id)
    assert sorted(policy._buffer) == [0, 1]
    metrics = trainer.callback_metrics
    assert {"ppo/clip_fraction", "ppo/value_loss", "ppo/entropy", "ppo/kl", "ppo/reward"} <= set(metrics)
    assert abs(float(metrics["ppo/reward"])) < 1e-6  # half +1, half -1


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
