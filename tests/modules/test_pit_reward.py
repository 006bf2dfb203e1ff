"""PIT's gap reward model: the five-term loss by hand, the last-token read-out, and learning an ordering."""

import math

import pytest
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



@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")  # steps called without a trainer
def test_the_ll_and_lw_rows_enter_the_loss_as_no_change_and_degradation(tmp_path):
    """Data rows to loss columns: a scripted reward model reads each row's text (y_w = "It is 2i.", y_l = "No.")."""
    from datamodules.pit import PITDataModule
    from datamodules.preference import HHRLHF
    from tests.datamodules.test_pit_datamodule import hh_file

    data = PITDataModule(HHRLHF(source=hh_file(tmp_path / "hh.jsonl")), stage="rm", log_dir=str(tmp_path / "run"),
                         vocab_size=400, batch_size=4)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))

    def scripted(degradation: float):
        def forward(input_ids, attention_mask):
            gaps = []
            for ids, mask in zip(input_ids, attention_mask):
                text = data.tokenizer.decode(ids[mask > 0], skip_special_tokens=True)
                ref = text.split("### Original response:\n")[1].split("\n\n")[0].strip()
                resp = text.split("### Improved response:\n")[1].strip()
                good_ref, good_resp = ref.startswith("It is"), resp.startswith("It is")
                # improvement 1, degradation as given, no change 0 for y_w and .5 for y_l (tells (w,w) from (l,l))
                gaps.append(1.0 if good_resp > good_ref else degradation if good_resp < good_ref
                            else 0.0 if good_ref else 0.5)
            return torch.tensor(gaps)
        return forward

    model = PITRewardModel()
    model.forward = scripted(degradation=-1.0)  # a reward model that has learned the order
    assert model._rewards(batch).tolist() == [[1.0, 0.0, 0.5, -1.0]] * 4  # (r_wl, r_ww, r_ll, r_lw) per pair
    # -[log σ(1 - 0) + log σ(1 - .5) + log σ(1 + 1) + log σ(0 + 1) + log σ(.5 + 1)]
    #   = .313262 + .474077 + .126928 + .313262 + .201413
    assert math.isclose(model.training_step(batch, 0).item(), 0.313262 + 0.474077 + 0.126928 + 0.313262 + 0.201413,
                        abs_tol=1e-5)

    model.forward = scripted(degradation=2.0)  # one that scores degrading y_w into y_l above no change
    # r = (1, 0, .5, 2): -[log σ(1) + log σ(.5) + log σ(1 - 2) + log σ(0 - 2) + log σ(.5 - 2)]
    #   = .313262 + .474077 + 1.313262 + 2.126928 + 1.701413
    assert math.isclose(model.training_step(batch, 0).item(), 0.313262 + 0.474077 + 1.313262 + 2.126928 + 1.701413,
                        abs_tol=1e-5)
    model.validation_step(batch, 0)
    accuracy = {name: model.val_metrics[name.replace(">", "_gt_")].compute().item() for name in ORDERINGS}
    assert accuracy == {"wl>ww": 1.0, "wl>ll": 1.0, "wl>lw": 0.0, "ww>lw": 0.0, "ll>lw": 0.0}


def test_a_lora_reward_model_trains_adapters_and_the_score_head_and_its_export_scores_the_same(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    from datamodules.pit import PITDataModule, scored_ids
    from datamodules.tripost import collate
    from feedback.reward_model import RewardModelJudge
    from modules.pit_reward import gap_rewards
    from modules.pretrained import LoRA, unwrapped

    torch.manual_seed(0)
    first = PITDataModule(ToyPreferences(), stage="rm", log_dir=str(tmp_path), vocab_size=350, batch_size=8)
    first.setup("fit")  # trains the task tokenizer; a "pretrained" causal LM is saved with it
    tok = first.tokenizer
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, pad_token_id=tok.pad_token_id,
                         eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
    LlamaForCausalLM(config).save_pretrained(tmp_path / "backbone")
    tok.save_pretrained(tmp_path / "backbone")
    data = PITDataModule(ToyPreferences(), stage="rm", log_dir=str(tmp_path), tokenizer=str(tmp_path / "backbone"),
                         vocab_size=350, batch_size=8)
    model = PITRewardModel(model=str(tmp_path / "backbone"), lora=LoRA(r=4, alpha=8, dropout=0.0), lr=1e-2,
                           export_dir=str(tmp_path / "rm"))
    trainer = Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(model, datamodule=data)
    trained = {name for name, p in model.named_parameters() if p.requires_grad}
    assert {name for name in trained if "lora_" not in name} == {"model.base_model.model.score.modules_to_save.default.weight"}
    frozen = LlamaForCausalLM.from_pretrained(tmp_path / "backbone").model.layers[0].self_attn.q_proj.weight
    assert torch.equal(unwrapped(model.model).model.layers[0].self_attn.q_proj.base_layer.weight, frozen)

    items = [("Rate item 3.", " poor", " great"), ("Rate item 7.", " fine", " awful")]
    batch = collate([{"input_ids": torch.tensor(scored_ids(tok, *item)), "loss_weights": torch.zeros(len(scored_ids(tok, *item)))}
                     for item in items], tok.pad_token_id)
    with torch.no_grad():
        in_training = gap_rewards(unwrapped(model.model), batch["input_ids"], batch["attention_mask"]).tolist()
    exported = RewardModelJudge(str(tmp_path / "rm"), device="cpu").score(items)  # plain transformers, merged
    assert exported == pytest.approx(in_training, abs=1e-5) and in_training[0] != in_training[1]
