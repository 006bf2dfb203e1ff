"""PIT's reward model R_PIT(x, y, y_ref): how much better ``y`` is than the reference ``y_ref`` (reference pit.md §2).

A transformer with a scalar head reads ``T(x, y_ref) + y`` (``datamodules.pit.pit_prompt``) and outputs the gap
reward at the last token. From each preference triple (x, y_w, y_l) it scores four orderings,
``r_wl = R(x, y_w, y_l)``, ``r_ww``, ``r_ll``, ``r_lw``, and learns the order

    r_wl  >  r_ww ≈ r_ll  >  r_lw

with the five pairwise log-sigmoid terms of the paper's Eq. 2 (no term between r_ww and r_ll, which should tie)::

    L = -[ log σ(r_wl - r_ww) + log σ(r_wl - r_ll) + log σ(r_wl - r_lw) + log σ(r_ww - r_lw) + log σ(r_ll - r_lw) ]

averaged over pairs. Validation reports how often each of the five orderings holds, and the plain pairwise accuracy
r_wl > r_lw (torchmetrics).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from torchmetrics import MeanMetric
from transformers import AutoModelForSequenceClassification, LlamaForSequenceClassification, PreTrainedModel

from modules.common import TinyLlama, export_at_fit_end, tiny_llama_config, warmup_cosine_schedule
from modules.distributed import shard_fsdp2
from modules.finite import check_losses, check_weights_before_saving
from modules.pretrained import Dtype, LoRA, add_lora, load_pretrained, unwrapped

#: the five ordered comparisons (better, worse) of the gap loss, by index into (r_wl, r_ww, r_ll, r_lw)
ORDERINGS = {"wl>ww": (0, 1), "wl>ll": (0, 2), "wl>lw": (0, 3), "ww>lw": (1, 3), "ll>lw": (2, 3)}


def pit_reward_loss(rewards: torch.Tensor) -> torch.Tensor:
    """The five-term gap loss; ``rewards``: [B, 4] as (r_wl, r_ww, r_ll, r_lw)."""
    terms = [F.logsigmoid(rewards[:, a] - rewards[:, b]) for a, b in ORDERINGS.values()]
    return -torch.stack(terms, dim=1).sum(dim=1).mean()


def last_token_scores(values: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """``values`` [B, T] read at each row's last real token (right padding) -> [B]."""
    last = attention_mask.sum(dim=1) - 1
    return values.gather(1, last.unsqueeze(1)).squeeze(1)


def gap_rewards(model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """A sequence classifier's scalar read at each right-padded row's last real token, whatever the pad id: [B]."""
    hidden = model.base_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    return last_token_scores(model.score(hidden).squeeze(-1), attention_mask)


class PITRewardModel(LightningModule):
    """R_PIT: a causal-LM backbone with a scalar head over ``T(x, y_ref) + y``, trained with the gap loss.

    Args:
        model: a Hugging Face model (hub name or folder) for the backbone, loaded as a sequence classifier with
            one label (a new score head); None builds ``tiny`` from scratch with the DataModule's tokenizer.
        tiny: dimensions of the from-scratch backbone.
        dtype, attn_implementation, model_kwargs: ``from_pretrained`` options (see ``modules.tripost.TriPosTModule``).
        lora: train LoRA adapters (PEFT) on the backbone and the whole score head, instead of every weight.
        lr: peak learning rate (the paper: 3e-4).
        weight_decay: AdamW weight decay.
        warmup_ratio: share of training spent warming the learning rate up, then cosine decay to 10%.
        export_dir: where ``on_fit_end`` saves the model and tokenizer (``save_pretrained``); default
            ``{trainer.log_dir}/reward_model``. The PIT policy's RL stage loads it from there.
    """

    def __init__(self, model: str | None = None, tiny: TinyLlama | None = None, dtype: Dtype = "float32",
                 attn_implementation: str | None = None, model_kwargs: dict | None = None, lora: LoRA | None = None,
                 lr: float = 3e-4,
                 weight_decay: float = 0.0, warmup_ratio: float = 0.1, export_dir: str | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.tiny = tiny or TinyLlama()
        self.lora = lora  # the typed object (LightningCLI turns hparams into plain dicts)
        self.model = None
        self.val_metrics = torch.nn.ModuleDict({name.replace(">", "_gt_"): MeanMetric() for name in [*ORDERINGS, "pairwise"]})

    def configure_model(self) -> None:
        if self.model is not None:
            return
        tok = self.trainer.datamodule.tokenizer
        if self.hparams.model is None:
            self.model = LlamaForSequenceClassification(tiny_llama_config(self.tiny, tok, num_labels=1))
        else:
            self.model = load_pretrained(AutoModelForSequenceClassification, self.hparams.model,
                                         flag="--model.init_args.model", dtype=self.hparams.dtype,
                                         attn_implementation=self.hparams.attn_implementation,
                                         model_kwargs=self.hparams.model_kwargs,
                                         device=self.trainer.strategy.root_device, num_labels=1)
            self.model.config.pad_token_id = tok.pad_token_id
        if self.lora is not None:  # SEQ_CLS: PEFT trains the new score head whole
            self.model = add_lora(self.model, self.lora, "SEQ_CLS", "--model.init_args.lora")
        classifier = unwrapped(self.model)
        shard_fsdp2(self, [classifier.base_model, classifier.score])  # gap_rewards calls these two, not the model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Gap rewards [B] of right-padded sequences [B, T] (read at the last real token, whatever the pad id)."""
        return gap_rewards(unwrapped(self.model), input_ids, attention_mask)

    def _rewards(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self(batch["input_ids"], batch["attention_mask"]).view(-1, 4)  # [B, 4]: wl, ww, ll, lw

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        rewards = self._rewards(batch)
        loss = pit_reward_loss(rewards)
        check_losses(self, "PIT reward model", batch_idx, loss=loss)
        pairs = len(rewards)
        self.log("rm/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=pairs)
        self.log("rm/train_pairwise_acc", (rewards[:, 0] > rewards[:, 3]).float().mean(), on_epoch=True, batch_size=pairs)
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        rewards = self._rewards(batch)
        self.log("rm/val_loss", pit_reward_loss(rewards), batch_size=len(rewards))
        for name, (a, b) in ORDERINGS.items():
            self.val_metrics[name.replace(">", "_gt_")].update((rewards[:, a] > rewards[:, b]).float())
        self.val_metrics["pairwise"].update((rewards[:, 0] > rewards[:, 3]).float())

    def on_validation_epoch_end(self) -> None:
        for name, metric in self.val_metrics.items():
            self.log(f"rm/val_acc_{name.replace('_gt_', '>')}", metric.compute())
            metric.reset()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        check_weights_before_saving(self, "PIT reward model")

    def configure_optimizers(self):
        trained = [p for p in self.model.parameters() if p.requires_grad]  # LoRA: adapters and the score head
        optimizer = torch.optim.AdamW(trained, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        return warmup_cosine_schedule(optimizer, self.trainer.estimated_stepping_batches, self.hparams.warmup_ratio)

    def on_fit_end(self) -> None:
        export_at_fit_end(self.trainer, self.model, self.trainer.datamodule.tokenizer, self.hparams.export_dir,
                          "reward_model")
