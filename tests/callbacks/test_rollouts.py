"""Which training questions each iteration's rollouts use."""

from types import SimpleNamespace

import pytest

from callbacks.rollouts import OnlineRollouts
from tasks.base import Question


def datamodule(n):
    return SimpleNamespace(train_questions=lambda: [Question(f"q{i}", f"{i} =", str(i), "b", True) for i in range(n)])


def test_each_iteration_rolls_out_on_its_own_seeded_sample_in_dataset_order():
    data = datamodule(40)
    rollouts = OnlineRollouts(num_questions=10, seed=3)
    first, second = (rollouts.questions(data, k) for k in (1, 2))
    for sample in (first, second):
        ids = [int(q.id[1:]) for q in sample]
        assert len(ids) == len(set(ids)) == 10 and ids == sorted(ids)
    assert first != second  # not the first 10 again: the reference collects new data every iteration
    assert [q.id for q in first] != [f"q{i}" for i in range(10)]
    assert rollouts.questions(data, 1) == first  # the same after a resume (and on every rank)
    assert OnlineRollouts(num_questions=10, seed=4).questions(data, 1) != first  # the seed changes it
    # None, or more than there are: every question, in order
    assert [q.id for q in OnlineRollouts().questions(data, 1)] == [f"q{i}" for i in range(40)]
    assert len(OnlineRollouts(num_questions=50).questions(data, 1)) == 40


def test_no_questions_is_refused():
    with pytest.raises(ValueError, match="num_questions=0: roll out on at least 1 question"):
        OnlineRollouts(num_questions=0)
