"""Time of one PIT PPO iteration, split into generation / scoring / optimisation, printed as fractions.

    python bench/pit_ppo_iteration.py                         # tiny random policy and reward model, 256 prompts
    python bench/pit_ppo_iteration.py --prompts 512 --hidden-size 256 --num-layers 6 --max-new-tokens 48

A real ``Trainer`` runs ``--epochs`` RL epochs of ``modules.pit.PITPolicy`` with ``callbacks.rollouts.OnlineRollouts``
and the reward-model judge on the synthetic task. Per iteration: generation (the policy samples improvements of
the references, KV cache), scoring (the reward model scores rollouts and references), optimisation (old/reference
log-probs, values and GAE over the buffer, then ``ppo_epochs`` passes of minibatch updates). The first iteration's
rollouts happen before training (in ``on_train_start``); the figures are the means over the measured epochs.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, as cli.py does

import torch  # noqa: E402
from lightning.pytorch import Callback, Trainer  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification  # noqa: E402

from callbacks.rollouts import OnlineRollouts  # noqa: E402
from datamodules.pit import PITDataModule  # noqa: E402
from datamodules.preference import ConstrainedLists  # noqa: E402
from feedback.reward_model import RewardModelJudge  # noqa: E402
from modules.pit import PITPolicy  # noqa: E402


class Times(Callback):
    """Each epoch's optimisation time (buffer scoring + PPO updates, rollouts excluded)."""

    def __init__(self) -> None:
        self.optimisation: list[float] = []

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.optimisation.append(pl_module.optimisation_s)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--prompts", type=int, default=256, help="RL prompts rolled out per iteration")
    p.add_argument("--epochs", type=int, default=3, help="RL epochs (PPO iterations) measured")
    p.add_argument("--hidden-size", type=int, default=128)
    p.add_argument("--num-layers", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--ppo-epochs", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")

    with tempfile.TemporaryDirectory() as tmp:
        data = PITDataModule(ConstrainedLists(num_pairs=3 * args.prompts), stage="rl", log_dir=tmp, vocab_size=400,
                             batch_size=args.batch_size, ppo_epochs=args.ppo_epochs)
        data.setup("fit")
        tok = data.tokenizer
        h, n = args.hidden_size, args.num_layers
        config = dict(vocab_size=len(tok), hidden_size=h, intermediate_size=4 * h, num_hidden_layers=n,
                      num_attention_heads=max(1, h // 32), max_position_embeddings=512, pad_token_id=tok.pad_token_id,
                      eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
        torch.manual_seed(0)
        LlamaForCausalLM(LlamaConfig(**config)).save_pretrained(f"{tmp}/policy")
        LlamaForSequenceClassification(LlamaConfig(**config, num_labels=1)).save_pretrained(f"{tmp}/rm")
        tok.save_pretrained(f"{tmp}/rm")
        policy = PITPolicy(stage="rl", model=f"{tmp}/policy", round1_epochs=args.epochs,
                           max_new_tokens=args.max_new_tokens, export_dir=f"{tmp}/out")
        times, rollouts = Times(), OnlineRollouts(teacher=RewardModelJudge(f"{tmp}/rm"), temperature=1.0)
        trainer = Trainer(max_epochs=args.epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                          enable_progress_bar=False, enable_model_summary=False, reload_dataloaders_every_n_epochs=1,
                          num_sanity_val_steps=0, limit_val_batches=0, default_root_dir=tmp,
                          callbacks=[times, rollouts])
        trainer.fit(policy, datamodule=data)

    rounds = rollouts.history  # one rollout round per iteration (the first before training)
    parts = {"generation": sum(r["time/generation_s"] for r in rounds) / len(rounds),
             "scoring": sum(r["time/scoring_s"] for r in rounds) / len(rounds),
             "optimisation": sum(times.optimisation) / len(times.optimisation)}
    total = sum(parts.values())
    print(f"PIT PPO iteration: {args.prompts} prompts, tiny Llama h{h} x{n}, {args.max_new_tokens} new tokens, "
          f"ppo_epochs {args.ppo_epochs}, {args.threads} threads; mean of {len(rounds)} iterations")
    print(f"{'part':>13} {'seconds':>8} {'fraction':>8}")
    for name, seconds in parts.items():
        print(f"{name:>13} {seconds:>8.2f} {seconds / total:>8.1%}")
    print(f"{'total':>13} {total:>8.2f}")


if __name__ == "__main__":
    main()
