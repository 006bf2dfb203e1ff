"""The arithmetic-difficulty table: shares per bucket and per seen/unseen group."""

from __future__ import annotations

from scripts.arithmetic_difficulty import difficulty_rows
from tasks import Question


def question(expression: str, bucket: str, seen: bool) -> Question:
    return Question(id=expression, question=f"{expression} =", answer="0", bucket=bucket, seen=seen)


def test_difficulty_rows_count_each_group() -> None:
    questions = [
        question("((1 + 2) - (3 * 4))", "l3-4d2", True),           # 0 multi-digit factors
        question("((7 * -2 * 3) * (5 * 5 - 1))", "l3-4d2", True),  # 2
        question("((7 * -2) * (3 + 4))", "l3-4d22", True),         # 1
        question("((7 * -2) * (3 + 4))", "l5-6d2", False),         # 1
    ]
    rows = difficulty_rows(questions, ["l3-4d2", "l3-4d22", "l3-4d222", "seen", "unseen"])
    assert rows == [
        ["l3-4d2", "2", "50.0", "0.0", "50.0"],
        ["l3-4d22", "1", "0.0", "100.0", "0.0"],
        ["seen", "3", "33.3", "33.3", "33.3"],   # l3-4d222 has no questions: no row
        ["unseen", "1", "0.0", "100.0", "0.0"],
    ]


def test_difficulty_rows_count_right_answers_per_class() -> None:
    questions = [
        question("((1 + 2) - (3 * 4))", "l3-4d2", True),
        question("((1 + 2) - (3 * 5))", "l3-4d2", True),
        question("((7 * -2 * 3) * (5 * 5 - 1))", "l3-4d2", True),
    ]
    rows = difficulty_rows(questions, ["l3-4d2"], correct=[True, False, True])
    assert rows == [["l3-4d2", "3", "66.7 (1 right)", "0.0 (0 right)", "33.3 (1 right)"]]
