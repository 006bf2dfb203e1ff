"""Time of one PIT PPO iteration, split into generation / scoring / optimisation, printed as fractions.

    python bench/pit_ppo_iteration.py                         # tiny random policy and reward model, 256 prompts
    python bench/pit_ppo_iteration.py --prompts 512 --hidden-size 256 --num-layers 6 --max-new-tokens 48
    python bench/pit_ppo_iteration.py --compare-lora 16 --hidden-size 512 --num-layers 8   # memory: LoRA vs full
    python bench/pit_ppo_iteration.py --compare-advantage 4   # PPO (GAE) vs RLOO vs GRPO, 4 samples per prompt

A real ``Trainer`` runs ``--epochs`` RL epochs of ``modules.pit.PITPolicy`` with ``callbacks.rollouts.OnlineRollouts``
and the reward-model judge on the synthetic task. Per iteration: generation (the policy samples improvements of
the references, KV cache), scoring (the reward model scores rollouts and references), optimisation (old/reference
log-probs over the buffer, values and GAE or RLOO/GRPO's group advantages, then ``ppo_epochs`` passes of
minibatch updates). The first iteration's
rollouts happen before training (in ``on_train_start``); the figures are the means over the measured epochs.

``--compare-lora R`` runs the same RL stage twice, each in a process of its own (full fine-tuning, then LoRA of rank
R), and prints their parameters held (policy, value head and, for full fine-tuning, the frozen KL reference copy),
parameters trained and peak RSS (at the end of training, and after the fit-end export) side by side: with LoRA the
reference is the policy with its adapters disabled.

``--compare-advantage K`` runs the RL stage three times, a process each, at the same number of samples per
iteration (``--prompts``): PPO with GAE and a value head on ``--prompts`` prompts sampled once, then RLOO and GRPO
(critic-free) on ``--prompts / K`` prompts sampled K times; it prints the generation / scoring / optimisation split
of each side by side, and each part's ratio to PPO's.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import subprocess
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
from modules.pretrained import LoRA  # noqa: E402


class Times(Callback):
    """Each epoch's optimisation time (buffer scoring + PPO updates, rollouts excluded)."""

    def __init__(self) -> None:
        self.optimisation: list[float] = []

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.optimisation.append(pl_module.optimisation_s)

    def on_train_end(self, trainer, pl_module) -> None:
        self.training_peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB; before export


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
    p.add_argument("--lora-r", type=int, default=0, help="> 0: the policy trains LoRA adapters of this rank")
    p.add_argument("--advantage", choices=["gae", "rloo", "grpo"], default="gae")
    p.add_argument("--samples-per-prompt", type=int, default=1, help="k: the RL fold's first prompts/k prompts, "
                   "each sampled k times (the same number of samples)")
    p.add_argument("--compare-advantage", type=int, default=0, metavar="K",
                   help="PPO (gae) vs RLOO vs GRPO with K samples per prompt, a process each")
    p.add_argument("--compare-lora", type=int, default=0, metavar="R", help="full vs LoRA rank R, a process each")
    p.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # a child of --compare-lora
    args = p.parse_args()
    if args.compare_lora:
        return compare_lora(args)
    if args.compare_advantage:
        return compare_advantage(args)
    torch.set_num_threads(args.threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")

    with tempfile.TemporaryDirectory() as tmp:
        k = args.samples_per_prompt
        if args.prompts % k:
            raise SystemExit(f"--prompts={args.prompts} is not a multiple of --samples-per-prompt={k}")
        data = PITDataModule(ConstrainedLists(num_pairs=3 * args.prompts), stage="rl", log_dir=tmp, vocab_size=400,
                             batch_size=args.batch_size, ppo_epochs=args.ppo_epochs, num_rl_prompts=args.prompts // k)
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
        lora = LoRA(r=args.lora_r, alpha=2 * args.lora_r, dropout=0.0) if args.lora_r else None
        policy = PITPolicy(stage="rl", model=f"{tmp}/policy", lora=lora, round1_epochs=args.epochs,
                           max_new_tokens=args.max_new_tokens, advantage=args.advantage, samples_per_prompt=k,
                           export_dir=f"{tmp}/out")
        times, rollouts = Times(), OnlineRollouts(teacher=RewardModelJudge(f"{tmp}/rm"), temperature=1.0)
        trainer = Trainer(max_epochs=args.epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                          enable_progress_bar=False, enable_model_summary=False, reload_dataloaders_every_n_epochs=1,
                          num_sanity_val_steps=0, limit_val_batches=0, default_root_dir=tmp,
                          callbacks=[times, rollouts])
        trainer.fit(policy, datamodule=data)
        held = [policy.model, *policy._frozen.values()]  # the frozen reference: full only
        held += [policy.value_head] if policy.value_head is not None else []  # PPO's critic only
        params = {"held": sum(p.numel() for m in held for p in m.parameters()),
                  "trained": sum(p.numel() for p in policy.parameters() if p.requires_grad)}

    rounds = rollouts.history  # one rollout round per iteration (the first before training)
    parts = {"generation": sum(r["time/generation_s"] for r in rounds) / len(rounds),
             "scoring": sum(r["time/scoring_s"] for r in rounds) / len(rounds),
             "optimisation": sum(times.optimisation) / len(times.optimisation)}
    total = sum(parts.values())
    if args.json:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
        print(json.dumps({**params, "training_rss_mb": times.training_peak_mb, "peak_rss_mb": peak_mb,
                          "iteration_s": total, "parts": parts, "rounds": len(rounds),
                          "tokens_per_sample": policy.generated_tokens / (len(rounds) * args.prompts)}))
        return
    print(f"PIT {args.advantage} iteration: {args.prompts // k} prompts x {k} samples, tiny Llama h{h} x{n}, "
          f"{args.max_new_tokens} new tokens, ppo_epochs {args.ppo_epochs}, {args.threads} threads; mean of "
          f"{len(rounds)} iterations")
    print(f"{'part':>13} {'seconds':>8} {'fraction':>8}")
    for name, seconds in parts.items():
        print(f"{name:>13} {seconds:>8.2f} {seconds / total:>8.1%}")
    print(f"{'total':>13} {total:>8.2f}")


def child(args, **overrides) -> dict:
    """This script with ``args`` (``overrides`` applied) in a fresh process; its ``--json`` line."""
    flags = {k: v for k, v in vars(args).items() if k not in ("compare_lora", "compare_advantage", "json")}
    flags.update(overrides)
    out = subprocess.run([sys.executable, __file__, *[f"--{k.replace('_', '-')}={v}" for k, v in flags.items()],
                          "--json"], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def compare_advantage(args) -> None:
    """PPO (GAE, value head) vs RLOO vs GRPO at the same number of samples per iteration, a process each."""
    k = args.compare_advantage
    if k < 2 or args.prompts % k:
        raise SystemExit(f"--compare-advantage={k}: K >= 2 dividing --prompts={args.prompts}")
    arms = {"PPO (gae)": ("gae", 1), f"RLOO k={k}": ("rloo", k), f"GRPO k={k}": ("grpo", k)}
    rows = {name: child(args, advantage=adv, samples_per_prompt=kk) for name, (adv, kk) in arms.items()}
    print(f"PIT RL iteration, {args.prompts} samples each: PPO on {args.prompts} prompts x 1, RLOO/GRPO on "
          f"{args.prompts // k} prompts x {k}; tiny Llama h{args.hidden_size} x{args.num_layers}, "
          f"{args.max_new_tokens} new tokens, batch {args.batch_size}, ppo_epochs {args.ppo_epochs}, "
          f"{args.threads} threads; mean of {rows['PPO (gae)']['rounds']} iterations, seconds (ratio to PPO)")
    parts = ["generation", "scoring", "optimisation"]
    print(f"{'':>11}" + "".join(f"{p:>18}" for p in parts + ["total"]) + f"{'params held':>13}{'tokens/sample':>15}")
    base = rows["PPO (gae)"]
    for name, r in rows.items():
        cells = [(r["parts"][p], base["parts"][p]) for p in parts] + [(r["iteration_s"], base["iteration_s"])]
        print(f"{name:>11}" + "".join(f"{s:>11.2f} ({s / b:>4.2f})" for s, b in cells) + f"{r['held'] / 1e6:>12.2f}M"
              f"{r['tokens_per_sample']:>15.1f}")


def compare_lora(args) -> None:
    """The RL stage with full fine-tuning and with LoRA, each in a fresh process (peak RSS is per process)."""
    rows = {name: child(args, lora_r=rank) for name, rank in (("full", 0), (f"LoRA r={args.compare_lora}",
                                                                              args.compare_lora))}
    print(f"PIT RL stage: tiny Llama h{args.hidden_size} x{args.num_layers}, {args.prompts} prompts, "
          f"{args.epochs} iterations, {args.threads} threads; one process each")
    print(f"{'':>10} {'params held':>12} {'trained':>12} {'RSS training':>13} {'RSS w/ export':>14} {'iteration s':>12}")
    for name, r in rows.items():
        print(f"{name:>10} {r['held'] / 1e6:>11.2f}M {r['trained'] / 1e6:>11.3f}M {r['training_rss_mb']:>10.0f} MB "
              f"{r['peak_rss_mb']:>11.0f} MB {r['iteration_s']:>12.2f}")
    full, lora = rows.values()
    print(f"LoRA / full: params held {lora['held'] / full['held']:.2f}, peak RSS in training "
          f"{lora['training_rss_mb'] / full['training_rss_mb']:.2f}, with the export {lora['peak_rss_mb'] / full['peak_rss_mb']:.2f}")


if __name__ == "__main__":
    main()
