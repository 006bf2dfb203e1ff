"""TriPosT throughput beside plain PyTorch / plain Hugging Face ``generate`` on the same model and batches.

    python bench/tripost_throughput.py                        # tiny Llama of the default config, CPU
    python bench/tripost_throughput.py --hidden-size 256 --num-layers 8 --repeats 5
    python bench/tripost_throughput.py --lora-r 16               # LoRA: ours vs a plain PEFT loop

Training: a real ``lightning.Trainer`` fitting ``TriPosTModule`` ("ours") against a minimal loop with the same
AdamW param groups, ``weighted_lm_loss``, clip 1.0 ("plain"); same initial weights, same length-grouped gold
batches; tokens/s counts non-pad tokens over the steps after ``--warmup`` warm-up steps. With ``--lora-r``, both
train the same PEFT LoRA adapters (all linear layers, same seed) on the frozen model: ours through
``TriPosTModule``'s ``lora``, plain as the PEFT documentation's loop (AdamW over the trainable parameters). Rollouts:
``modules.generation.generate`` ("ours") against one ``model.generate`` call on the same left-padded batch
("plain"), and ``TriPosTModule.self_improve`` (1 round) on the same prompts; tokens/s counts generated tokens up
to and including EOS. Runs alternate ours / plain (A B A B); the figure is the ratio of the medians.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, as cli.py does
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from lightning.pytorch import Callback, LightningDataModule, Trainer  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from transformers import LlamaForCausalLM  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from bench.plain_loop import train_step  # noqa: E402
from datamodules.tripost import TriPosTDataModule, collate, length_grouped_batches  # noqa: E402
from modules.common import tiny_llama_config  # noqa: E402
from modules.generation import generate, left_pad  # noqa: E402
from modules.pretrained import LoRA, add_lora  # noqa: E402
from modules.tripost import TinyLlama, TriPosTModule, adamw  # noqa: E402
from tasks import MultistepArithmetic  # noqa: E402

TARGET = 0.9


class FixedBatches(LightningDataModule):
    """Hands the Trainer a fixed list of collated batches; exposes the tokenizer as TriPosTDataModule does."""

    def __init__(self, batches: list[dict[str, torch.Tensor]], tokenizer) -> None:
        super().__init__()
        self.batches, self.tokenizer, self.tokenizer_path = batches, tokenizer, None

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.batches, batch_size=None, shuffle=False)


class StepClock(Callback):
    """Wall-clock stamp at the start of every batch and at the end of the epoch (step i = stamps[i+1] - stamps[i])."""

    def __init__(self) -> None:
        self.stamps: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.stamps.append(time.perf_counter())

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.stamps.append(time.perf_counter())


def tokens_per_s(stamps: list[float], tokens: list[int], warmup: int) -> float:
    return sum(tokens[warmup:]) / (stamps[len(tokens)] - stamps[warmup])


def build(args):
    """Task, tokenizer, the fixed training batches, the tiny Llama config and its initial weights, rollout prompts."""
    task = MultistepArithmetic(num_train=args.num_train, num_test_per_combo=1, seed=args.seed)
    questions = task.questions("train")
    dm = TriPosTDataModule(task, log_dir=args.tmp, batch_size=args.batch_size, seed=args.seed)
    dm.setup("fit")  # trains the sentencepiece tokenizer exactly as a run does (train_sentencepiece, fixed pieces)
    tok = dm.tokenizer
    encoded = [dm.encode(e) for e in dm.training_examples()]  # iteration 0: gold rationales
    groups = length_grouped_batches([len(e["input_ids"]) for e in encoded], args.batch_size, args.seed)
    fixed = [collate([encoded[i] for i in g], tok.pad_token_id) for g in groups]
    batches = [fixed[i % len(fixed)] for i in range(args.steps)]
    heads = max(1, args.hidden_size // 32)
    tiny = TinyLlama(hidden_size=args.hidden_size, num_layers=args.num_layers, num_heads=heads,
                     intermediate_size=4 * args.hidden_size)
    config = tiny_llama_config(tiny, tok)
    torch.manual_seed(args.seed)
    init = LlamaForCausalLM(config).state_dict()
    prompts = [tok.encode(task.prompt(q), add_special_tokens=True) for q in questions[: args.rollout_prompts]]
    return task, questions[: args.rollout_prompts], tok, batches, config, init, prompts, tiny


def fresh_model(config, init, lora_r: int = 0):
    """The model with the initial weights; with ``lora_r``, wrapped in seeded LoRA adapters (the same every call)."""
    model = LlamaForCausalLM(config)
    model.load_state_dict(init)
    if lora_r:
        torch.manual_seed(1)
        model = add_lora(model, LoRA(r=lora_r, alpha=2 * lora_r, dropout=0.0), "CAUSAL_LM", "--lora-r")
    return model


def run_ours(args, tok, batches, config, init, tiny) -> tuple[float, TriPosTModule]:
    lora = LoRA(r=args.lora_r, alpha=2 * args.lora_r, dropout=0.0) if args.lora_r else None
    module = TriPosTModule(tiny=tiny, lora=lora, warmup_epochs=1, epochs_per_iteration=1,
                           max_new_tokens=args.max_new_tokens, max_continuations=0,  # one call per round, as plain
                           generation_batch_size=args.rollout_prompts,
                           export_dir=str(Path(args.tmp) / "export"))
    module.model = fresh_model(config, init, args.lora_r)  # as plain's; configure_model keeps a model already set
    clock = StepClock()
    trainer = Trainer(accelerator="cpu", devices=1, max_steps=args.steps, max_epochs=module.hparams.warmup_epochs,
                      reload_dataloaders_every_n_epochs=1, gradient_clip_val=1.0, logger=False, callbacks=[clock],
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      num_sanity_val_steps=0, default_root_dir=args.tmp)
    trainer.fit(module, datamodule=FixedBatches(batches, tok))
    tokens = [int(b["attention_mask"].sum()) for b in batches]
    return tokens_per_s(clock.stamps, tokens, args.warmup), module


def run_plain(args, batches, config, init) -> float:
    model = fresh_model(config, init, args.lora_r)
    model.train()
    optimizer = adamw(model, lr=3e-3, weight_decay=0.01)  # the module's optimiser and defaults
    stamps, tokens = [], []
    for batch in batches:
        stamps.append(time.perf_counter())
        train_step(model, optimizer, batch)
        tokens.append(int(batch["attention_mask"].sum()))
    stamps.append(time.perf_counter())
    return tokens_per_s(stamps, tokens, args.warmup)


def count_generated(rows: list[list[int]], eos: int) -> int:
    return sum(row.index(eos) + 1 if eos in row else len(row) for row in rows)


def rollout_ours(args, model, tok, prompts) -> tuple[float, int]:
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    out = generate(model, prompts, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                   max_new_tokens=args.max_new_tokens, temperature=args.temperature, batch_size=args.rollout_prompts)
    seconds = time.perf_counter() - start
    n = sum(len(c.tokens) + c.stopped for c in out)
    return n / seconds, n


@torch.no_grad()
def rollout_plain(args, model, tok, prompts) -> tuple[float, int]:
    torch.manual_seed(args.seed)
    model.eval()
    start = time.perf_counter()
    input_ids, attention_mask = left_pad(prompts, tok.pad_token_id, model.device)
    sampling = dict(do_sample=True, temperature=args.temperature, top_k=0, top_p=1.0) if args.temperature > 0 else \
        dict(do_sample=False)
    output = model.generate(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=args.max_new_tokens,
                            pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, **sampling)
    seconds = time.perf_counter() - start
    model.train()
    n = count_generated(output[:, input_ids.shape[1]:].tolist(), tok.eos_token_id)
    return n / seconds, n


def rollout_self_improve(args, module, task, questions, tokens: int) -> float:
    """One round of the test-time loop = one generate call on the same prompts, order and seed as rollout_ours,
    so it generates the same tokens; ``tokens`` is that count (self_improve returns text, not token ids)."""
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    module.self_improve(task, questions, max_rounds=1, temperature=args.temperature)
    return tokens / (time.perf_counter() - start)


def report(title: str, columns: list[str], rows: list[list[float]]) -> list[float]:
    print(f"\n{title}\n  {'repeat':>6}" + "".join(f"{c:>16}" for c in columns))
    for i, row in enumerate(rows):
        print(f"  {i + 1:>6}" + "".join(f"{v:>16,.0f}" for v in row))
    medians = [statistics.median(col) for col in zip(*rows)]
    print(f"  {'median':>6}" + "".join(f"{v:>16,.0f}" for v in medians))
    return medians


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=12, help="training steps per run, warm-up included")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps at the start of each training run")
    p.add_argument("--repeats", type=int, default=3, help="ours/plain pairs per figure")
    p.add_argument("--hidden-size", type=int, default=128)
    p.add_argument("--num-layers", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--num-train", type=int, default=256, help="training questions (gold examples) to batch")
    p.add_argument("--rollout-prompts", type=int, default=64, help="prompts, generated as one batch")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0, help="0: greedy; > 0: pure sampling, seeded")
    p.add_argument("--lora-r", type=int, default=0, help="> 0: train LoRA adapters of this rank (ours vs plain PEFT)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    assert args.steps > args.warmup >= 0, "--steps must exceed --warmup"
    torch.set_num_threads(args.threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", ".*(does not have many workers|LeafSpec).*")
    hf_logging.disable_progress_bar()  # on_fit_end's export (save_pretrained) draws one

    with tempfile.TemporaryDirectory() as tmp:
        args.tmp = tmp
        task, questions, tok, batches, config, init, prompts, tiny = build(args)
        real = sum(int(b["attention_mask"].sum()) for b in batches)
        pad = 1 - real / sum(b["attention_mask"].numel() for b in batches)
        model = fresh_model(config, init, args.lora_r)
        params = sum(p.numel() for p in model.parameters())
        trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
        print(f"model: hidden {args.hidden_size}, {args.num_layers} layers, vocab {len(tok)}, "
              f"{params / 1e6:.2f}M params ({trained / 1e6:.3f}M trained{', LoRA r=%d' % args.lora_r if args.lora_r else ''}); "
              f"threads {args.threads}")
        print(f"training: {args.steps} steps ({args.warmup} untimed) of batch {args.batch_size}, "
              f"mean length {statistics.mean(b['input_ids'].shape[1] for b in batches):.0f}, {pad:.1%} padding")

        rows, module = [], None
        for _ in range(args.repeats):
            ours, module = run_ours(args, tok, batches, config, init, tiny)
            rows.append([ours, run_plain(args, batches, config, init)])
        train = report("training tokens/s (non-pad)", ["ours (Trainer)", "plain loop"], rows)
        assert torch.get_num_threads() == args.threads, "the Trainer changed torch's thread count"

        model = module.model  # the last trained "ours" model: the same weights for every rollout below
        rollout_ours(argparse.Namespace(**{**vars(args), "max_new_tokens": 4}), model, tok, prompts)  # warm-up
        rows, counts = [], set()
        for _ in range(args.repeats):
            ours, n_ours = rollout_ours(args, model, tok, prompts)
            plain, n_plain = rollout_plain(args, model, tok, prompts)
            rows.append([ours, plain, rollout_self_improve(args, module, task, questions, n_ours)])
            counts.add((n_ours, n_plain))
        gen = report(f"rollout tokens/s ({len(prompts)} prompts, max_new_tokens {args.max_new_tokens}, "
                     f"temperature {args.temperature})", ["ours generate", "plain generate", "self_improve"], rows)
        print(f"  generated tokens (ours, plain): {sorted(counts)}")

    print(f"\ntraining ratio (ours/plain): {train[0] / train[1]:.2f}  target >= {TARGET}")
    print(f"rollout ratio (ours/plain): {gen[0] / gen[1]:.2f}  target >= {TARGET}")
    print(f"self_improve rollout ratio (self_improve/plain): {gen[2] / gen[1]:.2f}  target >= {TARGET}")


if __name__ == "__main__":
    main()
