"""ft SI demo's teacher-written wrong attempts: one slip in the last step, carried into a wrong final answer, which
the scripted feedback then locates (so the demo has an error to fix)."""

import random

import pytest

from tasks import MultistepArithmetic, WordSorting
from tasks.base import split_steps
from tasks.multiple_choice import DateUnderstanding


@pytest.mark.parametrize("task", [MultistepArithmetic(num_train=30), WordSorting()], ids=["ma", "ws"])
def test_a_slip_changes_the_answer_and_the_feedback_finds_it_in_the_last_step(task):
    rng = random.Random(0)
    for question in task.questions("train")[:30]:
        gold = task.gold_rationale(question)
        attempt = task.slipped_rationale(question, rng)
        assert attempt.splitlines()[:-2] == gold.splitlines()[:-2]  # everything before the last step is untouched
        assert task.extract_answer(attempt) not in (None, question.answer) and not task.is_correct(question, attempt)
        feedback = task.verify(question, attempt)
        assert not feedback.correct and feedback.step == split_steps(attempt)[-2][0]


def test_other_tasks_say_the_baseline_is_not_supported():
    with pytest.raises(NotImplementedError, match="ft SI demo arm"):
        DateUnderstanding.slipped_rationale(object.__new__(DateUnderstanding), None, random.Random(0))
