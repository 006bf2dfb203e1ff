"""The evaluation's numbers, checked against hand counts: accuracy per bucket and how well the model judges its own
first attempt."""

import pytest

from callbacks.evaluation import accuracy_by_group, self_check
from tasks.base import Question

CORRECT = "Step (1) to step (3) are correct. The final response is also correct."
ERROR = 'Step (1) is correct. In step (2) the part "7" is incorrect. This is because 3 + 5 is 8.'


def test_self_check_rates_count_each_verdict_against_the_truth():
    correct = [True, True, False, False, False, True]
    feedbacks = [CORRECT, ERROR, CORRECT, CORRECT, ERROR, None]
    assert self_check(correct, feedbacks) == pytest.approx({
        "self_check/no_feedback": 100 / 6,  # the sixth attempt has no feedback after it
        "self_check/wrong_called_correct": 200 / 3,  # 2 of the 3 wrong attempts called correct
        "self_check/right_called_wrong": 50.0,  # 1 of the 2 judged correct attempts called wrong
    })


def test_self_check_leaves_out_rates_with_nothing_to_count():
    assert self_check([False, False], [None, None]) == {"self_check/no_feedback": 100.0}
    assert self_check([False], [CORRECT]) == {"self_check/no_feedback": 0.0, "self_check/wrong_called_correct": 100.0}


def test_accuracy_by_group_per_bucket_seen_unseen_and_total():
    def question(i, bucket, seen):
        return Question(id=str(i), question="", answer="", bucket=bucket, seen=seen)

    questions = [question(0, "a", True), question(1, "a", True), question(2, "b", True), question(3, "c", False)]
    assert accuracy_by_group(None, questions, [True, False, True, False], "before") == pytest.approx({
        "before/a": 50.0, "before/seen": 200 / 3, "before/total": 50.0, "before/b": 100.0, "before/c": 0.0,
        "before/unseen": 0.0})
