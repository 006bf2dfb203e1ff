"""PIT's feedback: a trained gap reward model R_PIT(x, y, y_ref), exported by ``modules.pit_reward``, as a judge.

The rollout callback hands it (x, y_ref, y) triples; it returns the gap reward of each, read at the last token of
``T(x, y_ref) + y`` exactly as in training. Frozen, batched, no gradients.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import AutoModelForSequenceClassification

from datamodules.pit import scored_ids
from datamodules.tokenizer import load_tokenizer
from datamodules.tripost import collate
from feedback.base import Judge
from modules.pit_reward import gap_rewards


class RewardModelJudge(Judge):
    """Scores improvements with a PIT reward model folder (model + tokenizer, as ``PITRewardModel`` exports it).

    Args:
        path: the exported reward model (e.g. ``runs/pit-cl/reward_model``).
        batch_size: sequences scored per forward pass.
        device: ``cpu``, ``cuda`` ...; ``auto`` picks CUDA when available.
    """

    name = "reward_model"

    def __init__(self, path: str, batch_size: int = 64, device: str = "auto") -> None:
        self.path, self.batch_size = path, batch_size
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        self._model = self._tokenizer = None
        self.scored = 0

    def usage(self) -> dict[str, float]:
        return {"scored": float(self.scored)}

    def reset_usage(self) -> None:
        self.scored = 0

    def _load(self) -> None:
        self._tokenizer = load_tokenizer(self.path)
        self._model = AutoModelForSequenceClassification.from_pretrained(self.path).to(self.device).eval()
        self._model.requires_grad_(False)

    @torch.no_grad()
    def score(self, items: Sequence[tuple[str, str, str]]) -> list[float]:
        """Gap rewards of ``(x, y_ref, y)`` triples: how much better ``y`` is than ``y_ref``."""
        if self._model is None:
            self._load()
        tok = self._tokenizer
        sequences = [scored_ids(tok, x, y_ref, y) for x, y_ref, y in items]
        scores: list[float] = []
        for start in range(0, len(sequences), self.batch_size):
            chunk = [{"input_ids": torch.tensor(s), "loss_weights": torch.zeros(len(s))}
                     for s in sequences[start : start + self.batch_size]]
            batch = collate(chunk, tok.pad_token_id)
            ids, mask = batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device)
            scores += gap_rewards(self._model, ids, mask).float().tolist()
        self.scored += len(items)
        return scores
