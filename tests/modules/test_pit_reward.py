"""PIT's gap reward model: the five-term loss by hand, the last-token read-out, and learning an ordering."""

import math

import torch
from lightning.pytorch import Trainer

from modules.pit_reward import ORDERINGS, PITRewardModel, last_token_scores, pit_reward_loss
from modules.tripost import TinyLlama


def log_sigmoid(d: float) -> float:
    return -math.log1p(math.exp(-d))


def test_the_five_term_loss_matches_the_hand_computed_value():
    rewards = torch.tensor([[2.0, 0.0, 0.5, -1.0], [0.0, 1.0, 1.0, 3.0]])  # (r_wl, r_ww, r_ll, r_lw)
    by_hand = []
    for wl, ww, ll, lw in rewards.tolist():
        by_hand.append(-(log_sigmoid(wl - ww) + log_sigmoid(wl - ll) + log_sigmoid(wl - lw)
                         + log_sigmoid(ww - lw) + log_sigmoid(ll - lw)))
    assert math.isclose(pit_reward_loss(rewards).item(), sum(by_hand) / 2, rel_tol=1e-6)
    # pair 0 written out: -log σ(2) - log σ(1.5) - log σ(3) - log σ(1) - log σ(1.5)
    assert math.isclose(by_hand[0], 0.1269 + 0.2014 + 0.0486 + 0.3133 + 0.2014, abs_tol=2e-4)
    # no term compares r_ww with r_ll: moving them apart alone changes nothing when both stay between wl and lw
    a = pit_reward_loss(torch.tensor([[5.0, 0.0, 0.0, -5.0]]))
    b = pit_reward_loss(torch.tensor([[5.0, 0.3, -0.3, -5.0]]))
    assert ("ww>ll" not in ORDERINGS) and abs(a.item() - b.item()) < 0.01


def test_scores_are_read_at_the_last_real_token_of_right_padded_rows():
    values = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]])
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    assert last_token_scores(values, mask).tolist() == [2.0, 8.0]


class ToyPreferences:
    """Responses are words; 'great' > 'fine' > 'poor' > 'awful': any pair of different words is a preference."""

    name = "toy"

    def load(self):
        from datamodules.preference import Preference

        words = ["great", "fine", "poor", "awful"]
        prompts = [f"Rate item {i}." for i in range(40)]
        return [Preference(f"toy-{i}-{a}{b}", x, " " + words[a], " " + words[b])
                for i, x in enumerate(prompts) for a in range(4) for b in range(a + 1, 4)]

    def score(self, prompt, response):
        return None


def test_the_reward_model_learns_the_gap_ordering_on_a_toy_set(tmp_path):
    from datamodules.pit import PITDataModule

    torch.manual_seed(0)
    data = PITDataModule(ToyPreferences(), stage="rm", log_dir=str(tmp_path), vocab_size=350, batch_size=8,
                         val_fraction=0.25)
    model = PITRewardModel(tiny=TinyLlama(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64), lr=3e-3,
                           export_dir=str(tmp_path / "rm"))
    trainer = Trainer(max_epochs=6, accelerator="cpu", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(model, datamodule=data)
    metrics = trainer.callback_metrics
    for name in ["wl>ww", "wl>ll", "wl>lw", "ww>lw", "ll>lw", "pairwise"]:
        assert metrics[f"rm/val_acc_{name}"] >= 0.95, {k: float(v) for k, v in metrics.items()}
    # the ordering of the three fold files and the exported model are in place for the other stages
    assert sorted(p.name for p in (tmp_path / "preferences").iterdir()) == ["rl.jsonl", "rm.jsonl", "sft.jsonl"]
    assert (tmp_path / "rm" / "config.json").is_file()
