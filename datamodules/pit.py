"""The DataModule PIT trains from: preference folds as interaction logs, tokenised for each PIT stage.

PIT's inputs are one template (reference pit.md §7), shared by the policy and the reward model so the reward model
scores exactly what the policy writes::

    T(x, y_ref) = "{x}\\n\\n### Original response:\\n{y_ref}\\n\\n### Improved response:\\n"

* ``rm``: each pair (x, y_w, y_l) gives the four sequences ``T(x,y_l)+y_w``, ``T(x,y_w)+y_w``, ``T(x,y_l)+y_l``,
  ``T(x,y_w)+y_l`` (the orderings (w,l), (w,w), (l,l), (l,w) of the gap loss), from the reward-model fold;
* ``sft``: ``T(x, y_l) + y_w + EOS``, loss on the response and EOS only, from the SFT fold;
* ``policy_sft``: ``x + "\n" + y_w + EOS``: the plain policy M_P ("original policy"), whose samples are the
  references of PIT's second RL round, from the SFT fold;
* ``rl``: the current rollout buffer (``use_iteration``), ``T(x, y_ref) + y`` with the response mask, the
  judge's gap reward, the rollout temperature and the prompt's group (its k samples, for RLOO/GRPO);
  ``ppo_epochs`` passes per epoch, each a fresh seeded permutation of the buffer cut into minibatches
  (``ppo_minibatches``).

The folds are written once, as interaction-log shards ``{log_dir}/preferences/{sft,rm,rl}.jsonl``, and read back
from there: the logs are the contract, and a rerun uses the very same split.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from datamodules.interaction_log import Episode, read_shard, write_shard
from datamodules.preference import FOLDS, PreferenceSource, three_folds
from datamodules.tokenizer import encode_sections, load_tokenizer, task_tokenizer
from datamodules.tripost import collate, length_grouped_batches

TEMPLATE = "{x}\n\n### Original response:\n{y_ref}\n\n### Improved response:\n"
#: the four reward-model inputs of a pair, as (response, reference)
RM_ORDERINGS = (("w", "l"), ("w", "w"), ("l", "l"), ("l", "w"))


def pit_prompt(x: str, y_ref: str) -> str:
    """``T(x, y_ref)``: what the PIT policy continues and what the reward model reads before the response."""
    return TEMPLATE.format(x=x, y_ref=y_ref.strip())


def policy_prompt(x: str) -> str:
    """What the plain ("original") policy M_P continues: the request alone."""
    return x + "\n"


def scored_ids(tokenizer: PreTrainedTokenizerBase, x: str, y_ref: str, y: str) -> list[int]:
    """``T(x, y_ref) + y`` as the reward model reads it, tokenised as one text (no EOS: the score is read at the last
    response token)."""
    return tokenizer.encode(pit_prompt(x, y_ref) + y, add_special_tokens=True)


def pair_of(episode: Episode) -> tuple[str, str, str]:
    """``(x, y_w, y_l)`` of a preference episode (turns: reference = y_l, response = y_w)."""
    roles = [t.role for t in episode.turns]
    if roles != ["reference", "response"]:
        raise ValueError(f"episode {episode.id}: a preference episode has turns reference, response; got {roles}")
    return episode.prompt, episode.turns[1].text, episode.turns[0].text


class PITDataModule(LightningDataModule):
    """Preference folds for PIT's stages.

    Args:
        preferences: the source (``datamodules.preference.ConstrainedLists`` offline, ``HHRLHF``, ``TLDR``).
        stage: which PIT stage this run trains: ``rm`` (reward model), ``sft`` (policy SFT) or ``rl``.
        log_dir: folder of the fold shards and the trained tokenizer; default ``{trainer.log_dir}``. Point the stages
            of one experiment at the same folder so they share folds and tokenizer.
        tokenizer: a Hugging Face tokenizer path; None trains a sentencepiece tokenizer on the preference text.
        vocab_size: vocabulary size of the trained tokenizer.
        batch_size: pairs (rm), examples (sft) or rollouts (rl) per step.
        val_fraction: share of the stage's fold held out for validation.
        max_length: longer sequences are dropped (counted).
        ppo_epochs: rl: optimisation passes over each rollout buffer per epoch, each cut into new minibatches (a
            seeded permutation per pass, as TRL and OpenRLHF); the policy scores every buffer row once per epoch.
        num_rl_prompts: rl: roll out on the first N prompts of the RL fold only (None: all). With the policy's
            ``samples_per_prompt`` k the buffer holds N * k responses.
        seed: seeds the folds, the held-out split and batch order.
    """

    def __init__(self, preferences: PreferenceSource, stage: Literal["rm", "sft", "policy_sft", "rl"] = "sft",
                 log_dir: str | None = None, tokenizer: str | None = None, vocab_size: int = 1000,
                 batch_size: int = 16, val_fraction: float = 0.1, max_length: int = 512, ppo_epochs: int = 2,
                 num_rl_prompts: int | None = None, seed: int = 0) -> None:
        super().__init__()
        self.preferences, self.stage, self.ppo_epochs, self.num_rl_prompts = preferences, stage, ppo_epochs, num_rl_prompts
        self.iteration = 0
        self._resolved_run_dir: Path | None = None
        self._log_dir, self.tokenizer_path, self.vocab_size = log_dir, tokenizer, vocab_size
        self.batch_size, self.val_fraction, self.max_length, self.seed = batch_size, val_fraction, max_length, seed
        self.tokenizer: PreTrainedTokenizerBase | None = None
        self.folds: dict[str, list[Episode]] = {}

    @property
    def log_dir(self) -> Path:
        if self._log_dir is None:
            self._log_dir = str(self._run_dir)
        return Path(self._log_dir)

    @property
    def rollout_dir(self) -> Path:
        """Where the rollout callback writes the RL buffers: this run's own folder (the folds are shared)."""
        return self._run_dir / "rollouts"

    @property
    def _run_dir(self) -> Path:
        if self._resolved_run_dir is None:  # resolved once: trainer.log_dir broadcasts, so not from rank 0 alone later
            root = self.trainer.log_dir if self.trainer is not None else None
            self._resolved_run_dir = Path(root) if root else Path(self._log_dir or ".")
        return self._resolved_run_dir

    def use_iteration(self, iteration: int) -> None:
        """Train on buffer ``iteration`` from the next (re)loaded dataloader on."""
        self.iteration = iteration

    def state_dict(self) -> dict:
        return {"iteration": self.iteration}

    def load_state_dict(self, state_dict: dict) -> None:
        self.iteration = state_dict["iteration"]

    def rl_fold(self) -> list[Episode]:
        return self.folds["rl"][: self.num_rl_prompts]

    def setup(self, stage: str) -> None:
        self._run_dir  # resolve the folders on every rank now (see _run_dir)
        if not self.folds:
            self.folds = self._folds()
        if self.tokenizer is None:
            self.tokenizer = self._build_tokenizer()

    def _folds(self) -> dict[str, list[Episode]]:
        folder = self.log_dir / "preferences"
        paths = {fold: folder / f"{fold}.jsonl" for fold in FOLDS}
        if not all(p.exists() for p in paths.values()):
            if self.trainer is None or self.trainer.is_global_zero:
                folds = three_folds(self.preferences.load(), self.seed)
                for fold, path in paths.items():
                    if not path.exists():
                        write_shard(path, [p.episode(self.preferences.name) for p in folds[fold]])
            if self.trainer is not None:
                self.trainer.strategy.barrier("preference folds")
        return {fold: read_shard(path) for fold, path in paths.items()}

    def _build_tokenizer(self) -> PreTrainedTokenizerBase:
        if self.tokenizer_path is not None:
            return load_tokenizer(self.tokenizer_path)
        corpus = lambda: [pit_prompt(x, l) + w for x, w, l in map(pair_of, self.folds["sft"] + self.folds["rm"])]  # noqa: E731
        return task_tokenizer(self.log_dir / "tokenizer", corpus, self.vocab_size, [TEMPLATE.split("{y_ref}")[1]],
                              True, self.trainer)

    # ---- examples ------------------------------------------------------------------------------------------------

    def split(self, fold: str) -> tuple[list[Episode], list[Episode]]:
        """``(train, validation)`` episodes of ``fold``, the validation share seeded."""
        episodes = list(self.folds[fold])
        random.Random(f"val/{self.seed}").shuffle(episodes)
        n_val = int(len(episodes) * self.val_fraction)
        return episodes[n_val:], episodes[:n_val]

    def encode_scored(self, x: str, y_ref: str, y: str) -> dict[str, torch.Tensor]:
        ids = scored_ids(self.tokenizer, x, y_ref, y)
        return {"input_ids": torch.tensor(ids), "loss_weights": torch.ones(len(ids))}

    def encode_sft(self, prompt: str, response: str) -> dict[str, torch.Tensor]:
        """``T(x, y_ref) + y + EOS`` tokenised as one text, with loss weights 1 on the response and EOS, 0 on the
        prompt."""
        ids, owners = encode_sections(self.tokenizer, [prompt, response])
        return {"input_ids": torch.tensor(ids + [self.tokenizer.eos_token_id]),
                "loss_weights": torch.tensor([float(owner) for owner in owners] + [1.0])}

    def rm_items(self, episodes: Sequence[Episode]) -> list[list[dict[str, torch.Tensor]]]:
        """Per pair, the four encoded orderings (w,l), (w,w), (l,l), (l,w)."""
        items = []
        for x, w, l in map(pair_of, episodes):
            text = {"w": w, "l": l}
            items.append([self.encode_scored(x, text[ref], text[resp]) for resp, ref in RM_ORDERINGS])
        return items

    # ---- loaders -------------------------------------------------------------------------------------------------

    def train_dataloader(self) -> DataLoader:
        return self._loader(train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(train=False)

    def encode_rollout(self, episode: Episode) -> dict[str, torch.Tensor]:
        """A buffer episode (reference, response; scores gap_reward, stopped, temperature) as ids, response mask
        [T-1], score and the temperature that sampled it (1 for logs without one). A response the policy sampled
        keeps its own token ids (EOS included when it stopped), after the prompt's ids as generation encoded it;
        text from elsewhere is tokenised with the prompt as one text."""
        x, y_ref, response = episode.prompt, episode.turns[0].text, episode.turns[1]
        if response.tokens is not None:
            prompt = self.tokenizer.encode(pit_prompt(x, y_ref), add_special_tokens=True)
            ids, weights = prompt + list(response.tokens), [0.0] * len(prompt) + [1.0] * len(response.tokens)
        else:
            ids, owners = encode_sections(self.tokenizer, [pit_prompt(x, y_ref), response.text])
            weights = [float(owner) for owner in owners]
            if episode.scores.get("stopped", 1.0):
                ids, weights = ids + [self.tokenizer.eos_token_id], weights + [1.0]
        return {"input_ids": torch.tensor(ids), "loss_weights": torch.tensor(weights),
                "score": torch.tensor(float(episode.scores["gap_reward"])),
                "temperature": torch.tensor(float(episode.scores.get("temperature", 1.0)))}

    def _rl_loader(self) -> DataLoader:
        """``ppo_epochs`` passes over the buffer, minibatches rebuilt every pass (``ppo_minibatches``); the module
        scores each buffer row once at the epoch's start and looks rows up by ``rows``."""
        if self.iteration < 1:
            raise RuntimeError("no rollout buffer yet: the rl stage needs callbacks.rollouts.OnlineRollouts")
        episodes = read_shard(self.rollout_dir / f"iter_{self.iteration:03d}.jsonl")
        items = [self.encode_rollout(e) for e in episodes]
        for item, group in zip(items, prompt_groups(episodes)):
            item["group"] = torch.tensor(group)
        epoch = self.trainer.current_epoch if self.trainer is not None else 0
        batches = ppo_minibatches(items, self.batch_size, self.ppo_epochs, f"{self.seed}/{epoch}",
                                  self.tokenizer.pad_token_id)
        return DataLoader(batches, batch_size=None, shuffle=False)

    def _loader(self, train: bool) -> DataLoader:
        if self.stage == "rl":
            if not train:
                return DataLoader([])
            return self._rl_loader()
        fold = "sft" if self.stage == "policy_sft" else self.stage
        episodes = self.split(fold)[0 if train else 1]
        pad = self.tokenizer.pad_token_id
        if self.stage == "rm":
            groups = [g for g in self.rm_items(episodes) if max(len(i["input_ids"]) for i in g) <= self.max_length]
            lengths = [max(len(i["input_ids"]) for i in g) for g in groups]
            make = lambda batch: _rm_collate([groups[i] for i in batch], pad)  # noqa: E731
        else:
            prompt = (lambda x, l: policy_prompt(x)) if self.stage == "policy_sft" else pit_prompt
            groups = [self.encode_sft(prompt(x, l), w) for x, w, l in map(pair_of, episodes)]
            groups = [g for g in groups if len(g["input_ids"]) <= self.max_length]
            lengths = [len(g["input_ids"]) for g in groups]
            make = lambda batch: collate([groups[i] for i in batch], pad)  # noqa: E731
        dropped = len(episodes) - len(groups)
        if dropped:
            rank_zero_info(f"{self.stage}: dropped {dropped} of {len(episodes)} pairs longer than max_length={self.max_length}")
        epoch = self.trainer.current_epoch if self.trainer is not None and train else 0
        batches = length_grouped_batches(lengths, self.batch_size, self.seed + epoch)
        return DataLoader([make(b) for b in batches], batch_size=None, shuffle=False)


def prompt_groups(episodes: Sequence[Episode]) -> list[int]:
    """Per buffer episode, its prompt's group: the samples of one RL prompt share ``question_id`` (the RL fold
    episode they improve); an episode without one is a group of its own."""
    ids: dict[str | tuple[str, int], int] = {}
    return [ids.setdefault(e.question_id if e.question_id is not None else ("row", i), len(ids))
            for i, e in enumerate(episodes)]


def ppo_minibatches(items: Sequence[dict[str, torch.Tensor]], batch_size: int, passes: int, seed: str,
                    pad_id: int) -> list[dict[str, torch.Tensor]]:
    """``passes`` passes over the buffer ``items`` (encoded rows: ids, loss weights, score, temperature, group),
    each a new permutation seeded by ``seed`` and the pass, cut into minibatches of ``batch_size``: every row once
    per pass, a minibatch's members different in every pass (as TRL's and OpenRLHF's PPO). Plain permutations,
    not length grouping: sorting a buffer of at most one chunk by length would give the same minibatches every
    pass. Each minibatch: ``input_ids``, ``attention_mask``, ``response_mask`` [B, T-1] (position t predicts token
    t+1), the items' scalars stacked, ``rows`` [B] (buffer row of each member) and ``ppo_pass``."""
    batches = []
    for ppo_pass in range(passes):
        order = list(range(len(items)))
        random.Random(f"ppo/{seed}/{ppo_pass}").shuffle(order)  # str seeds: the same in every process and resume
        for start in range(0, len(order), batch_size):
            members = order[start : start + batch_size]
            batch = collate([items[i] for i in members], pad_id)
            batch["response_mask"] = batch.pop("loss_weights")[:, 1:]
            for key in ("score", "temperature", "group"):
                if key in items[members[0]]:
                    batch[key] = torch.stack([items[i][key] for i in members])
            batch["rows"] = torch.tensor(members)
            batch["ppo_pass"] = torch.tensor(ppo_pass)
            batches.append(batch)
    return batches


def _rm_collate(groups: Sequence[list[dict[str, torch.Tensor]]], pad_id: int) -> dict[str, torch.Tensor]:
    """``[4B, T]``: rows 4i..4i+3 are pair i's orderings (w,l), (w,w), (l,l), (l,w)."""
    return collate([item for group in groups for item in group], pad_id)
