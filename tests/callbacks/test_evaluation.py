"""The evaluation's numbers, checked against hand counts: accuracy per bucket and how well the model judges its own
first attempt."""

import pytest

from callbacks.evaluation import accuracy_by_group, self_check, token_budget_warnings
from datamodules.examples import updated_header
from tasks.base import Question, correct_feedback

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


def test_token_budget_warns_about_cut_off_answers_and_no_room_to_revise(ma_task, ma_tokenizer):
    questions = ma_task.questions("test")
    def n(text):
        return len(ma_tokenizer.encode(text, add_special_tokens=False))
    gold = [ma_task.gold_rationale(q).strip() for q in questions]
    lengths = [n(r) for r in gold]
    # attempt, then feedback ("correct", the shortest) and an updated answer as long as the attempt
    needed = [n(f"{r}\nFeedback: {correct_feedback(r)}\n{updated_header(ma_task.prompt(q))}\n{r}")
              for q, r in zip(questions, gold)]
    assert token_budget_warnings(ma_task, ma_tokenizer, questions, max(needed)) == []
    (revise,) = token_budget_warnings(ma_task, ma_tokenizer, questions, max(lengths))  # attempts fit, updates do not all
    assert f"for {sum(x > max(lengths) for x in needed)} of {len(questions)} test questions" in revise
    assert f"at least {max(needed)} fits them all" in revise
    cut, _ = token_budget_warnings(ma_task, ma_tokenizer, questions, min(lengths) - 1)
    seen = sum(q.seen for q in questions)
    assert cut.startswith(f"max_new_tokens={min(lengths) - 1}: {len(questions)} of {len(questions)} test questions "
                          f"({seen} seen) have gold answers longer than that (up to {max(lengths)} tokens)")
    assert cut.endswith("raise --model.init_args.max_new_tokens")
