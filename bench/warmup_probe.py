"""How fast does the tiny model learn the gold rationales? A probe of the ft-rationale warm-up's settings.

    python bench/warmup_probe.py          # the default config's warm-up: h128, 4 layers, 8 heads, batch 4, lr 3e-3
    python bench/warmup_probe.py --num-train 2000 --epochs 5 --batch-size 8 --num-heads 4 --every 250   # the old one

Trains exactly as stage 0 of ``TriPosTModule`` does (the DataModule's gold examples and length-grouped batches,
``bench.plain_loop``'s step: ``weighted_lm_loss``, AdamW with its parameter groups, clip 1.0; warm-up + cosine
over the run), without Lightning, and every ``--every`` steps prints a continuous measure of progress on the 80
seen test questions of the default arithmetic task: the gold rationale's tokens the model gets wrong under
teacher forcing (argmax != gold), per question, and the questions with none wrong (in all and per seen bucket).
A question with none wrong is one greedy decoding answers exactly as the gold rationale, so the second figure is
greedy exact-match accuracy; the first moves long before it does, which is what makes settings comparable in
minutes. Single runs vary a lot with --seed (the loss sits on a plateau near 0.6-0.7 and leaves it at a step that
varies by hundreds between seeds): compare settings over seeds.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, as cli.py does

import torch
from transformers import LlamaForCausalLM

from bench.plain_loop import train_step
from datamodules.tripost import TriPosTDataModule, collate, length_grouped_batches
from modules.common import TinyLlama, tiny_llama_config
from modules.tripost import adamw, stage_lr_factor
from tasks import MultistepArithmetic


def teacher_forced_errors(model, test: list[dict], pad_id: int) -> list[int]:
    """The gold answer tokens the model gets wrong under teacher forcing, per test example."""
    model.eval()
    wrong_per_question = []
    with torch.no_grad():
        for start in range(0, len(test), 20):
            batch = collate(test[start : start + 20], pad_id)
            predicted = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].argmax(-1)
            learned = batch["loss_weights"][:, 1:] > 0  # the answer and EOS: what the loss trains
            wrong_per_question += ((predicted != batch["input_ids"][:, 1:]) & learned).sum(1).tolist()
    model.train()
    return wrong_per_question


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--num-layers", type=int, default=4)
    parser.add_argument("--num-heads", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--num-train", type=int, default=4000, help="generated training questions")
    parser.add_argument("--epochs", type=float, default=2, help="the warm-up's length; the schedule spans it")
    parser.add_argument("--every", type=int, default=250, help="steps between measurements")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    task = MultistepArithmetic(num_train=args.num_train, num_test_per_combo=20, num_test_unseen_per_combo=2, seed=0)
    data = TriPosTDataModule(task=task, vocab_size=1000, batch_size=args.batch_size, log_dir=tempfile.mkdtemp())
    data.setup("fit")
    pad_id = data.tokenizer.pad_token_id
    train = data.encoded_training_examples()
    lengths = [len(e["input_ids"]) for e in train]
    seen = [q for q in task.questions("test") if q.seen]
    test = [data.encode(data.gold(q, with_feedback=False)) for q in seen]
    buckets = sorted({q.bucket for q in seen})

    tiny = TinyLlama(args.hidden_size, args.num_layers, args.num_heads, 4 * args.hidden_size)
    model = LlamaForCausalLM(tiny_llama_config(tiny, data.tokenizer))
    optimizer = adamw(model, lr=args.lr, weight_decay=0.01)  # TriPosTModule's optimiser and default decay
    total = int(math.ceil(len(train) / args.batch_size) * args.epochs)

    # TriPosTModule's stage schedule with its defaults: warm-up 10%, cosine to 10% of the peak
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: stage_lr_factor(min(step / total, 1.0), 0.1, 0.1))
    print(f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, {len(train)} gold examples, "
          f"{total} steps of batch {args.batch_size}, lr {args.lr}", flush=True)
    start, step, epoch = time.perf_counter(), 0, 0
    while step < total:
        for indices in length_grouped_batches(lengths, args.batch_size, args.seed + epoch):
            loss = train_step(model, optimizer, collate([train[i] for i in indices], pad_id))
            scheduler.step()
            step += 1
            if step % args.every == 0 or step == total:
                wrong = teacher_forced_errors(model, test, pad_id)
                exact = {b: sum(w == 0 for w, q in zip(wrong, seen) if q.bucket == b) for b in buckets}
                print(f"step {step:5d}  {time.perf_counter() - start:6.0f} s  loss {loss.item():.3f}  "
                      f"wrong tokens/question {sum(wrong) / len(wrong):6.2f}  exact {sum(exact.values())}/{len(test)} "
                      f"({', '.join(f'{b} {n}' for b, n in exact.items())})", flush=True)
            if step == total:
                break
        epoch += 1


if __name__ == "__main__":
    main()
