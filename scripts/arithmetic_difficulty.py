"""How much arithmetic does each multistep-arithmetic bucket ask for? A ceiling for small models.

    python scripts/arithmetic_difficulty.py                   # the default config's test questions (seed 0)
    python scripts/arithmetic_difficulty.py --per-combo 200   # a larger sample of every bucket

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


def difficulty_rows(questions: list[Question], groups: list[str]) -> list[list[str]]:
    """One row per group (a bucket, or ``seen`` / ``unseen``): questions, then % with 0, 1, 2 multi-digit factors."""
    rows = []
    for group in groups:
        if group in ("seen", "unseen"):
            members = [q for q in questions if q.seen == (group == "seen")]
        else:
            members = [q for q in questions if q.bucket == group]
        if not members:
            continue
        hardest = [multi_digit_factors(question_expression(q)) for q in members]
        rows.append([group, str(len(members)), *(f"{100 * hardest.count(k) / len(members):.1f}" for k in (0, 1, 2))])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-combo", type=int, default=20, help="test questions per seen (length, depth) combination")
    parser.add_argument("--unseen-per-combo", type=int, default=2, help="test questions per unseen combination")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    task = MultistepArithmetic(num_train=0, num_test_per_combo=args.per_combo,
                               num_test_unseen_per_combo=args.unseen_per_combo, seed=args.seed)
    rows = difficulty_rows(task.questions("test"), [*task.buckets(), "seen", "unseen"])
    print("| bucket | questions | single-digit products only (%) | a multi-digit factor (%) | two multi-digit factors (%) |")
    print("| --- | --- | --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
