"""How much arithmetic does each multistep-arithmetic bucket ask for? A ceiling for small models.

    python scripts/arithmetic_difficulty.py                   # the default config's test questions (seed 0)
    python scripts/arithmetic_difficulty.py --per-combo 200   # a larger sample of every bucket
    python scripts/arithmetic_difficulty.py --model runs/tripost-ma-tiny/hf_model   # and a model's right answers

Every step of the gold rationale must be exact for an answer to count, and a from-scratch model learns the
single-digit products (``-6 * 9``) long before products with a multi-digit factor (``-14 * 7``, ``-21 * 648``),
which it must do in one step. The table gives, per bucket, the share of questions whose hardest product has 0, 1
or 2 factors of two or more digits (``tasks.multistep_arithmetic.multi_digit_factors``): a model that only
masters single-digit products can answer at most the first column.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, as cli.py does

from tasks import MultistepArithmetic
from tasks.base import Question
from tasks.multistep_arithmetic import multi_digit_factors, question_expression


def difficulty_rows(questions: list[Question], groups: list[str], correct: list[bool] | None = None) -> list[list[str]]:
    """One row per group (a bucket, or ``seen`` / ``unseen``): questions, then % with 0, 1, 2 multi-digit factors;
    with ``correct`` (one flag per question), each share is followed by how many of its questions were answered
    right."""
    hardest = [multi_digit_factors(question_expression(q)) for q in questions]
    rows = []
    for group in groups:
        if group in ("seen", "unseen"):
            members = [i for i, q in enumerate(questions) if q.seen == (group == "seen")]
        else:
            members = [i for i, q in enumerate(questions) if q.bucket == group]
        if not members:
            continue
        cells = []
        for k in (0, 1, 2):
            in_class = [i for i in members if hardest[i] == k]
            cells.append(f"{100 * len(in_class) / len(members):.1f}")
            if correct is not None:
                cells[-1] += f" ({sum(correct[i] for i in in_class)} right)"
        rows.append([group, str(len(members)), *cells])
    return rows


def greedy_correct(task: MultistepArithmetic, questions: list[Question], model_dir: str, max_new_tokens: int) -> list[bool]:
    """Whether a trained model's greedy first attempt (an exported ``hf_model/`` folder) answers each question,
    prompted and parsed as ``TriPosTModule.self_improve`` does (the evaluation's "before" column)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from modules.generation import generate
    from modules.tripost import parse_generation

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    prompts = [tokenizer.encode(task.prompt(q), add_special_tokens=True) for q in questions]
    completions = generate(model, prompts, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                           max_new_tokens=max_new_tokens, progress="greedy attempts")
    attempts = [parse_generation(tokenizer.decode(c.tokens, skip_special_tokens=True))[0] for c in completions]
    return [task.is_correct(q, attempt) for q, attempt in zip(questions, attempts)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-combo", type=int, default=20, help="test questions per seen (length, depth) combination")
    parser.add_argument("--unseen-per-combo", type=int, default=2, help="test questions per unseen combination")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", help="an exported hf_model/ folder: also count its right greedy answers per class")
    parser.add_argument("--max-new-tokens", type=int, default=700)
    args = parser.parse_args()
    if args.model and not (Path(args.model) / "config.json").is_file():
        parser.error(f"--model {args.model}: no config.json there; pass the hf_model/ folder a fit exported "
                     "(runs/<run>/hf_model)")
    task = MultistepArithmetic(num_train=0, num_test_per_combo=args.per_combo,
                               num_test_unseen_per_combo=args.unseen_per_combo, seed=args.seed)
    questions = task.questions("test")
    correct = greedy_correct(task, questions, args.model, args.max_new_tokens) if args.model else None
    rows = difficulty_rows(questions, [*task.buckets(), "seen", "unseen"], correct)
    print("| bucket | questions | single-digit products only (%) | a multi-digit factor (%) | two multi-digit factors (%) |")
    print("| --- | --- | --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
